"""Exported models: ONNX (run by ONNX Runtime, fp32 or int8) and OpenVINO IR, as Predictor backends.

    export(model, folder, formats=("onnx", "openvino"), int8=True, images=paths)  # a model folder + exports
    Predictor(model, backend=load_backend(folder, "openvino"))  # or zoo.load_model(folder, backend="openvino")

A backend is called on a preprocessed float32 batch and returns an RNNHAOutput like the model's own
forward (embedding, logits per level, last attention map; the per-step internals `attentions` and
`outputs` are not exported and come back empty). The folder's exported.json lists the exported files
with their sha256 and the weights they came from, and each backend's agreement with PyTorch fp32.

onnx, onnxruntime and openvino are optional (`pip install "rnnha[export]"`): this module is the only one
that imports them, when a function needs them.
"""
from __future__ import annotations

import copy
import hashlib
import importlib
import json
import logging
import os
import tempfile
import threading
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .io import atomic_path, atomic_write_text
from .model import RNNHA, RNNHAOutput
from .pretrained import WEIGHTS_NAME, read_folder_config, save_pretrained, sha256_file
from .transforms import resolve_preprocessing

__all__ = ["export", "export_onnx", "quantize_int8", "quantize_int8_checked", "export_openvino", "load_backend",
           "export_command", "read_manifest", "backend_table", "Backend", "OnnxRuntimeBackend",
           "OpenVINOBackend", "FORMATS", "BACKENDS", "MIN_INT8_COSINE", "ONNX_NAME", "INT8_NAME",
           "OPENVINO_NAME", "MANIFEST_NAME"]

INSTALL = 'pip install "rnnha[export]"'
FORMATS = ("onnx", "openvino")
ONNX_NAME, INT8_NAME, MANIFEST_NAME = "model.onnx", "model.int8.onnx", "exported.json"
OPENVINO_NAME, OPENVINO_WEIGHTS = "openvino/model.xml", "openvino/model.bin"
BACKENDS = {"onnxruntime": (ONNX_NAME,), "onnxruntime-int8": (INT8_NAME,),  # name -> its files in a model folder
            "openvino": (OPENVINO_NAME, OPENVINO_WEIGHTS)}
DEFAULT_OPSET = 18
MIN_INT8_COSINE = 0.99  # int8 is written only if every check image's embedding is this close to fp32's
# int8 keeps in fp32 the convolutions that read a map at stride <= fp32_stride of the input: this model
# amplifies small early errors (pixel noise of 1/255 alone moves embeddings to cosine 0.93); quantizing every
# convolution gave min cosine 0.80, those from stride 8 on 0.97, from stride 16 on 0.995 (32 gallery images).
# export() tries the recipes in order and keeps the first within MIN_INT8_COSINE. The second is for x86 CPUs
# without VNNI (AVX2, AVX-512F): there ONNX Runtime's uint8 x int8 kernels sum pairs of products in int16,
# which saturates (onnxruntime's docs: reduce_range, 7-bit weights, for per-channel models on such CPUs).
# The three-level default, 8 check images: the first gives 0.9942 with VNNI and 0.9870 on AVX2; the second
# 0.9955 on AVX2 (stride 8 with 7-bit weights: 0.9887; stride 16 with 8-bit: 0.9888).
_INT8_BASE = {"format": "QDQ", "weights": "int8, per channel", "activations": "uint8, per tensor, MinMax calibration"}
INT8_RECIPES = (
    {**_INT8_BASE, "fp32_stride": 8, "reduce_range": False,
     "quantized": "Conv (+ Clip) reading maps at stride > 8; fp32: the stride <= 8 stages and the head"},
    {**_INT8_BASE, "weights": "int8 in a 7-bit range (reduce_range), per channel", "fp32_stride": 16,
     "reduce_range": True,
     "quantized": "Conv (+ Clip) reading maps at stride > 16; fp32: the stride <= 16 stages and the head"},
)


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{module} is not installed; exported models need the export extra: {INSTALL} ({exc})") \
            from exc


# --- export ---------------------------------------------------------------------------------------------

