"""The embedded default model: loads offline from assets/ and predicts. That the README's Results commands
reproduce the figures of its card is tests/test_readme_commands.py's."""
from __future__ import annotations

import json

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow
FOLDER = REPO / "assets" / "default"


@pytest.fixture(scope="module")
def document():
    if not (FOLDER / "config.json").is_file():
        pytest.skip("assets/default is missing")
    return json.loads((FOLDER / "config.json").read_text())


@pytest.fixture(scope="module")
def predictor(document):
    from zoo import load_model

    return load_model("default")


def test_shipped_as_the_zoo_format(document):
    from huggingface_hub import ModelCard

    from rnnha.pretrained import sha256_file

    weights = FOLDER / "model.safetensors"
    assert weights.stat().st_size < 25_000_000
    assert document["zoo"]["sha256"] == sha256_file(weights)  # load_model checks it too
    card = ModelCard.load(FOLDER / "README.md")
    assert card.data.license == "other" and "research use only" in card.text
    assert "configs/hierarchy/three_level.yaml" in card.text
    assert -1 < document["same_vehicle_threshold"] < 1 and "val.txt" in document["threshold_source"]
    # three levels: vehicle type, car model (under "car" only), identity
    config = document["config"]
    assert config["level_names"] == ["type", "model", "vehicle"]
    types, models = config["class_names"][:2]
    assert sorted(types) == ["bus", "car", "motorcycle", "truck"]
    assert len(models) == 196 and "Audi TTS Coupe 2012" in models
    assert sorted(document["hierarchy"]["model"]["type"]) == ["car"]
    # calibrated: a temperature per coarse level, fitted on images never trained on, and the same-vehicle
    # probability with the picture of its calibration pairs (also on the card)
    assert set(document["calibration"]["temperatures"]) == {"type", "model"}
    assert "## Calibrated probabilities" in card.text and "similarity.png" in card.text
    assert (FOLDER / "similarity.png").stat().st_size > 5_000


def test_predicts_car_models_and_matches_views(predictor, cars_root, khoa_root):
    import csv

    rows = list(csv.DictReader(open(cars_root / "labels.csv", newline="")))[:8]
    predictions = predictor.predict([cars_root / r["path"] for r in rows], topk=5)
    hits = sum(r["class_name"] in [n for n, _ in p.levels["model"]] for r, p in zip(rows, predictions))
    assert hits >= 6  # top-5 (these are training images: a sanity check, not a measurement)
    gallery = khoa_root / "images"
    a, b, c = (next(gallery.rglob(n)) for n in ("car_0139_cam1.jpg", "car_0139_cam2.jpg", "motorcycle_0287_cam2.jpg"))
    e = predictor.embed([a, b, c])
    assert float(e[0] @ e[1]) > float(e[0] @ e[2])
