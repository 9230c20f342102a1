"""Your own data as a CSV file (header required; paths relative to the CSV's folder; an empty cell is a
missing label):

    path,vehicle,camera,type,model
    images/0001.jpg,17,2,car,Audi TT Coupe 2012
    images/0002.jpg,17,3,car,
    images/0003.jpg,,,truck,          <- no identity: trains the coarse levels only

`vehicle` is the fine level, `camera` is optional, every other column is a coarse level.
"""
from __future__ import annotations

import csv
from pathlib import Path

from .base import DataError, Sample
from .registry import DatasetKind, register_dataset


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        raise DataError(f"CSV file {path} is missing")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    if "path" not in header:
        raise DataError(f"{path}: the header needs a 'path' column, got {header}")
    return header, rows


def load(file: str | Path, root: str | Path | None = None) -> list[Sample]:
    file = Path(file)
    header, rows = read_rows(file)
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


def evaluate(predictor, file: str | Path, flip: bool = False, level: str | None = None,
             rerank: str | None = None) -> dict:
    """Every image with a vehicle label is a query against all the others (itself and its vehicle's
    same-camera images are junk), plus coarse-level accuracy; a CSV without vehicle labels is scored
    on the coarse level only. rerank: "k-reciprocal" or "aqe" re-ranks the re-id lists first
    (rnnha.rerank); the result records it."""
    from ..metrics import reid_metrics
    from ..protocols import coarse_accuracy, coarse_if_labelled, extract, similarity_between, vehicle_ids

    samples = load(file)
    if not any("vehicle" in s.labels for s in samples):
        level = level or ("model" if "model" in predictor.level_names else None)
        return coarse_accuracy(predictor, samples, level, flip=flip)
    samples = [s for s in samples if "vehicle" in s.labels]
    features = extract(predictor, samples, flip)
    # a missing camera is the image's own, so that only the query itself is removed
    cams = [s.camera if s.camera is not None else f"image{i}" for i, s in enumerate(samples)]
    similarity, ran = similarity_between(features.embeddings, features.embeddings, rerank)
    ids = vehicle_ids(samples)
    return {**reid_metrics(similarity, ids, ids, cams, cams), **coarse_if_labelled(predictor, samples, features),
            **ran}


def check(file: str | Path, level: str | None = None, rerank: str | None = None) -> None:
    from ..rerank import check_method

    check_method(rerank)
    load(file)


KIND = register_dataset(DatasetKind(
    "csv", load, evaluate, check=check,
    protocol="every labelled image a query against all the others, itself and same-camera views removed"))
