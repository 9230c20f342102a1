"""The model zoo: named entries (data) and a small API (list_models, get_entry, load_model).

An entry says what a model is (config, preprocessing, label names come from its folder's config.json),
where its weights come from (a local folder, or a Hub repo at a pinned revision with the weights'
sha256), what it was trained on under which licence, and what it measured under which protocol.
Other packages add entries through the entry-point group `rnnha.zoo`; `register_model` adds them
in-process.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterable, Union

__all__ = ["ZooError", "LocalSource", "HubSource", "CheckpointSource", "ImageNetSource", "ZooEntry", "register_model", "list_models", "get_entry",
           "load_model", "resolve", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "rnnha.zoo"
HUB_PREFIX = "hf-hub:"
IMAGENET_PREFIX = "imagenet:"


class ZooError(LookupError):
    """An unknown name or an entry that cannot be registered."""


@dataclass(frozen=True)
class LocalSource:
    folder: str  # a folder with config.json + model.safetensors (+ README.md)
    sha256: str | None = None  # of model.safetensors, checked when given

    def describe(self) -> str:
        return self.folder


@dataclass(frozen=True)
class HubSource:
    repo_id: str  # "org/name"
    revision: str | None = None  # pin a commit sha for reproducibility
    sha256: str | None = None  # of model.safetensors, checked after download

    def describe(self) -> str:
        return f"{HUB_PREFIX}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class CheckpointSource:
    path: str  # a training checkpoint (rnnha.train's last.safetensors / best.safetensors)
    sha256: None = None

    def describe(self) -> str:
        return self.path


@dataclass(frozen=True)
class ImageNetSource:
    backbone: str  # the zero-shot baseline: the backbone's ImageNet GAP feature, no training
    sha256: None = None

    def describe(self) -> str:
        return f"{IMAGENET_PREFIX}{self.backbone}"


Source = Union[LocalSource, HubSource, CheckpointSource, ImageNetSource]


@dataclass(frozen=True)
class ZooEntry:
    name: str
    source: Source
    description: str = ""
    license: str = "unknown"
    training_data: str = ""  # what it was trained on, with the data's own terms
    metrics: dict = field(default_factory=dict)  # {"protocol / data": {"mAP": .., "rank1": ..}}
    tags: tuple[str, ...] = ()

    def folder(self, cache_dir: str | Path | None = None) -> Path:
        """The local model folder (downloaded from the Hub if needed)."""
        if isinstance(self.source, HubSource):
            from rnnha.hub import download_folder

            return download_folder(self.source.repo_id, self.source.revision, cache_dir)
        if isinstance(self.source, LocalSource):
            return Path(self.source.folder)
        raise ZooError(f"{self.name} is a {type(self.source).__name__}, not a model folder")

    def build(self):
        """The model (rnnha.RNNHA, eval mode, fp32 on the CPU; `.info` from its folder), weights checked."""
        if isinstance(self.source, ImageNetSource):
            from rnnha.model import RNNHA, RNNHAConfig

            return RNNHA(RNNHAConfig(backbone=self.source.backbone, head="bnneck", num_classes=[1],
                                     level_names=["vehicle"], pretrained_backbone=True)).eval()
        if isinstance(self.source, CheckpointSource):
            from rnnha.checkpoint import model_from_checkpoint

            return model_from_checkpoint(self.source.path)
        from rnnha.pretrained import load_pretrained

        return load_pretrained(self.folder(), sha256=self.source.sha256)[0]

    @property
    def config(self):
        """The RNNHAConfig (config, preprocessing and label names); downloads config.json if needed."""
        from rnnha.pretrained import read_folder_config

        return read_folder_config(self.folder())[0]


_ENTRIES: dict[str, ZooEntry] = {}
_PLUGINS_LOADED = False
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def register_model(entry: ZooEntry | None = None, *, replace: bool = False):
    """Register an entry; also usable as a decorator on a function returning one (or several)."""
    if entry is None or callable(entry) and not isinstance(entry, ZooEntry):
        def decorator(fn: Callable[[], ZooEntry | Iterable[ZooEntry]]):
            for e in _as_entries(fn()):
                _add(e, replace)
            return fn

        return decorator(entry) if entry is not None else decorator
    _add(entry, replace)
    return entry


def _as_entries(obj) -> list[ZooEntry]:
    if isinstance(obj, ZooEntry):
        return [obj]
    entries = list(obj)
    bad = [e for e in entries if not isinstance(e, ZooEntry)]
    if bad:
        raise ZooError(f"expected ZooEntry objects, got {type(bad[0]).__name__}")
    return entries


def _add(entry: ZooEntry, replace: bool) -> None:
    if not isinstance(entry, ZooEntry):
        raise ZooError(f"expected a ZooEntry, got {type(entry).__name__}")
    if not _NAME.fullmatch(entry.name) or entry.name.startswith(HUB_PREFIX):
        raise ZooError(f"invalid model name {entry.name!r}: use letters, digits, '.', '_' and '-'")
    if entry.name in _ENTRIES and not replace and _ENTRIES[entry.name] != entry:
        raise ZooError(f"a model named {entry.name!r} is already registered")
    _ENTRIES[entry.name] = entry


def _load_plugins() -> None:
    """Discover entry points of the group `rnnha.zoo` once: each names a ZooEntry, a list of them, or a
    callable returning either. A broken plugin is a warning that names it, never a crash."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, ZooEntry):
                obj = obj()
            for entry in _as_entries(obj):
                _add(entry, replace=False)
        except Exception as exc:  # noqa: BLE001 - a third party's bug must not break the zoo
            dist = getattr(ep, "dist", None)
            where = f" (package {dist.name})" if dist is not None else ""
            warnings.warn(f"rnnha.zoo plugin {ep.name!r} = {ep.value}{where} failed to load and is skipped: "
                          f"{type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)


def reload_plugins() -> None:
    """Look for plugins again (after installing one in a running process)."""
    global _PLUGINS_LOADED
    _PLUGINS_LOADED = False
    _load_plugins()


def list_models(pattern: str | None = None) -> list[str]:
    """Registered names (built-ins and plugins), sorted; `pattern` is a shell-style filter."""
    import fnmatch

    _load_plugins()
    names = sorted(_ENTRIES)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def get_entry(name: str) -> ZooEntry:
    _load_plugins()
    try:
        return _ENTRIES[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, _ENTRIES, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ZooError(f"unknown model {name!r}{hint} Known: {', '.join(list_models()) or 'none'}; "
                       f"or pass a model folder or {HUB_PREFIX}ORG/NAME[@REVISION]") from None


def resolve(name_or_path: str | Path) -> ZooEntry:
    """The one resolver of strings to models, by explicit prefix or form:

    `hf-hub:ORG/NAME[@REVISION]` a Hub repo; `imagenet:BACKBONE` the zero-shot ImageNet baseline;
    a folder (config.json + model.safetensors); a `.safetensors` training checkpoint; else a zoo name.
    """
    text = str(name_or_path)
    if text.startswith(IMAGENET_PREFIX):
        from rnnha.backbones import BackboneError, get_backbone_spec

        backbone = text[len(IMAGENET_PREFIX):]
        try:
            get_backbone_spec(backbone)
        except BackboneError as exc:
            raise ZooError(str(exc)) from None
        return ZooEntry(name=text, source=ImageNetSource(backbone))
    if text.startswith(HUB_PREFIX):
        from rnnha.hub import parse_repo

        parsed = parse_repo(text)
        if parsed is None:
            raise ZooError(f"{text!r} is not {HUB_PREFIX}ORG/NAME[@REVISION]")
        return ZooEntry(name=text, source=HubSource(*parsed))
    path = Path(text).expanduser()
    if path.is_dir():
        return ZooEntry(name=path.name, source=LocalSource(str(path)))
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise ZooError(f"no checkpoint at {path}")
        return ZooEntry(name=path.name, source=CheckpointSource(str(path)))
    if _looks_like_path(text) and text not in _ENTRIES:
        raise ZooError(f"no model folder at {path}")
    return get_entry(text)


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.startswith(".")


def load_model(name_or_path: str | Path, device=None, dtype=None, batch_size: int = 32, backend: str | None = None):
    """A ready Predictor: strict weights, eval mode, on CUDA (fp16) if available, else the CPU (bf16
    where supported). Accepts what `resolve` does: a zoo name, `hf-hub:org/name[@rev]`, a model folder,
    a training checkpoint or `imagenet:BACKBONE`.

    backend None or "torch" runs PyTorch; "onnxruntime", "onnxruntime-int8" or "openvino" runs that
    export of the model folder (rnnha.runtime; `python -m rnnha.export --format ...` makes it)."""
    from rnnha.predictor import Predictor

    entry = resolve(name_or_path)
    runtime_backend = None
    if backend not in (None, "torch"):
        from rnnha.runtime import export_command, load_backend

        if not isinstance(entry.source, LocalSource):  # the Hub carries no exports
            raise ValueError(f"backend {backend!r} runs an export in a model folder, and {name_or_path} is no "
                             f"local folder: make one with `{export_command(backend, name_or_path)}` and load OUT_DIR")
        runtime_backend = load_backend(entry.folder(), backend)
    predictor = Predictor(entry.build(), device=device, dtype=dtype, batch_size=batch_size, backend=runtime_backend)
    predictor.entry = entry
    return predictor
