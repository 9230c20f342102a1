"""rnnha.caffe: VGG_CNN_M_1024.caffemodel -> safetensors, on files written here by a small protobuf wire
encoder that knows nothing of the converter's descriptor (the real file is 300 MB and not shipped)."""
from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnha.backbones import create_backbone, load_vgg_cnn_m_1024_weights
from rnnha.caffe import DEFAULT_OUTPUT, FORMAT, CaffeError, convert_vgg_cnn_m_1024, main, read_caffemodel

REPO = Path(__file__).resolve().parents[1]

CONV_SHAPES = {
    "conv1": (96, 3, 7, 7), "conv2": (256, 96, 5, 5), "conv3": (512, 256, 3, 3),
    "conv4": (512, 512, 3, 3), "conv5": (512, 512, 3, 3),
}
FC_SHAPES = {"fc6": (8, 18), "fc7": (4, 8)}  # made up: the converter skips them
# caffe.proto's V1LayerParameter.LayerType numbers
CONVOLUTION, DROPOUT, INNER_PRODUCT, LRN, POOLING, RELU = 4, 6, 14, 15, 17, 18


# --- protobuf wire format, by hand -------------------------------------------------------------------

def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def key(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def int_field(field: int, n: int) -> bytes:
    return key(field, 0) + varint(n)


def bytes_field(field: int, payload: bytes) -> bytes:
    return key(field, 2) + varint(len(payload)) + payload


def string_field(field: int, text: str) -> bytes:
    return bytes_field(field, text.encode())


def packed_floats(field: int, values: np.ndarray) -> bytes:
    flat = values.ravel().tolist()
    return bytes_field(field, struct.pack(f"<{len(flat)}f", *flat))


def unpacked_floats(field: int, values: np.ndarray) -> bytes:
    return b"".join(key(field, 5) + struct.pack("<f", v) for v in values.ravel().tolist())


def packed_doubles(field: int, values: np.ndarray) -> bytes:
    flat = values.ravel().tolist()
    return bytes_field(field, struct.pack(f"<{len(flat)}d", *flat))


def packed_varints(field: int, values) -> bytes:
    return bytes_field(field, b"".join(varint(v) for v in values))


def legacy_blob(array: np.ndarray, encoding: str = "packed") -> bytes:
    """BlobProto as the 2014 files have it: num/channels/height/width (1-padded on the left), data."""
    dims = (1,) * (4 - array.ndim) + array.shape
    header = b"".join(int_field(f, d) for f, d in zip((1, 2, 3, 4), dims))
    encode = {"packed": packed_floats, "unpacked": unpacked_floats, "double": packed_doubles}[encoding]
    return header + encode(8 if encoding == "double" else 5, array)


def shaped_blob(array: np.ndarray) -> bytes:
    """BlobProto as newer files have it: shape { dim ... } (field 7), data."""
    return bytes_field(7, packed_varints(1, array.shape)) + packed_floats(5, array)


def v1_layer(name: str, kind: int, blobs: list[bytes] = ()) -> bytes:
    """V1LayerParameter (NetParameter.layers, field 2) with fields the converter does not know: bottom
    (2), top (3), convolution_param (10), blobs_lr (7)."""
    body = string_field(2, "data") + string_field(4, name) + int_field(5, kind) + string_field(3, name)
    if kind == CONVOLUTION:
        body += bytes_field(10, int_field(1, 96) + int_field(4, 7) + int_field(6, 2))
        body += key(7, 5) + struct.pack("<f", 1.0)
    body += b"".join(bytes_field(6, blob) for blob in blobs)
    return bytes_field(2, body)


def new_layer(name: str, kind: str, blobs: list[bytes] = ()) -> bytes:
    """LayerParameter (NetParameter.layer, field 100) with bottom (3), top (4), param (6) and
    convolution_param (106) beside name (1), type (2) and blobs (7)."""
    body = string_field(1, name) + string_field(2, kind) + string_field(3, "data") + string_field(4, name)
    if kind == "Convolution":
        body += bytes_field(6, string_field(1, f"{name}_w")) + bytes_field(106, int_field(1, 512))
    body += b"".join(bytes_field(7, blob) for blob in blobs)
    return bytes_field(100, body)


def net(name: str, layers: list[bytes]) -> bytes:
    """NetParameter: name (1), the deploy input fields (3, 4) the converter does not know, layers."""
    header = string_field(1, name) + string_field(3, "data")
    header += b"".join(int_field(4, d) for d in (10, 3, 224, 224))
    return header + b"".join(layers)


# --- fixtures ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    """Random weights of the real conv shapes (BGR, as in Caffe) and small made-up fc layers."""
    rng = np.random.default_rng(0)
    weights = {}
    for name, shape in {**CONV_SHAPES, **FC_SHAPES}.items():
        fan_in = int(np.prod(shape[1:]))
        weights[f"{name}.weight"] = (rng.standard_normal(shape) * (2 / fan_in) ** 0.5).astype(np.float32)
        weights[f"{name}.bias"] = (rng.standard_normal(shape[0]) * 0.1).astype(np.float32)
    return weights


@pytest.fixture(scope="module")
def v1_layers(reference) -> dict[str, bytes]:
    """Encoded V1 layers, in the real file's order (data-less ones included)."""
    w = reference
    layers = {}
    for i, name in enumerate(CONV_SHAPES, 1):
        bias_encoding = "unpacked" if name == "conv3" else "packed"  # both encodings must parse
        layers[name] = v1_layer(name, CONVOLUTION, [legacy_blob(w[f"{name}.weight"]),
                                                    legacy_blob(w[f"{name}.bias"], bias_encoding)])
        layers[f"relu{i}"] = v1_layer(f"relu{i}", RELU)
        if i <= 2:
            layers[f"norm{i}"] = v1_layer(f"norm{i}", LRN)
        if i in (1, 2, 5):
            layers[f"pool{i}"] = v1_layer(f"pool{i}", POOLING)
    layers["fc6"] = v1_layer("fc6", INNER_PRODUCT, [legacy_blob(w["fc6.weight"]), legacy_blob(w["fc6.bias"])])
    layers["drop6"] = v1_layer("drop6", DROPOUT)
    layers["fc7"] = v1_layer("fc7", INNER_PRODUCT, [legacy_blob(w["fc7.weight"]),
                                                    legacy_blob(w["fc7.bias"], "double")])
    return layers


def write(path: Path, layers) -> Path:
    path.write_bytes(net("VGG_CNN_M_1024", list(layers)))
    return path


@pytest.fixture(scope="module")
def v1_model(tmp_path_factory, v1_layers) -> Path:
    return write(tmp_path_factory.mktemp("caffe") / "VGG_CNN_M_1024.caffemodel", v1_layers.values())


@pytest.fixture(scope="module")
def new_model(tmp_path_factory, reference) -> Path:
    layers = []
    for name in CONV_SHAPES:
        layers.append(new_layer(name, "Convolution", [shaped_blob(reference[f"{name}.weight"]),
                                                      shaped_blob(reference[f"{name}.bias"])]))
        layers.append(new_layer(name.replace("conv", "relu"), "ReLU"))
    for name in FC_SHAPES:
        layers.append(new_layer(name, "InnerProduct", [shaped_blob(reference[f"{name}.weight"]),
                                                       shaped_blob(reference[f"{name}.bias"])]))
    return write(tmp_path_factory.mktemp("caffe") / "new.caffemodel", layers)


def check_loads(out: Path, reference: dict[str, np.ndarray]) -> None:
    """The converted file loads into the backbone; it sees RGB where the Caffe weights saw BGR."""
    backbone = create_backbone("vgg_cnn_m_1024")
    load_vgg_cnn_m_1024_weights(backbone, out)
    state = backbone.body.state_dict()
    assert set(state) == {f"{n}.{p}" for n in CONV_SHAPES for p in ("weight", "bias")}
    for k, v in state.items():
        expected = torch.from_numpy(reference[k])
        if k == "conv1.weight":
            expected = expected.flip(1)  # BGR -> RGB
        assert torch.equal(v, expected), k

    caffe_net = create_backbone("vgg_cnn_m_1024")  # the Caffe weights as they are, fed BGR
    with torch.no_grad():
        for k, v in caffe_net.body.state_dict().items():
            v.copy_(torch.from_numpy(reference[k]))
        rgb = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0)) * 255 - 120
        f = backbone.eval()(rgb)
        assert f.shape == (1, 512, 6, 6)
        torch.testing.assert_close(f, caffe_net.eval()(rgb.flip(1)), rtol=1e-4, atol=1e-4)
        assert f.abs().max() > 0


