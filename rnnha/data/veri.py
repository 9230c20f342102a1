"""VeRi-776 (Liu et al., ICME 2016), official layout:

    image_train/ image_query/ image_test/   0002_c002_00030600_0.jpg  (vehicle _ camera _ frame _ n)
    name_train.txt name_query.txt name_test.txt
    train_label.xml test_label.xml   GB2312: <Item imageName=".." vehicleID=".." cameraID="c001"
                                               colorID=".." typeID=".."/>

Coarse level: typeID (the paper's VeRi coarse level). The query and test splits share test_label.xml.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
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


def load(root: str | Path, split: str = "train") -> list[Sample]:
    root = Path(root)
    if split not in SPLITS:
        raise DataError(f"VeRi split must be one of {list(SPLITS)}, got {split!r}")
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


def evaluate(predictor, root: str | Path, flip: bool = False) -> dict:
    """Image-to-track protocol: each query image against the whole test set; the test images of the
    query's vehicle from the query's camera are junk. CMC, mAP and mINP (torchreid / fast-reid), and
    VeRi's official MATLAB-style AP as `veri_matlab_mAP`."""
    from ..metrics import veri_matlab_metrics
    from ..protocols import cameras, extract, reid_between, vehicle_ids

    query, gallery = load(root, split="query"), load(root, split="test")
    q, g = extract(predictor, query, flip, desc="query"), extract(predictor, gallery, flip, desc="gallery")
    result = reid_between(q, g, query, gallery)
    official = veri_matlab_metrics(q.embeddings @ g.embeddings.T, vehicle_ids(query), vehicle_ids(gallery),
                                   cameras(query), cameras(gallery))
    result["veri_matlab_mAP"] = official["mAP"]
    return result


def rows(result: dict) -> list[tuple[str, str, float]]:
    return [("VeRi-776", "mAP", result["mAP"]), ("VeRi-776", "top-1", result["rank1"]),
            ("VeRi-776", "top-5", result["rank5"])]


KIND = register_dataset(DatasetKind(
    "veri", load, evaluate, splits=tuple(SPLITS), rows=rows,
    protocol="VeRi-776 query vs test, same-vehicle same-camera gallery images removed as junk (torchreid / "
             "fast-reid protocol); veri_matlab_mAP is the official MATLAB-style AP"))
