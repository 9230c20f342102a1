"""VeRi-776 (Liu et al., ICME 2016), official layout:

    image_train/ image_query/ image_test/   0002_c002_00030600_0.jpg  (vehicle _ camera _ frame _ n)
    name_train.txt name_query.txt name_test.txt
    train_label.xml test_label.xml   GB2312: <Item imageName=".." vehicleID=".." cameraID="c001"
                                               colorID=".." typeID=".."/>

Coarse level: typeID (the paper's VeRi coarse level). The query and test splits share test_label.xml.

VeRi has no validation split. `val_fraction` holds out that share of the training vehicles (at least
two, chosen by `seed`): split "train" then leaves them out and split "val" is their images, which the
same protocol scores (every image a query against the others; same vehicle and camera is junk), so that
checkpoints are chosen without looking at the test set.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
import random
from pathlib import Path

from .base import DataError, Sample
from .registry import DatasetKind, register_dataset

SPLITS = {"train": ("image_train", "name_train.txt", "train_label.xml"),
          "query": ("image_query", "name_query.txt", "test_label.xml"),
          "test": ("image_test", "name_test.txt", "test_label.xml")}
_NAME = re.compile(r"(\d+)_c(\d+)_")


def read_label_xml(path: Path) -> dict[str, dict[str, str]]:
    """imageName -> {vehicleID, cameraID, colorID, typeID}; the files declare GB2312, which expat
    cannot decode itself, so the bytes are decoded first."""
    if not path.is_file():
        raise DataError(f"VeRi label file {path} is missing; is {path.parent} a VeRi-776 folder?")
    text = path.read_bytes().decode("gb18030")  # a superset of GB2312
    text = re.sub(r"^<\?xml[^>]*\?>", "", text.lstrip("\ufeff").lstrip())
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise DataError(f"{path} is not valid XML: {exc}") from exc
    return {item.attrib["imageName"]: dict(item.attrib) for item in root.iter("Item")}


def load(root: str | Path, split: str = "train", val_fraction: float = 0.0, seed: int = 0) -> list[Sample]:
    root = Path(root)
    if split not in (*SPLITS, "val"):
        raise DataError(f"VeRi split must be one of {[*SPLITS, 'val']}, got {split!r}")
    if split in ("train", "val") and val_fraction:
        samples = load(root, "train")
        held = held_out_vehicles(samples, val_fraction, seed)
        return [s for s in samples if (s.labels["vehicle"] in held) == (split == "val")]
    if split == "val":
        raise DataError("VeRi split 'val' needs val_fraction > 0 (the share of training vehicles held out)")
    folder, names_file, xml_file = SPLITS[split]
    if not (root / names_file).is_file():
        raise DataError(f"{root / names_file} is missing; is {root} the VeRi-776 folder (image_train/, name_train.txt, ...)?")
    labels = read_label_xml(root / xml_file)
    samples = []
    for name in (root / names_file).read_text().split():
        match = _NAME.match(name)
        if not match:
            raise DataError(f"{names_file}: {name!r} is not a VeRi file name (0002_c002_...jpg)")
        item = labels.get(name, {})
        vehicle = item.get("vehicleID", match[1])
        level = {"vehicle": str(int(vehicle))}
        if item.get("typeID"):
            level["type"] = item["typeID"]
        if item.get("colorID"):
            level["color"] = item["colorID"]
        samples.append(Sample(root / folder / name, level, camera=str(int(match[2]))))
    return samples


def held_out_vehicles(samples: list[Sample], fraction: float, seed: int) -> set[str]:
    vehicles = sorted({s.labels["vehicle"] for s in samples}, key=int)
    if not 0 < fraction < 1 or len(vehicles) < 4:
        raise DataError(f"val_fraction must be in (0, 1) with at least 4 training vehicles; got {fraction} "
                        f"of {len(vehicles)}")
    return set(random.Random(seed).sample(vehicles, max(2, round(len(vehicles) * fraction))))


def _protocol_sets(root: Path, split: str, val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    if split == "test":
        return load(root, "query"), load(root, "test")
    if split == "val":
        held = load(root, "val", val_fraction, seed)
        return held, held
    raise DataError(f"the VeRi protocol scores split 'test' (query vs test) or 'val', got {split!r}")


def check(root: str | Path, split: str = "test", val_fraction: float = 0.0, seed: int = 0,
          rerank: str | None = None) -> None:
    from ..rerank import check_method

    check_method(rerank)
    _protocol_sets(Path(root), split, val_fraction, seed)


def evaluate(predictor, root: str | Path, flip: bool = False, split: str = "test", val_fraction: float = 0.0,
             seed: int = 0, rerank: str | None = None) -> dict:
    """Image-to-track protocol: each query image against the whole test set; the test images of the
    query's vehicle from the query's camera are junk. CMC, mAP and mINP (torchreid / fast-reid), and
    VeRi's official MATLAB-style AP as `veri_matlab_mAP`. split="val": the held-out training vehicles'
    images, each a query against the others, under the same rule (the query itself is junk too).
    rerank: "k-reciprocal" or "aqe" re-ranks the list first (rnnha.rerank); the result records it."""
    from ..metrics import reid_metrics, veri_matlab_metrics
    from ..protocols import cameras, extract, similarity_between, vehicle_ids

    query, gallery = _protocol_sets(Path(root), split, val_fraction, seed)
    q = extract(predictor, query, flip, desc="query")
    g = q if gallery is query else extract(predictor, gallery, flip, desc="gallery")
    similarity, ran = similarity_between(q.embeddings, g.embeddings, rerank)  # once, for both APs
    labels = vehicle_ids(query), vehicle_ids(gallery), cameras(query), cameras(gallery)
    result = reid_metrics(similarity, *labels)
    result["veri_matlab_mAP"] = veri_matlab_metrics(similarity, *labels)["mAP"]
    return {**result, **ran}


def rows(result: dict) -> list[tuple[str, str, float]]:
    return [("VeRi-776", "mAP", result["mAP"]), ("VeRi-776", "top-1", result["rank1"]),
            ("VeRi-776", "top-5", result["rank5"])]


KIND = register_dataset(DatasetKind(
    "veri", load, evaluate, check=check, splits=(*SPLITS, "val"), rows=rows,
    protocol="VeRi-776 query vs test, same-vehicle same-camera gallery images removed as junk (torchreid / "
             "fast-reid protocol); veri_matlab_mAP is the official MATLAB-style AP"))
