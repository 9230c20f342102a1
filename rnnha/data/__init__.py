"""Datasets: one module per format, each yielding `Sample`s (path, labels per level, camera) and
nothing else. `LabelSpace` turns label strings into class indices; `ReidDataset` is the torch side.

    >>> from rnnha.data import load_dataset
    >>> samples = load_dataset("two-camera", "../shared/data/khoa-vehicle-reid", list_file="train.txt")
    >>> samples[0]
    Sample(path=.../car_0088_cam2.jpg, labels={'type': 'car', 'vehicle': 'car_0088'}, camera='1')
"""
from __future__ import annotations

from .base import DataError, LabelSpace, ReidDataset, Sample, PKSampler, split_per_class
from .registry import DATASET_KINDS, DatasetSpec, load_dataset, load_specs

__all__ = ["Sample", "LabelSpace", "ReidDataset", "PKSampler", "DataError", "split_per_class",
           "DATASET_KINDS", "DatasetSpec", "load_dataset", "load_specs"]
