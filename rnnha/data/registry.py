"""The dataset registry: one `DatasetKind` per format, each declared by its own module (veri.py,
vehicleid.py, two_camera.py, stanford_cars.py, csv_folder.py) with its loader, its splits and its
evaluation protocol. Training (its `val:` and `test:` sets) and `python -m rnnha.evaluate` both look
kinds up here, so a new dataset kind is one new module that calls `register_dataset` (fast-reid's
DATASET_REGISTRY is the model). Third parties register theirs the same way before training.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from .base import DataError, Sample

__all__ = ["DatasetKind", "register_dataset", "get_dataset", "list_datasets", "DATASET_KINDS",
           "load_dataset", "evaluate_dataset", "check_dataset", "DatasetSpec", "load_specs"]


def _default_score(result: dict) -> float | None:
    value = result.get("mAP", result.get("top1"))
    return None if value is None else float(value)


def _default_rows(result: dict) -> list[tuple[str, str, float]]:
    names = {"mAP": "mAP", "rank1": "top-1", "rank5": "top-5", "top1": "top-1", "top5": "top-5"}
    return [("", label, float(result[key])) for key, label in names.items() if key in result]


@dataclass(frozen=True)
class DatasetKind:
    """A dataset format and how a model is scored on it.

    load(root, **options) -> [Sample]: the images and labels of one split (options such as split=...).
    evaluate(predictor, root, flip=False, **options) -> dict: the kind's protocol, figures in percent.
    score(result) -> float: the figure that ranks checkpoints when this kind validates a training run.
    rows(result) -> [(row, metric, value)]: the figures as the paper's tables print them.
    check(root, **options): reads what evaluate would read and raises DataError if it cannot, so that a
    training run stops before its first epoch rather than at its first validation or after its last.
    """

    name: str
    load: Callable[..., list[Sample]]
    evaluate: Callable[..., dict]
    protocol: str  # one sentence, for model cards and reports
    splits: tuple[str, ...] = ()
    score: Callable[[dict], float | None] = field(default=_default_score)
    rows: Callable[[dict], list[tuple[str, str, float]]] = field(default=_default_rows)
    check: Callable[..., None] | None = None


DATASET_KINDS: dict[str, DatasetKind] = {}


def register_dataset(kind: DatasetKind, replace_existing: bool = False) -> DatasetKind:
    if kind.name in DATASET_KINDS and not replace_existing:
        raise DataError(f"dataset kind {kind.name!r} is already registered")
    DATASET_KINDS[kind.name] = kind
    return kind


def list_datasets() -> list[str]:
    return list(DATASET_KINDS)


def get_dataset(name: str) -> DatasetKind:
    try:
        return DATASET_KINDS[name]
    except KeyError:
        raise DataError(f"unknown dataset kind {name!r}; choose one of {', '.join(DATASET_KINDS)}") from None


def _bind(fn: Callable, kind: str, *args, **options) -> None:
    """DataError unless fn(*args, **options) is a valid call (the options are ones it takes)."""
    try:
        inspect.signature(fn).bind(*args, **options)
    except TypeError as exc:
        takes = [p for p in list(inspect.signature(fn).parameters)[len(args):] if p != "flip"]
        shown = {k: v for k, v in options.items() if k != "flip"}
        raise DataError(f"bad options {shown} for dataset kind {kind!r} ({exc}); it takes "
                        f"{', '.join(takes) or 'no options'}") from None


def _call(fn: Callable, kind: str, *args, **options):
    _bind(fn, kind, *args, **options)
    return fn(*args, **options)


def load_dataset(kind: str, root: str | Path, **options) -> list[Sample]:
    return _call(get_dataset(kind).load, kind, Path(root), **options)


def evaluate_dataset(predictor, kind: str, root: str | Path, flip: bool = False, **options) -> dict:
    """`kind`'s protocol on the dataset at `root` (options as its evaluate takes them)."""
    return _call(get_dataset(kind).evaluate, kind, predictor, Path(root), flip=flip, **options)


def check_dataset(kind: str, root: str | Path, **options) -> None:
    """Fail now if `kind`'s protocol could not run on `root` with `options` (unknown options, missing
    files); what a training run does for its `val:` and `test:` before it starts."""
    dataset = get_dataset(kind)
    _bind(dataset.evaluate, kind, None, Path(root), **options)
    if dataset.check is not None:
        _call(dataset.check, kind, Path(root), **options)


@dataclass
class DatasetSpec:
    """One dataset of a run, as written in a training config.

    rename: map the dataset's level names onto the run's (e.g. {"type": "model"});
    labels: a label every image of the dataset has at a level of the run, that its files do not say
        (e.g. {"class": "car"}: every Stanford Cars image is a car);
    ignore: labels to treat as missing per level (e.g. {"model": ["car"]});
    prefix: namespaces vehicle ids, so that ids of different datasets never collide;
    repeat: list the dataset this many times per epoch (oversample a small dataset in a mix).
    """

    kind: str
    root: str
    options: dict = field(default_factory=dict)
    rename: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    ignore: dict[str, list[str]] = field(default_factory=dict)
    prefix: str | None = None
    repeat: int = 1

    def load(self, base: Path | None = None) -> list[Sample]:
        root = Path(self.root)
        if base is not None and not root.is_absolute():
            root = base / root
        if self.repeat < 1:
            raise DataError(f"repeat must be at least 1, got {self.repeat}")
        samples = load_dataset(self.kind, root, **self.options)
        out = []
        for s in samples:
            labels = {self.rename.get(k, k): v for k, v in s.labels.items()}
            if labels.keys() & self.labels.keys():
                raise DataError(f"labels: {sorted(labels.keys() & self.labels.keys())} are levels this dataset "
                                "labels itself; rename its level or drop it from labels")
            labels.update(self.labels)
            labels = {k: v for k, v in labels.items() if v not in self.ignore.get(k, ())}
            if self.prefix and "vehicle" in labels:
                labels["vehicle"] = f"{self.prefix}/{labels['vehicle']}"
            camera = f"{self.prefix}/{s.camera}" if self.prefix and s.camera else s.camera
            out.append(Sample(s.path, labels, camera))
        return out * self.repeat


def prefixed(specs: list[DatasetSpec | dict]) -> list[DatasetSpec]:
    """The specs of one run; with several datasets, each without a prefix gets one (kind and position),
    so that vehicle ids of different datasets never collide."""
    specs = [s if isinstance(s, DatasetSpec) else DatasetSpec(**s) for s in specs]
    if len(specs) > 1:
        specs = [replace(s, prefix=f"{s.kind}{i}") if s.prefix is None else s for i, s in enumerate(specs)]
    return specs


def load_specs(specs: list[DatasetSpec | dict], base: Path | None = None) -> list[Sample]:
    """Load and concatenate; with several datasets, vehicle ids get a per-dataset prefix."""
    return [sample for spec in prefixed(specs) for sample in spec.load(base)]