# --- reading and converting --------------------------------------------------------------------------

def test_reads_v1_blobs_with_legacy_shapes(v1_model, reference):
    blobs = read_caffemodel(v1_model)
    assert list(blobs) == [*CONV_SHAPES, *FC_SHAPES]  # relu, norm, pool, drop hold no blobs
    for name in blobs:
        weight, bias = blobs[name]
        assert weight.dtype == bias.dtype == np.float32
        np.testing.assert_array_equal(weight, reference[f"{name}.weight"])  # conv 4-D, fc out x in
        np.testing.assert_array_equal(bias, reference[f"{name}.bias"])  # 1 x 1 x 1 x n -> n
    assert list(read_caffemodel(v1_model, names=["conv2"])) == ["conv2"]


def test_converts_v1_caffemodel(v1_model, reference, tmp_path):
    from safetensors import safe_open

    out = tmp_path / "weights" / "vggm.safetensors"  # the folder is created
    summary = convert_vgg_cnn_m_1024(v1_model, out)
    assert summary["output"] == str(out)
    assert summary["layers"] == list(CONV_SHAPES)
    assert summary["skipped"] == ["fc6", "fc7"]
    import hashlib

    assert summary["sha256"] == hashlib.sha256(v1_model.read_bytes()).hexdigest()
    with safe_open(str(out), "pt") as f:
        assert f.metadata() == {"format": FORMAT, "channel_order": "bgr", "source": v1_model.name,
                                "source_sha256": summary["sha256"], "net": "VGG_CNN_M_1024"}
        assert torch.equal(f.get_tensor("conv1.weight"), torch.from_numpy(reference["conv1.weight"]))
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary left behind
    check_loads(out, reference)


