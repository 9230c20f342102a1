"""Stanford Cars (Krause et al. 2013) as a folder with `labels.csv` (`path,class_id,class_name`): the
car-model level only. Research use only: weights trained on it say so.

subset "train" / "holdout" splits every class: `holdout_fraction` of its images (at least one), chosen
by `seed`, are held out for measuring car-model accuracy. With calibration_fraction > 0, subset
"train" sets aside that fraction of each class of the rest (seed + 1) as subset "calibration": images
no model trained on them saw, for fitting its temperatures (rnnha.calibration); the holdout stays the same.
"""
from __future__ import annotations

from pathlib import Path

from .base import DataError, Sample, calibration_part, split_per_class
from .csv_folder import read_rows
from .registry import DatasetKind, register_dataset

SUBSETS = ("all", "train", "holdout", "calibration")


def load(root: str | Path, csv_file: str = "labels.csv", subset: str = "all",
         holdout_fraction: float = 0.1, seed: int = 0, calibration_fraction: float = 0.0) -> list[Sample]:
    root = Path(root)
    header, rows = read_rows(root / csv_file)
    if "class_name" not in header:
        raise DataError(f"{root / csv_file}: expected columns path,class_id,class_name, got {header}")
    samples = [Sample(root / row["path"], {"model": row["class_name"]}) for row in rows]
    if subset == "all":
        return calibration_part(samples, "all", calibration_fraction, seed, "model")  # refuses a fraction
    if subset not in SUBSETS:
        raise DataError(f"subset must be one of {', '.join(SUBSETS)}, got {subset!r}")
    kept, held = split_per_class(samples, "model", holdout_fraction, seed)
    if subset == "holdout":
        return held  # the same with or without a calibration part
    if subset == "train" and not calibration_fraction:
        return kept
    return calibration_part(kept, subset, calibration_fraction, seed + 1, "model")


def evaluate(predictor, root: str | Path, flip: bool = False, subset: str = "holdout", level: str = "model",
             csv_file: str = "labels.csv", holdout_fraction: float = 0.1, seed: int = 0,
             calibration_fraction: float = 0.0) -> dict:
    """Car-model top-1 / top-5 on `subset` (the held-out 10 % of every class by default)."""
    from ..protocols import coarse_accuracy

    samples = load(root, csv_file, subset, holdout_fraction, seed, calibration_fraction)
    return {"subset": subset, **coarse_accuracy(predictor, samples, level, flip=flip)}


def check(root: str | Path, subset: str = "holdout", level: str = "model", csv_file: str = "labels.csv",
          holdout_fraction: float = 0.1, seed: int = 0, calibration_fraction: float = 0.0) -> None:
    load(root, csv_file, subset, holdout_fraction, seed, calibration_fraction)


def rows(result: dict) -> list[tuple[str, str, float]]:
    return [("Stanford Cars " + result["subset"], "top-1", result["top1"]),
            ("Stanford Cars " + result["subset"], "top-5", result["top5"])]


KIND = register_dataset(DatasetKind(
    "stanford-cars", load, evaluate, check=check, splits=SUBSETS, rows=rows,
    protocol="car-model top-1 / top-5 on the held-out 10 % of every Stanford Cars class (seed 0)"))