class _Outputs(nn.Module):
    """The model with a flat tuple of outputs, as an exported graph has them."""

    def __init__(self, model: RNNHA):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        out = self.model(images)
        return (out.embedding, *out.logits, out.attention)


def output_names(model: RNNHA) -> list[str]:
    return ["embedding", *[f"logits_{name}" for name in model.config.level_names], "attention"]


def _cpu_fp32(model_or_predictor) -> RNNHA:
    """An eval-mode fp32 CPU copy (exporting must not move or cast the caller's model)."""
    if getattr(model_or_predictor, "backend", None) is not None:
        raise ValueError(f"this Predictor runs an exported model ({model_or_predictor.backend.name}); "
                         "export from a PyTorch model or Predictor")
    model = getattr(model_or_predictor, "model", model_or_predictor)
    return copy.deepcopy(model).to("cpu", torch.float32, memory_format=torch.contiguous_format).eval()


def export_onnx(model: RNNHA, path: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """The eval-mode fp32 model as ONNX, checked by onnx.checker: input `images` (N x 3 x H x W float32,
    N dynamic), outputs `embedding` (unit norm), `logits_<level>` per level, `attention` (N x h x w).
    Written atomically. The torch.export-based exporter takes 10-15 s where the TorchScript one takes 1,
    but folds the backbone's TF-"same" paddings into constants: its graph runs 15 % faster at batch 1."""
    onnx = _require("onnx")
    _require("onnxscript")
    model = _cpu_fp32(model)
    height, width = resolve_preprocessing(model.config).size
    example = torch.zeros(2, 3, height, width)  # 2, not 1: torch.export specialises a size-1 dimension
    quiet = logging.getLogger("onnxscript")  # its optimiser warns of every Split it leaves unfolded
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with torch.no_grad():
            program = torch.onnx.export(_Outputs(model).eval(), (example,), input_names=["images"],
                                        output_names=output_names(model), opset_version=opset, dynamo=True,
                                        dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    finally:
        quiet.setLevel(level)
    path = Path(path)
    with atomic_path(path) as tmp:
        program.save(str(tmp))
        onnx.checker.check_model(str(tmp))
    return path


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over a preprocessed batch, 8 images at a time."""

    def __init__(self, images: torch.Tensor):
        self._batches = iter([{"images": b.numpy()} for b in images.float().contiguous().split(8)])

    def get_next(self):
        return next(self._batches, None)


def _fp32_convolutions(model, image_height: int, stride: int) -> list[str]:
    """Conv nodes reading a map at stride <= `stride` of the image (or of unknown size)."""
    onnx = _require("onnx")
    model = onnx.shape_inference.infer_shapes(model)
    heights = {v.name: v.type.tensor_type.shape.dim[2].dim_value for v in [*model.graph.input, *model.graph.value_info]
               if len(v.type.tensor_type.shape.dim) == 4}
    return [n.name for n in model.graph.node
            if n.op_type == "Conv" and (heights.get(n.input[0]) or image_height) >= image_height / stride]


def quantize_int8(onnx_path: str | Path, path: str | Path, calibration: torch.Tensor,
                  recipe: dict = INT8_RECIPES[0]) -> Path:
    """Static post-training int8 quantization (onnxruntime.quantization, one of INT8_RECIPES) calibrated on
    a preprocessed batch of real images. It does not check accuracy: export() does, before keeping it."""
    onnx = _require("onnx")
    quantization = _require("onnxruntime.quantization")
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="rnnha-int8-") as work:
        prepared = Path(work) / "prepared.onnx"  # onnxruntime's pre-processing: graph optimisation, shapes
        quantization.quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        keep = _fp32_convolutions(onnx.load(str(prepared)), calibration.shape[2], recipe["fp32_stride"])
        with atomic_path(path) as tmp:
            quantization.quantize_static(
                str(prepared), str(tmp), _Calibration(calibration), quant_format=quantization.QuantFormat.QDQ,
                per_channel=True, activation_type=quantization.QuantType.QUInt8,
                weight_type=quantization.QuantType.QInt8, op_types_to_quantize=["Conv", "Clip"],
                nodes_to_exclude=keep, reduce_range=recipe["reduce_range"],
                calibrate_method=quantization.CalibrationMethod.MinMax)
    return path


def quantize_int8_checked(onnx_path: str | Path, path: str | Path, calibration: torch.Tensor, batch: torch.Tensor,
                          reference: RNNHAOutput, recipes: Sequence[dict] | None = None) -> tuple[dict | None, list]:
    """quantize_int8 with each recipe in turn (INT8_RECIPES by default) until one's least embedding cosine
    to `reference` on `batch` reaches MIN_INT8_COSINE; that one is left at `path`. Returns the recipe kept
    (None if none was) and the parity figures of each recipe tried."""
    tried = []
    for recipe in INT8_RECIPES if recipes is None else recipes:
        figures = _parity(OnnxRuntimeBackend(quantize_int8(onnx_path, path, calibration, recipe)), batch, reference)
        tried.append(figures)
        if figures["min_cosine"] >= MIN_INT8_COSINE:
            return recipe, tried
    Path(path).unlink(missing_ok=True)
    return None, tried


def _recipe_figure(recipe: dict, figures: dict) -> str:
    return (f"{figures['min_cosine']} (fp32 to stride {recipe['fp32_stride']}"
            f"{', 7-bit weights' if recipe['reduce_range'] else ''})")


def export_openvino(onnx_path: str | Path, path: str | Path) -> Path:
    """OpenVINO IR (model.xml + model.bin beside it) of an ONNX file, fp32 weights (the CPU plugin picks
    its inference precision when it compiles: OpenVINOBackend). Each file replaced atomically."""
    ov = _require("openvino")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".openvino-") as work:
        ov.save_model(ov.convert_model(str(onnx_path)), str(Path(work) / path.name), compress_to_fp16=False)
        os.replace(Path(work) / path.with_suffix(".bin").name, path.with_suffix(".bin"))
        os.replace(Path(work) / path.name, path)
    return path


def _parity(backend, batch: torch.Tensor, reference: RNNHAOutput) -> dict:
    """Agreement with PyTorch fp32: the least embedding cosine and the coarse level's top-1 agreement."""
    out = backend(batch)
    cosine = (out.embedding.float().cpu() * reference.embedding.float().cpu()).sum(1)
    agree = (out.logits[0].argmax(1).cpu() == reference.logits[0].argmax(1).cpu()).float().mean()
    return {"min_cosine": round(float(cosine.min()), 5), "coarse_top1_agreement": round(float(agree), 4),
            "images": len(batch)}


def _preprocessed(model: RNNHA, images) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        return images.float().cpu()
    from .predictor import Predictor

    return Predictor(model, device="cpu", dtype=torch.float32).preprocess(list(images))


def read_manifest(folder: str | Path) -> dict:
    """A folder's exported.json, or {} where nothing was exported."""
    path = Path(folder) / MANIFEST_NAME
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _weights_sha256(folder: Path) -> str:
    return read_folder_config(folder)[1].sha256 or sha256_file(folder / WEIGHTS_NAME)


def export(model_or_predictor, out_dir: str | Path, formats: Sequence[str] = ("onnx",), int8: bool = False,
           images=None, opset: int = DEFAULT_OPSET, card: str | None = None) -> dict:
    """A model folder (save_pretrained: config, weights, card if given) with the model exported beside it:
    `onnx` -> model.onnx (+ model.int8.onnx with int8), `openvino` -> openvino/model.xml|bin. Returns what
    it writes to exported.json: the files and their sha256, the weights they came from, and per backend
    its agreement with PyTorch fp32 on `images` (paths, PIL images or a preprocessed batch).

    int8 calibrates on every other image and is checked on the rest (parity then is on those for every
    backend); the first of INT8_RECIPES whose least cosine reaches MIN_INT8_COSINE is written and recorded,
    and where none does the manifest's `rejected` says why. Exports of other weights left in the folder
    are removed."""
    formats = tuple(dict.fromkeys(formats))
    if not formats or set(formats) - set(FORMATS):
        raise ValueError(f"formats must be some of {FORMATS}, got {formats}")
    if int8 and ("onnx" not in formats or images is None):
        raise ValueError("int8 is an ONNX Runtime model calibrated on real images: it needs format 'onnx' and images")
    model = _cpu_fp32(model_or_predictor)
    folder = save_pretrained(model, out_dir, card=card)
    manifest = _kept_exports(folder, _weights_sha256(folder))
    manifest.update(opset=opset, outputs=output_names(model), versions=_versions())
    batch = reference = calibration = None
    if images is not None:
        batch = _preprocessed(model, images)
        calibration, batch = (batch[0::2], batch[1::2]) if int8 else (None, batch)
        with torch.inference_mode():
            reference = model(batch)

    def record(name: str, backend: Backend | None = None, **extra) -> None:
        for file in BACKENDS[name]:
            manifest["files"][file] = sha256_file(folder / file)
        manifest["backends"][name] = {**extra, **({"parity": _parity(backend, batch, reference)} if backend else {})}
        manifest["rejected"].pop(name, None)

    def check(make):  # a backend to measure parity with, when there are images to measure on
        return make() if batch is not None else None

    with tempfile.TemporaryDirectory(dir=folder, prefix=".export-") as work:
        onnx_file = export_onnx(model, folder / ONNX_NAME if "onnx" in formats else Path(work) / ONNX_NAME, opset)
        if "onnx" in formats:
            record("onnxruntime", check(lambda: OnnxRuntimeBackend(onnx_file)))
        if int8:
            recipe, tried = quantize_int8_checked(onnx_file, Path(work) / INT8_NAME, calibration, batch, reference)
            if recipe is not None:
                os.replace(Path(work) / INT8_NAME, folder / INT8_NAME)
                record("onnxruntime-int8", quantization={**recipe, "calibration_images": len(calibration)},
                       parity=tried[-1])
            else:
                _remove(folder, "onnxruntime-int8", manifest)
                manifest["rejected"]["onnxruntime-int8"] = (
                    f"min cosine {' and '.join(_recipe_figure(r, f) for r, f in zip(INT8_RECIPES, tried))} to "
                    f"PyTorch fp32 on {len(batch)} images is below {MIN_INT8_COSINE} "
                    f"(coarse top-1 agreement {tried[-1]['coarse_top1_agreement']})")
        if "openvino" in formats:
            export_openvino(onnx_file, folder / OPENVINO_NAME)
            backend = check(lambda: OpenVINOBackend(folder / OPENVINO_NAME))
            record("openvino", backend, **({"precision": backend.precision} if backend else {}))
    atomic_write_text(folder / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
    return manifest


def _kept_exports(folder: Path, weights: str) -> dict:
    """The manifest to extend: the previous one's backends if they were exported from these weights
    (their files removed otherwise, so that no stale export is ever loaded)."""
    old = read_manifest(folder)
    manifest = {"weights_sha256": weights, "input": "images: N x 3 x H x W float32, preprocessed",
                "files": {}, "backends": {}, "rejected": {}}
    for name, entry in old.get("backends", {}).items():
        files = BACKENDS.get(name, ())
        if old.get("weights_sha256") == weights and all((folder / f).is_file() for f in files):
            manifest["backends"][name] = entry
            manifest["files"].update({f: old["files"][f] for f in files if f in old["files"]})
        elif files:
            _remove(folder, name, manifest)
    return manifest


def _remove(folder: Path, name: str, manifest: dict) -> None:
    for file in BACKENDS[name]:
        (folder / file).unlink(missing_ok=True)
        manifest["files"].pop(file, None)
    manifest["backends"].pop(name, None)


def _versions() -> dict:
    versions = {"torch": torch.__version__}
    for module in ("onnx", "onnxruntime", "openvino"):
        try:
            versions[module] = importlib.import_module(module).__version__
        except ImportError:
            pass
    return versions


# --- backends ---------------------------------------------------------------------------------------------

class Backend:
    """An exported model: called on a preprocessed float32 batch (CPU), returns an RNNHAOutput of CPU
    tensors. `name` says what runs it, `digest` (sha256 of its files) exactly which model."""

    name = "backend"

    def __init__(self, files: Sequence[Path], digest: str | None = None):
        self.files = tuple(Path(f) for f in files)
        if digest is not None:
            self.digest = digest

    @cached_property
    def digest(self) -> str:
        return hashlib.sha256("".join(sha256_file(f) for f in self.files).encode()).hexdigest()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, {self.files[0]})"

    def __call__(self, batch: torch.Tensor) -> RNNHAOutput:
        arrays = self._run(np.ascontiguousarray(batch.detach().to("cpu", torch.float32).numpy()))
        tensors = {name: torch.from_numpy(array) for name, array in arrays.items()}
        return RNNHAOutput(logits=[t for name, t in tensors.items() if name.startswith("logits_")],
                           embedding=tensors["embedding"], attention=tensors["attention"], attentions=[], outputs=[])

    def _run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError


class OnnxRuntimeBackend(Backend):
    """An ONNX file on ONNX Runtime's CPU provider, all graph optimisations; `threads` intra-op threads
    (default: ONNX Runtime's, one per physical core). Its threads wait without spinning: as fast on an
    idle 2-core machine, 1.6x faster at batch 1 while another process holds a core."""

    def __init__(self, path: str | Path, threads: int | None = None, digest: str | None = None):
        ort = _require("onnxruntime")
        super().__init__([path], digest)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.name = "onnxruntime-int8" if Path(path).name.endswith(".int8.onnx") else "onnxruntime"

    def _run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.session.run(None, {"images": images})))


