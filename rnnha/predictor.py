"""Inference: device and precision choice, batching, preprocessing; embed() and predict().

CPU: bf16 autocast where the processor supports it (AVX-512 BF16 / AMX: 2-3x faster than fp32),
CUDA: fp16 autocast. channels_last memory format, torch.inference_mode. With a backend (rnnha.runtime:
the model exported to ONNX Runtime or OpenVINO) the exported model runs instead of PyTorch, on the CPU.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from functools import cached_property
from typing import TYPE_CHECKING, Iterable, Sequence

import torch

from .images import load_image
from .model import RNNHA
from .transforms import eval_transform

if TYPE_CHECKING:
    from .runtime import Backend

SMALL_BATCH = 4  # at most this many images: the head reads its weights more than it computes (CPU, fp32)
MICRO_BATCH, MICRO_BATCH_THREADS = 1, 2  # images per forward for the automatic fp32 on a CPU of <= 2 threads

__all__ = ["Predictor", "Prediction", "default_device", "default_dtype", "cpu_supports_bf16"]


def cpu_supports_bf16() -> bool:
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


@dataclass
class Prediction:
    embedding: torch.Tensor  # D, unit norm
    levels: dict[str, list[tuple[str, float]]]  # level name -> top-k (label, probability)
    attention: torch.Tensor  # h x w, sums to 1


class Predictor:
    """A ready model: eval mode, on its device, with its preprocessing and label names."""

    def __init__(self, model: RNNHA, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None, batch_size: int = 32, backend: Backend | None = None):
        if backend is not None and (torch.device(device or "cpu").type != "cpu" or dtype not in (None, torch.float32)):
            raise ValueError(f"the {backend.name} backend runs the exported model on the CPU in its own precision: "
                             f"leave device and dtype unset (got device={device}, dtype={dtype})")
        self.backend = backend  # an rnnha.runtime.Backend, or None: PyTorch
        self.device = torch.device("cpu") if backend is not None else \
            torch.device(device) if device is not None else default_device()
        self._dtype = torch.float32 if backend is not None else \
            dtype if dtype is not None else default_dtype(self.device)
        # a CPU without native bf16 runs fp32; at small batches, though, the head is bound by reading its
        # 12 M weights, and reading them in fp16 halves its time (embeddings within cosine 1e-6 of fp32):
        # so when the precision is the automatic one, small batches run the head in fp16
        self.small_batch_head = torch.float16 if dtype is None and self.device.type == "cpu" and \
            self.dtype == torch.float32 and backend is None else None
        # and on a small CPU eager fp32 runs a batch of 32 at half the images/s of one image at a time
        # (2 cores: 10.5 against 21.8; the feature maps of a batch outgrow the caches): there the
        # automatic precision runs the images MICRO_BATCH at a time. Many cores keep whole batches.
        self.micro_batch = MICRO_BATCH if self.small_batch_head is not None and \
            torch.get_num_threads() <= MICRO_BATCH_THREADS else None
        self.model = model.eval().to(self.device, memory_format=torch.channels_last)
        self.config = model.config
        self.transform = eval_transform(self.config)
        self.batch_size = batch_size
        self.entry = None  # the zoo entry it came from, if any
        self._heads: dict[torch.dtype, torch.nn.Module] = {}  # model.head cast once per precision

    @property
    def dtype(self) -> torch.dtype:
        """The precision the model runs in (autocast's dtype; float32: no autocast)."""
        return self._dtype

    @dtype.setter
    def dtype(self, value: torch.dtype) -> None:
        self._dtype = value
        self.small_batch_head = self.micro_batch = None  # a precision set by hand is run as set, whole batches

    @property
    def info(self):
        """The model folder's ModelInfo (threshold, metrics, licence), or None for a model not loaded from one."""
        return getattr(self.model, "info", None)

    def __repr__(self) -> str:
        runs = f"backend={self.backend.name}" if self.backend else f"device={self.device}, dtype={self.dtype}"
        return f"Predictor({self.config.variant}, backbone={self.config.backbone}, {runs})"

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the config and weights, and of the backend's name and files where one runs the model:
        keys caches (galleries) to exactly this model, so PyTorch's and an export's never mix."""
        from .gallery import model_fingerprint

        fingerprint = model_fingerprint(self.model)
        if self.backend is None:
            return fingerprint
        return hashlib.sha256(f"{fingerprint}:{self.backend.name}:{self.backend.digest}".encode()).hexdigest()

    @property
    def level_names(self) -> list[str]:
        return self.config.level_names

    def class_names(self, level: int) -> list[str]:
        names = self.config.class_names
        return list(names[level]) if names else [str(i) for i in range(self.config.num_classes[level])]

    def preprocess(self, images: Sequence) -> torch.Tensor:
        """Images (paths, bytes, PIL, arrays) -> normalised batch on the CPU."""
        return torch.stack([self.transform(load_image(image)) for image in images])

    def _batches(self, images) -> Iterable[torch.Tensor]:
        if isinstance(images, torch.Tensor):  # an already preprocessed batch
            images = images if images.dim() == 4 else images.unsqueeze(0)
            yield from images.split(self.batch_size)
            return
        images = list(images)
        for i in range(0, len(images), self.batch_size):
            yield self.preprocess(images[i:i + self.batch_size])

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor, module: torch.nn.Module | None = None):
        """The model (or one of its parts, e.g. model.backbone) on a preprocessed batch, in this precision.

        The backbone runs under autocast. The head runs on a copy of its weights cast to this precision
        once: under autocast every call re-casts them (9 M parameters for 2 small matrix-vector
        products), which made the heads cost 30 % of a batch-1 forward on a CPU. On a small CPU in the
        automatic fp32, the batch runs micro_batch images at a time (see __init__). With a backend, the
        exported model runs (whole: it has no parts to run)."""
        if self.backend is not None:
            if module is not None:
                raise ValueError(f"this Predictor runs the exported model ({self.backend.name}), which has no "
                                 "parts to run: use a Predictor without a backend for a part of the model")
            return self.backend(batch)
        if self.micro_batch and len(batch) > self.micro_batch:
            return _concatenated([self.forward(part, module) for part in batch.split(self.micro_batch)])
        batch = batch.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        autocast = self.dtype != torch.float32
        head_dtype = self.dtype if autocast else self.small_batch_head if len(batch) <= SMALL_BATCH else None
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=autocast):
            if module is not None or head_dtype is None:
                return (module or self.model)(batch)
            f = self.model.backbone(batch)
        return self._head(head_dtype)(f.to(head_dtype))

    def _head(self, dtype: torch.dtype) -> torch.nn.Module:
        """model.head in this dtype, made on first use and again whenever the model's head changes (its
        tensors' version counters: an optimizer step, load_state_dict, a move); the model's own weights
        stay as they are."""
        head = self.model.head
        tensors = [*head.parameters(), *head.buffers()]
        key = (dtype, tuple(t._version for t in tensors), tuple(t.data_ptr() for t in tensors))
        cached = self._heads.get(dtype)
        if cached is None or cached[0] != key:
            import copy

            self._heads[dtype] = cached = (key, copy.deepcopy(head).to(dtype).eval())
        return cached[1]

    def temperature(self, level: int) -> float:
        """The level's softmax temperature from the model folder's calibration (1 when none was fitted)."""
        info = self.info
        return info.temperature(self.level_names[level]) if info is not None else 1.0

    def probabilities(self, logits: torch.Tensor, level: int) -> torch.Tensor:
        """softmax(logits / T) of a level: its calibrated probabilities (the plain softmax without T)."""
        return (logits.float() / self.temperature(level)).softmax(dim=1)

    def embed(self, images) -> torch.Tensor:
        """N x D unit-norm float32 embeddings (on the CPU) of a list of images or a batch tensor."""
        parts = [self.forward(b).embedding.float().cpu() for b in self._batches(images)]
        if not parts:
            return torch.empty(0, self.model.embedding_dim)
        return torch.cat(parts)

    def backbone_features(self, images) -> torch.Tensor:
        """N x d float32 GAP(f) of the backbone alone (what a linear probe reads), on the CPU."""
        parts = [self.forward(b, self.model.backbone).float().mean(dim=(2, 3)).cpu() for b in self._batches(images)]
        return torch.cat(parts) if parts else torch.empty(0, self.model.backbone.feature_dim)

    def predict(self, images, topk: int = 5) -> list[Prediction]:
        """Per image: embedding, top-k (label, probability) of every level (calibrated where the model
        folder has temperatures), attention map."""
        results = []
        for batch in self._batches(images):
            out = self.forward(batch)
            tops = []
            for level, logits in enumerate(out.logits):
                probs = self.probabilities(logits, level).cpu()
                k = min(topk, probs.shape[1])
                values, indices = probs.topk(k, dim=1)
                names = self.class_names(level)
                tops.append([[(names[j], float(p)) for p, j in zip(vs.tolist(), ix.tolist())]
                             for vs, ix in zip(values, indices)])
            embedding, attention = out.embedding.float().cpu(), out.attention.float().cpu()
            for i in range(len(embedding)):
                levels = {name: tops[t][i] for t, name in enumerate(self.level_names)}
                results.append(Prediction(embedding[i], levels, attention[i]))
        return results


def _concatenated(parts: list):
    """The outputs of the parts of a batch (tensors, or RNNHAOutputs: per field, lists per level) as one."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    joined = {}
    for field in fields(first):
        values = [getattr(part, field.name) for part in parts]
        if values[0] is None:
            joined[field.name] = None
        elif isinstance(values[0], list):
            joined[field.name] = [torch.cat(level) for level in zip(*values)]
        else:
            joined[field.name] = torch.cat(values)
    return type(first)(**joined)