def test_converts_new_format_caffemodel(new_model, reference, tmp_path):
    blobs = read_caffemodel(new_model)
    assert blobs["fc6"][0].shape == FC_SHAPES["fc6"] and blobs["conv2"][1].shape == (256,)
    summary = convert_vgg_cnn_m_1024(new_model, tmp_path / "vggm.safetensors")
    assert summary["skipped"] == ["fc6", "fc7"]
    check_loads(tmp_path / "vggm.safetensors", reference)


def test_command_line_writes_the_default_path(v1_model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([str(v1_model)]) == 0
    out = capsys.readouterr()
    assert out.err == ""
    assert out.out.count("\n") == 1 and out.out.startswith(f"wrote {DEFAULT_OUTPUT}:")
    assert "skipped fc6, fc7" in out.out
    assert (tmp_path / DEFAULT_OUTPUT).is_file()


# --- errors ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bad_models(tmp_path_factory, v1_model, v1_layers) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    data = v1_model.read_bytes()
    (folder / "truncated.caffemodel").write_bytes(data[: len(data) // 2])
    (folder / "deploy.prototxt").write_text('name: "VGG_CNN_M_1024"\nlayers {\n  name: "conv1"\n}\n')
    (folder / "empty.caffemodel").write_bytes(b"")
    write(folder / "no_conv3.caffemodel", [v for k, v in v1_layers.items() if k != "conv3"])
    grouped = np.zeros((256, 48, 5, 5), np.float32)  # AlexNet-style two groups
    write(folder / "wrong_shape.caffemodel", [
        v1_layer(k, CONVOLUTION, [legacy_blob(grouped), legacy_blob(np.zeros(256, np.float32))])
        if k == "conv2" else v for k, v in v1_layers.items()
    ])
    short = b"".join(int_field(f, d) for f, d in zip((1, 2, 3, 4), (96, 3, 7, 7)))
    short += packed_floats(5, np.zeros(100, np.float32))  # 96x3x7x7 needs 14112
    write(folder / "short_blob.caffemodel", [
        v1_layer(k, CONVOLUTION, [short, legacy_blob(np.zeros(96, np.float32))]) if k == "conv1" else v
        for k, v in v1_layers.items()
    ])
    return {p.stem: p for p in folder.iterdir()}


@pytest.mark.parametrize("case, message", [
    ("missing", r"no file at .*missing\.caffemodel: download VGG_CNN_M_1024\.caffemodel from the Caffe "
                r"Model Zoo \(http://www\.robots\.ox\.ac\.uk/~vgg/software/deep_eval/\)"),
    ("truncated", r"truncated\.caffemodel is not a Caffe model or is truncated .*download it again"),
    ("deploy", r"deploy\.prototxt is not a Caffe model .*not the \.prototxt"),
    ("empty", r"empty\.caffemodel holds no layer with weights"),
    ("no_conv3", r"has no layer conv3 with weights \(layers with weights: conv1, conv2, conv4, conv5, "
                 r"fc6, fc7\); give VGG_CNN_M_1024\.caffemodel"),
    ("wrong_shape", r"layer conv2 weight is 256x48x5x5, vgg_cnn_m_1024 needs 256x96x5x5"),
    ("short_blob", r"layer conv1 blob 0 holds 100 values but its shape 96x3x7x7 needs 14112; the file is "
                   r"damaged, download it again"),
])
def test_errors_say_what_is_wrong(bad_models, tmp_path, case, message):
    source = bad_models.get(case, tmp_path / f"{case}.caffemodel")
    out = tmp_path / "out" / "vggm.safetensors"
    with pytest.raises(CaffeError, match=message) as info:
        convert_vgg_cnn_m_1024(source, out)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)
    assert not out.exists()


def test_command_line_error_is_one_line(bad_models, tmp_path, capsys):
    assert main([str(bad_models["wrong_shape"]), str(tmp_path / "vggm.safetensors")]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.startswith("error: ") and out.err.count("\n") == 1 and "Traceback" not in out.err
    assert not (tmp_path / "vggm.safetensors").exists()


def test_module_error_exit_status(bad_models, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "rnnha.caffe", str(bad_models["truncated"]), str(tmp_path / "o.safetensors")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