class OpenVINOBackend(Backend):
    """OpenVINO IR on the CPU plugin. precision None is OpenVINO's own choice (bf16 on CPUs with native
    bf16, AVX-512 BF16 or AMX, else f32), or "bf16" / "f32"; `name` says which one runs. hint "latency"
    runs a batch as one request on all cores; "throughput" splits it over the plugin's streams (faster
    for large batches on many cores)."""

    def __init__(self, path: str | Path, precision: str | None = None, hint: str = "latency",
                 threads: int | None = None, digest: str | None = None):
        ov = _require("openvino")
        hints = _require("openvino.properties.hint")
        if precision not in (None, "bf16", "f32") or hint not in ("latency", "throughput"):
            raise ValueError(f"precision must be None, 'bf16' or 'f32' and hint 'latency' or 'throughput', "
                             f"got {precision!r}, {hint!r}")
        path = Path(path)
        super().__init__([path, path.with_suffix(".bin")], digest)
        config = {hints.performance_mode: getattr(hints.PerformanceMode, hint.upper())}
        if precision:
            config[hints.inference_precision] = getattr(ov.Type, precision)
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        self.precision = self.compiled.get_property(hints.inference_precision()).get_type_name()
        self.name = f"openvino-{self.precision}" + ("-throughput" if hint == "throughput" else "")
        self.outputs = [(port.get_any_name(), port) for port in self.compiled.outputs]
        self._streams = self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS") if hint == "throughput" else 1
        self._local = threading.local()  # an infer request serves one call at a time: one set per thread

    def _requests(self) -> list:
        requests = getattr(self._local, "requests", None)
        if requests is None:
            requests = self._local.requests = [self.compiled.create_infer_request() for _ in range(self._streams)]
        return requests

    def _run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        requests = self._requests()
        if len(requests) == 1 or len(images) == 1:
            result = requests[0].infer({0: images})
            return {name: result[port] for name, port in self.outputs}
        chunks = np.array_split(images, min(len(requests), len(images)))
        for request, chunk in zip(requests, chunks):
            request.start_async({0: chunk})
        for request in requests[:len(chunks)]:
            request.wait()
        return {name: np.concatenate([r.get_tensor(port).data.copy() for r in requests[:len(chunks)]])
                for name, port in self.outputs}


