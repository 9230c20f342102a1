"""CSV files: Stanford Cars' `path,class_id,class_name`, and a generic format for your own data.

Generic CSV (header required; paths relative to the CSV's folder; an empty cell is a missing label):

    path,vehicle,camera,type,model
    images/0001.jpg,17,2,car,Audi TT Coupe 2012
    images/0002.jpg,17,3,car,
    images/0003.jpg,,,truck,          <- no identity: trains the coarse levels only

`vehicle` is the fine level, `camera` is optional, every other column is a coarse level.
"""
from __future__ import annotations

import csv
from pathlib import Path

from .base import DataError, Sample, split_per_class


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        raise DataError(f"CSV file {path} is missing")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    if "path" not in header:
        raise DataError(f"{path}: the header needs a 'path' column, got {header}")
    return header, rows


def load_csv(file: str | Path, root: str | Path | None = None) -> list[Sample]:
    file = Path(file)
    header, rows = _rows(file)
    levels = [h for h in header if h not in ("path", "camera")]
    if not levels:
        raise DataError(f"{file}: no label column; add 'vehicle' and/or coarse columns such as 'model'")
    base = Path(root) if root is not None else file.parent
    samples = []
    for number, row in enumerate(rows, 2):
        if not row["path"]:
            raise DataError(f"{file}:{number}: empty path")
        labels = {level: row[level] for level in levels if row.get(level)}
        samples.append(Sample(base / row["path"], labels, camera=row.get("camera") or None))
    return samples


def load_stanford_cars(root: str | Path, csv_file: str = "labels.csv", subset: str = "all",
                       holdout_fraction: float = 0.1, seed: int = 0) -> list[Sample]:
    """Stanford Cars (Krause et al. 2013) as `path,class_id,class_name`: the car-model level only.

    subset "train" / "holdout" splits every class: `holdout_fraction` of its images (at least one),
    chosen by `seed`, are held out for measuring car-model accuracy.
    """
    root = Path(root)
    header, rows = _rows(root / csv_file)
    if "class_name" not in header:
        raise DataError(f"{root / csv_file}: expected columns path,class_id,class_name, got {header}")
    samples = [Sample(root / row["path"], {"model": row["class_name"]}) for row in rows]
    if subset == "all":
        return samples
    if subset not in ("train", "holdout"):
        raise DataError(f"subset must be all, train or holdout, got {subset!r}")
    kept, held = split_per_class(samples, "model", holdout_fraction, seed)
    return kept if subset == "train" else held
