"""The common currency of the data layer: Sample, LabelSpace, ReidDataset, PKSampler."""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch.utils.data import Dataset, Sampler

from ..errors import DataError
from ..images import load_image
from ..model import IGNORE_INDEX

__all__ = ["DataError", "Sample", "LabelSpace", "ReidDataset", "PKSampler", "split_per_class"]


@dataclass(frozen=True)
class Sample:
    path: Path
    labels: dict[str, str] = field(default_factory=dict)  # level name -> label; absent = missing
    camera: str | None = None

    def __hash__(self):
        return hash((self.path, tuple(sorted(self.labels.items())), self.camera))


class LabelSpace:
    """Class lists per level, built from training samples; encodes labels to indices (missing: -100)."""

    def __init__(self, classes: dict[str, list[str]]):
        self.levels = list(classes)
        self.classes = {level: list(names) for level, names in classes.items()}
        self._index = {level: {n: i for i, n in enumerate(names)} for level, names in self.classes.items()}

    @classmethod
    def from_samples(cls, samples: Sequence[Sample], levels: Sequence[str]) -> "LabelSpace":
        classes = {}
        for level in levels:
            names = sorted({s.labels[level] for s in samples if level in s.labels}, key=_natural)
            if not names:
                raise DataError(f"no training sample has a label for level {level!r}; "
                                f"the datasets label {sorted({k for s in samples for k in s.labels})}")
            classes[level] = names
        return cls(classes)

    @property
    def num_classes(self) -> list[int]:
        return [len(self.classes[level]) for level in self.levels]

    def encode(self, sample: Sample) -> list[int]:
        """Class index per level; IGNORE_INDEX where the label is missing or unknown to this space."""
        return [self._index[level].get(sample.labels.get(level), IGNORE_INDEX) for level in self.levels]

    def to_dict(self) -> dict:
        return {"levels": self.levels, "classes": self.classes}


def level_hierarchy(samples: Sequence[Sample], levels: Sequence[str]) -> dict[str, dict[str, list[str]]]:
    """Which labels of each level its fine level applies under, as the training data shows it:
    {level: {parent level: [parent labels seen with a label of level]}}, e.g. {"model": {"type": ["car"]}}
    when only cars have car models. Levels with no parent label beside their own are left out."""
    out = {}
    for parent, level in zip(levels, levels[1:]):
        under = sorted({s.labels[parent] for s in samples if level in s.labels and parent in s.labels}, key=_natural)
        if under:
            out[level] = {parent: under}
    return out


def _natural(name: str):
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


class ReidDataset(Dataset):
    """Samples -> (image tensor, labels LongTensor[T], camera index or -1)."""

    def __init__(self, samples: Sequence[Sample], labels: LabelSpace, transform):
        self.samples = list(samples)
        self.label_space = labels
        self.transform = transform
        cameras = sorted({s.camera for s in self.samples if s.camera is not None}, key=_natural)
        self._camera_index = {c: i for i, c in enumerate(cameras)}
        self.targets = torch.tensor([labels.encode(s) for s in self.samples], dtype=torch.long).reshape(
            len(self.samples), len(labels.levels))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        image = self.transform(load_image(sample.path))
        camera = self._camera_index.get(sample.camera, -1)
        return image, self.targets[index], camera


class PKSampler(Sampler[int]):
    """P identities x K images per batch (the field's identity sampler); identities with fewer than K
    images are sampled with replacement. Deterministic for (seed, epoch); shards across DDP ranks."""

    def __init__(self, identities: Sequence[int], p: int, k: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.by_id: dict[int, list[int]] = defaultdict(list)
        for index, identity in enumerate(identities):
            if identity != IGNORE_INDEX:
                self.by_id[identity].append(index)
        if len(self.by_id) < p:
            raise DataError(f"the P x K sampler needs at least P={p} identities, found {len(self.by_id)}")
        self.p, self.k, self.seed, self.epoch = p, k, seed, 0
        self.rank, self.world_size = rank, world_size
        self.batches_per_epoch = len(self.by_id) // p // world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch * self.p * self.k

    def __iter__(self) -> Iterator[int]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        ids = sorted(self.by_id)
        rng.shuffle(ids)
        batches = [ids[i:i + self.p] for i in range(0, len(ids) - self.p + 1, self.p)]
        for batch in batches[self.rank::self.world_size][: self.batches_per_epoch]:
            for identity in batch:
                pool = self.by_id[identity]
                picks = rng.sample(pool, self.k) if len(pool) >= self.k else rng.choices(pool, k=self.k)
                yield from picks


def calibration_part(samples: list[Sample], part: str, fraction: float, seed: int, level: str,
                     group: str | None = None) -> list[Sample]:
    """The "train" or "calibration" part of training samples: `fraction` of each class of `level`
    (whole groups, e.g. every image of a vehicle, when `group` names a level) set aside for fitting
    calibration (temperatures) on images the model never trained on; "all": every sample."""
    if part == "all":
        if fraction:
            raise DataError(f"calibration_fraction {fraction} sets images aside only from part/subset 'train': with "
                            "'all' the model would train on the images its temperatures are fitted on")
        return samples
    if part not in ("train", "calibration"):
        raise DataError(f"part must be all, train or calibration, got {part!r}")
    if not 0 < fraction < 1:
        raise DataError(f"part {part!r} needs 0 < calibration_fraction < 1, got {fraction}")
    if group is None:
        kept, held = split_per_class(samples, level, fraction, seed)
    else:  # one representative per group decides where all of the group's images go
        firsts = list({s.labels[group]: s for s in reversed(samples)}.values())
        held_groups = {s.labels[group] for s in split_per_class(firsts, level, fraction, seed)[1]}
        held = [s for s in samples if s.labels[group] in held_groups]
        kept = [s for s in samples if s.labels[group] not in held_groups]
    return kept if part == "train" else held


def split_per_class(samples: Sequence[Sample], level: str, fraction: float, seed: int = 0):
    """Hold out `fraction` of each class (at least one image when a class has two or more):
    returns (kept, held_out), deterministic for a seed. Samples without that level stay in `kept`."""
    by_class: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_class[s.labels.get(level, "")].append(s)
    rng = random.Random(seed)
    kept, held = [], []
    for name in sorted(by_class):
        group = sorted(by_class[name], key=lambda s: str(s.path))
        if not name or len(group) < 2:
            kept += group
            continue
        rng.shuffle(group)
        n = max(1, round(len(group) * fraction))
        held += group[:n]
        kept += group[n:]
    return kept, held
