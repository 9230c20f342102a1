"""PKU VehicleID (Liu et al., CVPR 2016), official layout:

    image/<7 digits>.jpg
    attribute/img2vid.txt (image vehicle) model_attr.txt (vehicle model) color_attr.txt (vehicle color)
    train_test_split/train_list.txt test_list_{800,1600,2400}.txt (image vehicle)

Coarse level: the car model. Only 10,309 vehicles have one; the others keep it missing, or are
dropped with drop_unlabelled=True (the authors trained on the model-labelled subset).
"""
from __future__ import annotations

from pathlib import Path

from .base import DataError, Sample
from .registry import DatasetKind, register_dataset

SIZES = (800, 1600, 2400)  # the paper's small / medium / large test sets
SPLITS = {"train": "train_test_split/train_list.txt", "test800": "train_test_split/test_list_800.txt",
          "test1600": "train_test_split/test_list_1600.txt",
          "test2400": "train_test_split/test_list_2400.txt", "all": "attribute/img2vid.txt"}


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """Lines of 'a b' -> [(a, b)]; a clear error naming the file and line otherwise."""
    if not path.is_file():
        raise DataError(f"VehicleID file {path} is missing; is {path.parents[1]} a VehicleID folder?")
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise DataError(f"{path}:{number}: expected two columns, got {line!r}")
        pairs.append((parts[0], parts[1]))
    return pairs


def load(root: str | Path, split: str = "train", drop_unlabelled: bool = False,
         skip_missing: bool = False) -> list[Sample]:
    root = Path(root)
    if split not in SPLITS:
        raise DataError(f"VehicleID split must be one of {list(SPLITS)}, got {split!r}")
    models = dict(read_pairs(root / "attribute" / "model_attr.txt"))
    colors_path = root / "attribute" / "color_attr.txt"
    colors = dict(read_pairs(colors_path)) if colors_path.is_file() else {}
    samples, missing = [], []
    for image, vehicle in read_pairs(root / SPLITS[split]):
        path = root / "image" / f"{image}.jpg"
        if vehicle not in models and drop_unlabelled:
            continue
        if not path.is_file():
            missing.append(path)
            continue
        labels = {"vehicle": vehicle}
        if vehicle in models:
            labels["model"] = models[vehicle]
        if vehicle in colors:
            labels["color"] = colors[vehicle]
        samples.append(Sample(path, labels))
    if missing and not skip_missing:
        raise DataError(f"{len(missing)} images listed in {SPLITS[split]} are missing, e.g. {missing[0]}; "
                        f"pass skip_missing=True to use only the images present")
    return samples


def _sizes(sizes) -> list[int]:
    sizes = [int(s) for s in ([sizes] if isinstance(sizes, (int, str)) else sizes)]
    wrong = [s for s in sizes if s not in SIZES]
    if wrong or not sizes:
        raise DataError(f"VehicleID test sizes are {list(SIZES)}, got {wrong or sizes}")
    return sizes


def check(root: str | Path, sizes=SIZES, repeats: int = 10, seed: int = 0, skip_missing: bool = False) -> None:
    for size in _sizes(sizes):
        load(root, split=f"test{size}", skip_missing=skip_missing)


def evaluate(predictor, root: str | Path, flip: bool = False, sizes=SIZES, repeats: int = 10, seed: int = 0,
             skip_missing: bool = False) -> dict:
    """Each test size: one randomly chosen image per vehicle is the gallery, the others are queries;
    `repeats` draws (seeds seed .. seed+repeats-1), mean and std of top-1 / top-5 / mAP."""
    from ..metrics import vehicleid_metrics
    from ..protocols import extract, vehicle_ids

    result = {}
    for size in _sizes(sizes):
        samples = load(root, split=f"test{size}", skip_missing=skip_missing)
        features = extract(predictor, samples, flip, desc=f"test{size}")
        result[f"test{size}"] = vehicleid_metrics(features.embeddings, vehicle_ids(samples), repeats=repeats,
                                                  seed=seed)
    return result


def score(result: dict) -> float:
    """The smallest test size's mAP ranks checkpoints."""
    return float(result[min(result, key=lambda k: int(k[4:]))]["mAP"])


def rows(result: dict) -> list[tuple[str, str, float]]:
    names = {800: "small", 1600: "medium", 2400: "large"}
    out = []
    for key, figures in result.items():
        size = int(key[4:])
        out += [(f"VehicleID {names[size]} ({size})", "top-1", figures["rank1"]),
                (f"VehicleID {names[size]} ({size})", "top-5", figures["rank5"])]
    return out


KIND = register_dataset(DatasetKind(
    "vehicleid", load, evaluate, check=check, splits=tuple(SPLITS), score=score, rows=rows,
    protocol="VehicleID test 800/1600/2400, one random gallery image per vehicle, 10 repeats (seeds 0-9)"))
