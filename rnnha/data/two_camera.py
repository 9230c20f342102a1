"""Two-camera folders such as khoa-vehicle-reid: `<type>_<id>_cam<k>.jpg` anywhere under a root,
optionally restricted by a list file of names. Coarse level: type; camera: k; vehicle: (type, id).
part="train" / "calibration" with calibration_fraction > 0 splits the listed vehicles (both views of a
vehicle together, that fraction of each type, by seed) into images to train on and images to fit
calibration on (rnnha.calibration)."""
from __future__ import annotations

import re
from pathlib import Path

from .base import DataError, Sample, calibration_part
from .registry import DatasetKind, register_dataset

_NAME = re.compile(r"(?P<type>[A-Za-z]+)_(?P<id>\d+)_cam(?P<cam>\d+)\.(jpe?g|png|webp|bmp)", re.I)


def parse_name(name: str) -> dict[str, str] | None:
    match = _NAME.fullmatch(name)
    if not match:
        return None
    kind = match["type"].lower()
    return {"type": kind, "vehicle": f"{kind}_{match['id']}", "camera": match["cam"]}


def load(root: str | Path, list_file: str | Path | None = None, part: str = "all",
         calibration_fraction: float = 0.0, seed: int = 0) -> list[Sample]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder of <type>_<id>_cam<k>.jpg images")
    files = {p.name: p for p in sorted(root.rglob("*")) if parse_name(p.name)}
    if list_file is not None:
        list_path = Path(list_file) if Path(list_file).is_absolute() else root / list_file
        if not list_path.is_file():
            raise DataError(f"list file {list_path} is missing")
        names = list_path.read_text().split()
        unknown = [n for n in names if n not in files]
        if unknown:
            raise DataError(f"{list_path.name} names {len(unknown)} images not under {root}, "
                            f"e.g. {unknown[0]!r}")
    else:
        names = sorted(files)
    if not names:
        raise DataError(f"no <type>_<id>_cam<k> images under {root}")
    samples = []
    for name in names:
        parsed = parse_name(name)
        samples.append(Sample(files[name], {"type": parsed["type"], "vehicle": parsed["vehicle"]},
                              camera=parsed["camera"]))
    return calibration_part(samples, part, calibration_fraction, seed, "type", group="vehicle")


def evaluate_samples(predictor, samples, flip: bool = False, rerank: str | None = None) -> dict:
    """cam A -> cam B and B -> A (for the two cameras present), the mean of both directions, and the
    accuracy of a coarse level the samples are labelled with (type). rerank: "k-reciprocal" or "aqe"
    re-ranks each direction's list first (rnnha.rerank); the result records it and its total time."""
    from ..metrics import reid_metrics
    from ..protocols import coarse_if_labelled, extract, similarity_between, vehicle_ids

    cameras = sorted({s.camera for s in samples})
    if len(cameras) != 2:
        raise DataError(f"a two-camera evaluation needs exactly two cameras, found {cameras}")
    features = extract(predictor, samples, flip)
    index = {c: [i for i, s in enumerate(samples) if s.camera == c] for c in cameras}
    result, seconds = {}, 0.0
    for a, b in ((cameras[0], cameras[1]), (cameras[1], cameras[0])):
        similarity, ran = similarity_between(features.embeddings[index[a]], features.embeddings[index[b]], rerank)
        seconds += ran.get("rerank_seconds", 0.0)
        result[f"cam{a}->cam{b}"] = {**reid_metrics(similarity, vehicle_ids([samples[i] for i in index[a]]),
                                                    vehicle_ids([samples[i] for i in index[b]])), **ran}
    directions = list(result)
    for key in ("mAP", "rank1", "rank5", "rank10", "mINP"):
        result[key] = sum(result[d][key] for d in directions) / 2
    if ran:  # re-ranked: which, and the time of both directions
        result.update(rerank=ran["rerank"], rerank_seconds=round(seconds, 3))
    result.update(coarse_if_labelled(predictor, samples, features))
    return result


def _protocol_list(root: Path, list_file: str | None) -> str | None:
    return "val.txt" if list_file is None and (root / "val.txt").is_file() else list_file


def check(root: str | Path, list_file: str | None = None, rerank: str | None = None) -> None:
    from ..rerank import check_method

    check_method(rerank)
    load(root, list_file=_protocol_list(Path(root), list_file))


def evaluate(predictor, root: str | Path, flip: bool = False, list_file: str | None = None,
             rerank: str | None = None) -> dict:
    """The validation vehicles (val.txt when the folder has one: never trained on) or `list_file`;
    rerank: "k-reciprocal" or "aqe" (rnnha.rerank), none by default."""
    list_file = _protocol_list(Path(root), list_file)
    return {"list": list_file, **evaluate_samples(predictor, load(root, list_file=list_file), flip, rerank)}


KIND = register_dataset(DatasetKind(
    "two-camera", load, evaluate, check=check, splits=("train.txt", "val.txt"),
    protocol="two-camera folder, val.txt by default: cam1 queries vs the cam2 gallery and the reverse, "
             "mean of both; cosine similarity; mAP (non-interpolated), CMC, mINP in percent"))
