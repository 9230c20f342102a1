"""Datasets: one module per kind (veri, vehicleid, two-camera, stanford-cars, csv), each declaring its
loader, splits and evaluation protocol in the registry (rnnha.data.registry). Loaders yield `Sample`s
(path, labels per level, camera) and nothing else; `LabelSpace` turns label strings into class
indices; `ReidDataset` is the torch side.

    >>> from rnnha.data import load_dataset
    >>> samples = load_dataset("two-camera", "../shared/data/khoa-vehicle-reid", list_file="train.txt")
    >>> samples[0]
    Sample(path=.../car_0088_cam2.jpg, labels={'type': 'car', 'vehicle': 'car_0088'}, camera='1')
"""
from __future__ import annotations

from .base import DataError, LabelSpace, PKSampler, ReidDataset, Sample, split_per_class
from .registry import (DATASET_KINDS, DatasetKind, DatasetSpec, check_dataset, evaluate_dataset, get_dataset,
                       list_datasets, load_dataset, load_specs, register_dataset)
from . import veri, vehicleid, two_camera, stanford_cars, csv_folder  # noqa: E402,F401  (they register)

__all__ = ["Sample", "LabelSpace", "ReidDataset", "PKSampler", "DataError", "split_per_class",
           "DATASET_KINDS", "DatasetKind", "DatasetSpec", "register_dataset", "get_dataset", "list_datasets",
           "load_dataset", "evaluate_dataset", "check_dataset", "load_specs"]