def export_command(backend: str, model: str | Path) -> str:
    """The command line that writes `model` with `backend`'s export into a folder OUT_DIR."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose torch, {', '.join(BACKENDS)}")
    return (f"python -m rnnha.export --format {'openvino' if backend == 'openvino' else 'onnx'}"
            f"{' --int8' if backend.endswith('int8') else ''} {model} OUT_DIR")


def load_backend(folder: str | Path, name: str, **options) -> Backend:
    """The backend `name` (onnxruntime, onnxruntime-int8, openvino) of a model folder's export, its files
    checked against exported.json (sha256, and that they came from the folder's weights). `options` go to
    the backend's class (threads; OpenVINO's precision and hint)."""
    folder = Path(folder)
    command = export_command(name, folder)
    manifest = read_manifest(folder)
    rejected = manifest.get("rejected", {}).get(name)
    missing = [f for f in BACKENDS[name] if not (folder / f).is_file()]
    if missing:
        why = f"int8 was not kept: {rejected}" if rejected else f"make it with `{command}` and load OUT_DIR"
        raise ValueError(f"{folder} has no {name} export ({missing[0]} is missing); {why}")
    digests = [sha256_file(folder / f) for f in BACKENDS[name]]
    recorded = [manifest.get("files", {}).get(f) for f in BACKENDS[name]]
    if manifest and (recorded != digests or manifest.get("weights_sha256") != _weights_sha256(folder)):
        raise ValueError(f"{folder}'s {name} export does not match its exported.json or its weights "
                         f"(changed since the export); export again with `{command}`")
    digest = hashlib.sha256("".join(digests).encode()).hexdigest()
    path = folder / BACKENDS[name][0]
    if name == "openvino":
        return OpenVINOBackend(path, digest=digest, **options)
    return OnnxRuntimeBackend(path, digest=digest, **options)


# --- speed ------------------------------------------------------------------------------------------------

def backend_table(predictor, images: torch.Tensor, folder: str | Path, quick: bool = False) -> dict:
    """Per backend: images/s at batch 1 and len(images) (medians of interleaved rounds), least embedding
    cosine to PyTorch fp32 and the coarse level's top-1 agreement on `images` (a preprocessed batch).
    The rows are PyTorch at the predictor's precision (the baseline) and in fp32, ONNX Runtime fp32 and
    int8, OpenVINO with each precision this CPU runs (latency hint; throughput hint at the large batch),
    all on torch.get_num_threads() threads (OMP_NUM_THREADS sets it). `folder` receives the export
    (rnnha.runtime.export, int8 calibrated on half of `images`). Prints nothing; no test asserts a speed."""
    from .predictor import Predictor

    folder = Path(folder)
    images = images.float().cpu()
    threads = torch.get_num_threads()
    manifest = export(predictor, folder, FORMATS, int8=True, images=images)
    baseline = f"torch-{str(predictor.dtype).replace('torch.', '')}"
    runners = {baseline: predictor.forward,
               "torch-float32": Predictor(predictor.model, predictor.device, torch.float32).forward}
    for name in ("onnxruntime", "onnxruntime-int8"):
        if name in manifest["backends"]:
            runners[name] = load_backend(folder, name, threads=threads)
    for precision in ("f32", "bf16"):
        backend = load_backend(folder, "openvino", precision=precision, threads=threads)
        if backend.precision == precision:  # a CPU without native bf16 runs a bf16 request in f32
            runners[backend.name] = backend
    throughput = load_backend(folder, "openvino", hint="throughput", threads=threads)
    large = {**runners, throughput.name: throughput}
    reference = runners["torch-float32"](images)
    from .bench import interleaved  # the benchmark's timing: one implementation

    rows = {name: _parity(run, images, reference) for name, run in large.items()}
    rounds, calls = (3, 3) if quick else (5, 10)
    for batch, fns in ((images[:1], runners), (images, large)):
        # .cpu(): a CUDA model's answer is there once it has been computed, as embed() takes it
        speeds = interleaved({name: lambda run=run: run(batch).embedding.cpu() for name, run in fns.items()},
                              rounds, calls if len(batch) == 1 else 1)
        for name, seconds in speeds.items():
            rows[name][f"images_per_second_b{len(batch)}"] = round(len(batch) / seconds, 1)
    exported = [name for name in runners if not name.startswith("torch")]
    fastest = max(exported, key=lambda name: rows[name]["images_per_second_b1"])
    return {"baseline": baseline, "rows": rows, "threads": threads, "batch": len(images),
            "rejected": manifest["rejected"], "fastest_backend": fastest,
            "fastest_backend_speedup_b1": round(rows[fastest]["images_per_second_b1"]
                                                / rows[baseline]["images_per_second_b1"], 2),
            "fastest_backend_min_cosine": rows[fastest]["min_cosine"]}

