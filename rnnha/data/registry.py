"""Dataset kinds by name, and specs that combine several datasets in one run."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from . import csv_folder, two_camera, vehicleid, veri
from .base import DataError, Sample

DATASET_KINDS: dict[str, Callable[..., list[Sample]]] = {
    "veri": veri.load,                       # split: train | query | test
    "vehicleid": vehicleid.load,             # split: train | test800 | test1600 | test2400 | all
    "two-camera": two_camera.load,           # list_file: train.txt | val.txt | None
    "stanford-cars": csv_folder.load_stanford_cars,
    "csv": csv_folder.load_csv,              # root is the CSV file
}


def load_dataset(kind: str, root: str | Path, **options) -> list[Sample]:
    try:
        loader = DATASET_KINDS[kind]
    except KeyError:
        raise DataError(f"unknown dataset kind {kind!r}; choose one of {', '.join(DATASET_KINDS)}") from None
    try:
        return loader(root, **options)
    except TypeError as exc:
        raise DataError(f"bad options {options} for dataset kind {kind!r}: {exc}") from exc


@dataclass
class DatasetSpec:
    """One dataset of a run, as written in a training config.

    rename: map the dataset's level names onto the run's (e.g. {"type": "model"});
    ignore: labels to treat as missing per level (e.g. {"model": ["car"]});
    prefix: namespaces vehicle ids, so that ids of different datasets never collide;
    repeat: list the dataset this many times per epoch (oversample a small dataset in a mix).
    """

    kind: str
    root: str
    options: dict = field(default_factory=dict)
    rename: dict[str, str] = field(default_factory=dict)
    ignore: dict[str, list[str]] = field(default_factory=dict)
    prefix: str | None = None
    repeat: int = 1

    def load(self, base: Path | None = None) -> list[Sample]:
        root = Path(self.root)
        if base is not None and not root.is_absolute():
            root = base / root
        samples = load_dataset(self.kind, root, **self.options)
        out = []
        for s in samples:
            labels = {self.rename.get(k, k): v for k, v in s.labels.items()}
            labels = {k: v for k, v in labels.items() if v not in self.ignore.get(k, ())}
            if self.prefix and "vehicle" in labels:
                labels["vehicle"] = f"{self.prefix}/{labels['vehicle']}"
            camera = f"{self.prefix}/{s.camera}" if self.prefix and s.camera else s.camera
            out.append(Sample(s.path, labels, camera))
        if self.repeat < 1:
            raise DataError(f"repeat must be at least 1, got {self.repeat}")
        return out * self.repeat


def load_specs(specs: list[DatasetSpec | dict], base: Path | None = None) -> list[Sample]:
    """Load and concatenate; with several datasets, vehicle ids get a per-dataset prefix."""
    specs = [s if isinstance(s, DatasetSpec) else DatasetSpec(**s) for s in specs]
    if len(specs) > 1:
        specs = [replace(s, prefix=f"{s.kind}{i}") if s.prefix is None else s for i, s in enumerate(specs)]
    return [sample for spec in specs for sample in spec.load(base)]
