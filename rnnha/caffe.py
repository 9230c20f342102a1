"""Convert the Caffe Model Zoo's VGG_CNN_M_1024.caffemodel to safetensors, without Caffe.

The file is a binary NetParameter; it is read with `protobuf` and message classes built here from the
few parts of caffe.proto that hold weights (caffe.proto's own field numbers; every other field is
skipped). conv1..conv5 are written in Caffe's BGR channel order, which
`rnnha.backbones.load_vgg_cnn_m_1024_weights` flips to RGB when it loads them.

    python -m rnnha.caffe VGG_CNN_M_1024.caffemodel weights/vgg_cnn_m_1024.safetensors
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import math
import sys
from pathlib import Path

import numpy as np

__all__ = [
    "CaffeError", "DEFAULT_OUTPUT", "FORMAT", "read_caffemodel", "convert_vgg_cnn_m_1024", "main",
]

DEFAULT_OUTPUT = "weights/vgg_cnn_m_1024.safetensors"  # the path the paper's VGG recipes name
FORMAT = "rnnha-vgg_cnn_m_1024/1"  # the `format` metadata of the files written here
SOURCE_URL = "http://www.robots.ox.ac.uk/~vgg/software/deep_eval/"
CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")

# V1LayerParameter.LayerType values (caffe.proto) whose blob shapes matter when they come in the
# legacy num/channels/height/width form.
_V1_CONVOLUTION, _V1_INNER_PRODUCT, _V1_DECONVOLUTION = 4, 14, 39
_V1_TYPES = {_V1_CONVOLUTION: "Convolution", _V1_INNER_PRODUCT: "InnerProduct",
             _V1_DECONVOLUTION: "Deconvolution"}


class CaffeError(ValueError):
    """A .caffemodel that is missing, unreadable or not the expected network; the message says what to do."""


# --- caffe.proto, the subset that holds weights -------------------------------------------------------

def _file_descriptor():
    """A FileDescriptorProto for NetParameter, LayerParameter, V1LayerParameter, BlobProto, BlobShape."""
    from google.protobuf import descriptor_pb2

    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="rnnha_caffe.proto", package="rnnha_caffe", syntax="proto2"
    )

    def message(name: str, *fields: tuple) -> None:
        msg = proto.message_type.add(name=name)
        for field_name, number, kind, repeated, *rest in fields:
            field = msg.field.add(
                name=field_name, number=number, type=kind,
                label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL,
            )
            if kind == F.TYPE_MESSAGE:
                field.type_name = f".rnnha_caffe.{rest[0]}"
            elif repeated:
                field.options.packed = True  # as caffe.proto; unpacked encodings parse as well

    message("BlobShape", ("dim", 1, F.TYPE_INT64, True))
    message(
        "BlobProto",
        ("num", 1, F.TYPE_INT32, False), ("channels", 2, F.TYPE_INT32, False),
        ("height", 3, F.TYPE_INT32, False), ("width", 4, F.TYPE_INT32, False),
        ("data", 5, F.TYPE_FLOAT, True), ("diff", 6, F.TYPE_FLOAT, True),
        ("shape", 7, F.TYPE_MESSAGE, False, "BlobShape"),
        ("double_data", 8, F.TYPE_DOUBLE, True), ("double_diff", 9, F.TYPE_DOUBLE, True),
    )
    message(
        "LayerParameter",
        ("name", 1, F.TYPE_STRING, False), ("type", 2, F.TYPE_STRING, False),
        ("blobs", 7, F.TYPE_MESSAGE, True, "BlobProto"),
    )
    message(  # `type` is caffe.proto's enum LayerType, read as its number
        "V1LayerParameter",
        ("name", 4, F.TYPE_STRING, False), ("type", 5, F.TYPE_INT32, False),
        ("blobs", 6, F.TYPE_MESSAGE, True, "BlobProto"),
    )
    message(
        "NetParameter",
        ("name", 1, F.TYPE_STRING, False),
        ("layers", 2, F.TYPE_MESSAGE, True, "V1LayerParameter"),
        ("layer", 100, F.TYPE_MESSAGE, True, "LayerParameter"),
    )
    return proto


@functools.lru_cache(maxsize=None)
def _net_parameter_class():
    try:
        from google.protobuf import message_factory
    except ImportError:
        raise CaffeError(
            "reading a .caffemodel needs the protobuf package: pip install 'protobuf>=4.21'"
        ) from None
    return message_factory.GetMessages([_file_descriptor()])["rnnha_caffe.NetParameter"]


# --- reading -----------------------------------------------------------------------------------------

def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise CaffeError(
            f"no file at {path}: download VGG_CNN_M_1024.caffemodel from the Caffe Model Zoo "
            f"({SOURCE_URL}) and give its path"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CaffeError(f"cannot read {path}: {exc.strerror or exc}; check its permissions") from exc


def _parse(path: Path, data: bytes):
    from google.protobuf.message import DecodeError

    net = _net_parameter_class()()
    try:
        net.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:  # RuntimeError: some backends' errors
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise CaffeError(
            f"{path} is not a Caffe model or is truncated ({reason}); give the binary .caffemodel "
            "(not the .prototxt), and download it again if it is cut short"
        ) from exc
    return net


def _layers(net) -> list[tuple[str, str, list]]:
    """(name, type, blobs) of every layer, old format (`layers`) then new (`layer`)."""
    found = [(layer.name, _V1_TYPES.get(layer.type, f"V1:{layer.type}"), list(layer.blobs))
             for layer in net.layers]
    found += [(layer.name, layer.type, list(layer.blobs)) for layer in net.layer]
    return found


def _shape_of(blob, layer_type: str, index: int, count: int) -> tuple[int, ...]:
    if blob.HasField("shape"):
        return tuple(int(d) for d in blob.shape.dim)
    if not any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        return (count,)  # no shape at all: a flat vector
    legacy = (blob.num, blob.channels, blob.height, blob.width)  # unset ones are 0, as in Caffe
    if index == 0 and layer_type in ("Convolution", "Deconvolution"):
        return legacy  # weights: out x in x kh x kw
    if index == 0 and layer_type == "InnerProduct" and legacy[:2] == (1, 1):
        return legacy[2:]  # 1 x 1 x out x in
    shape = list(legacy)
    while len(shape) > 1 and shape[0] == 1:  # biases: 1 x 1 x 1 x n
        shape.pop(0)
    return tuple(shape)


def _blob_array(path: Path, layer: str, layer_type: str, index: int, blob) -> np.ndarray:
    values = blob.data if len(blob.data) else blob.double_data
    shape = _shape_of(blob, layer_type, index, len(values))
    count = math.prod(shape)
    if len(values) != count:
        raise CaffeError(
            f"{path}: layer {layer} blob {index} holds {len(values)} values but its shape "
            f"{_fmt(shape)} needs {count}; the file is damaged, download it again"
        )
    return np.array(values, dtype=np.float32).reshape(shape)


def _fmt(shape) -> str:
    return "x".join(str(d) for d in shape) or "()"


def _read(path: Path, names=None) -> tuple[str, dict[str, list[np.ndarray]], list[str], str]:
    data = _read_bytes(path)
    net = _parse(path, data)
    layers = _layers(net)
    if not any(blobs for _, _, blobs in layers):
        raise CaffeError(
            f"{path} holds no layer with weights; give the binary .caffemodel (not the .prototxt "
            "or solver file)"
        )
    arrays: dict[str, list[np.ndarray]] = {}
    with_blobs = []
    for name, layer_type, blobs in layers:
        if not blobs:
            continue
        with_blobs.append(name)
        if names is None or name in names:
            arrays[name] = [_blob_array(path, name, layer_type, i, b) for i, b in enumerate(blobs)]
    return net.name, arrays, with_blobs, hashlib.sha256(data).hexdigest()


def read_caffemodel(path: str | Path, names=None) -> dict[str, list[np.ndarray]]:
    """Layer name -> its blobs as float32 numpy arrays, for the layers that have any.

    Shapes come from a blob's `shape.dim`, or else from the legacy num/channels/height/width:
    convolution weights stay 4-D, inner-product weights become out x in, biases 1-D. `names`, when
    given, limits which layers are converted to arrays (the others are still parsed).
    """
    _, arrays, _, _ = _read(Path(path), None if names is None else set(names))
    return arrays


# --- converting --------------------------------------------------------------------------------------

def _expected_shapes() -> dict[str, tuple[int, ...]]:
    from .backbones import VGGCNNM1024

    return {k: tuple(v.shape) for k, v in VGGCNNM1024().state_dict().items()}


def convert_vgg_cnn_m_1024(caffemodel: str | Path, output: str | Path = DEFAULT_OUTPUT) -> dict:
    """Write conv1..conv5 of VGG_CNN_M_1024.caffemodel to `output` (safetensors, BGR order as in Caffe).

    Returns {"output", "source", "net", "layers" (written), "skipped" (layers with weights that the
    backbone does not use: fc6, fc7, fc8), "sha256" (of the .caffemodel)}. Raises CaffeError.
    """
    import torch

    from .io import atomic_save_safetensors

    source, output = Path(caffemodel), Path(output)
    net_name, arrays, with_blobs, sha256 = _read(source, set(CONV_LAYERS))
    expected = _expected_shapes()
    missing = [name for name in CONV_LAYERS if name not in arrays]
    if missing:
        have = ", ".join(with_blobs) or "none"
        raise CaffeError(
            f"{source} has no layer {', '.join(missing)} with weights (layers with weights: {have}); "
            "give VGG_CNN_M_1024.caffemodel"
        )
    tensors = {}
    for name in CONV_LAYERS:
        blobs = arrays[name]
        if len(blobs) != 2:
            raise CaffeError(
                f"{source}: layer {name} has {len(blobs)} blobs, vgg_cnn_m_1024 needs 2 (weight and "
                "bias); give VGG_CNN_M_1024.caffemodel"
            )
        for param, array in zip(("weight", "bias"), blobs):
            key = f"{name}.{param}"
            if tuple(array.shape) != expected[key]:
                raise CaffeError(
                    f"{source}: layer {name} {param} is {_fmt(array.shape)}, vgg_cnn_m_1024 needs "
                    f"{_fmt(expected[key])}; give VGG_CNN_M_1024.caffemodel"
                )
            tensors[key] = torch.from_numpy(np.ascontiguousarray(array))
    metadata = {"format": FORMAT, "channel_order": "bgr", "source": source.name,
                "source_sha256": sha256, "net": net_name}
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_safetensors(tensors, output, metadata)
    except OSError as exc:
        raise CaffeError(f"cannot write {output}: {exc.strerror or exc}; choose another output path") from exc
    return {
        "output": str(output), "source": str(source), "net": net_name, "layers": list(CONV_LAYERS),
        "skipped": [name for name in with_blobs if name not in CONV_LAYERS], "sha256": sha256,
    }


# --- command line ------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rnnha.caffe",
        description=(
            "Convert conv1..conv5 of VGG_CNN_M_1024.caffemodel (Chatfield et al., BMVC 2014; the Caffe "
            f"Model Zoo's VGG_CNN_M_1024 entry, {SOURCE_URL}) to the safetensors file that the "
            "vgg_cnn_m_1024 backbone loads (a recipe's backbone_weights). Caffe is not needed."
        ),
    )
    parser.add_argument("caffemodel", help="path of VGG_CNN_M_1024.caffemodel")
    parser.add_argument("output", nargs="?", default=DEFAULT_OUTPUT,
                        help=f"safetensors file to write (default: {DEFAULT_OUTPUT})")
    args = parser.parse_args(argv)
    try:
        summary = convert_vgg_cnn_m_1024(args.caffemodel, args.output)
    except CaffeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    skipped = ", ".join(summary["skipped"]) or "nothing"
    print(f"wrote {summary['output']}: {', '.join(summary['layers'])} in BGR order from "
          f"{Path(summary['source']).name} (sha256 {summary['sha256'][:12]}); skipped {skipped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
