"""rnnha.calibration on cases whose answer is known: a temperature recovered from logits made
overconfident by a known factor, ECE by hand and of calibrated / overconfident predictions, the
same-vehicle probability of a known logistic, the distribution picture."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from rnnha.calibration import (expected_calibration_error, fit_same_vehicle, fit_temperature, reliability,
                               same_vehicle_probability, similarity_histograms, similarity_picture)


def sampled(n=20000, classes=10, seed=0):
    """Logits and labels drawn from softmax(logits): calibrated by construction."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=g) * 2
    labels = torch.multinomial(logits.softmax(1), 1, generator=g)[:, 0]
    return logits, labels


def test_temperature_undoes_a_known_overconfidence():
    logits, labels = sampled()
    assert fit_temperature(logits * 3, labels) == pytest.approx(3, rel=0.05)
    assert fit_temperature(logits / 2, labels) == pytest.approx(0.5, rel=0.05)
    labels[::2] = -100  # missing labels are skipped, not a class
    assert fit_temperature(logits * 3, labels) == pytest.approx(3, rel=0.08)
    right = torch.zeros(50, 3)
    right[:, 0] = torch.linspace(0.5, 3, 50)  # every image right: the NLL falls without end as T -> 0
    assert fit_temperature(right, torch.zeros(50, dtype=torch.long)) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="no labelled images"):
        fit_temperature(logits[:3], torch.full((3,), -100))


def test_ece_by_hand_and_of_calibrated_and_overconfident_predictions():
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.3, 0.7]])
    labels = torch.tensor([0, 1, 1, 1])  # bin (0.867, 0.933]: accuracy 0.5 at 0.9; bin (0.667, 0.733]: 1.0 at 0.7
    assert expected_calibration_error(probs, labels) == pytest.approx(0.5 * 0.4 + 0.5 * 0.3)
    assert [r["count"] for r in reliability(probs, labels)] == [2, 2]
    logits, labels = sampled()
    calibrated = expected_calibration_error(logits.softmax(1), labels)
    overconfident = expected_calibration_error((logits * 3).softmax(1), labels)
    assert calibrated < 0.02 < 0.1 < overconfident
    t = fit_temperature(logits * 3, labels)
    assert expected_calibration_error((logits * 3 / t).softmax(1), labels) < 0.02
    assert ((logits * 3 / t).argmax(1) == (logits * 3).argmax(1)).all()  # the predictions stay


def test_same_vehicle_probability_of_a_known_logistic():
    rng = np.random.default_rng(0)
    s = rng.uniform(-0.2, 1.0, 40000)
    same = rng.random(len(s)) < 1 / (1 + np.exp(-(12 * s - 6)))  # p = 0.5 at s = 0.5
    fit = fit_same_vehicle(s, same)
    assert fit["a"] == pytest.approx(12, rel=0.1) and fit["even_at"] == pytest.approx(0.5, abs=0.03)
    assert same_vehicle_probability(fit["even_at"], fit) == pytest.approx(0.5)
    assert same_vehicle_probability(0.9, fit) > 0.95 > 0.05 > same_vehicle_probability(0.1, fit)
    # rare same-vehicle pairs (as in a gallery) weigh as much as the many different ones
    rare = same & (rng.random(len(s)) < 0.05)
    keep = rare | ~same
    assert fit_same_vehicle(s[keep], rare[keep])["even_at"] == pytest.approx(fit["even_at"], abs=0.05)
    with pytest.raises(ValueError, match="needs same- and different-vehicle pairs"):
        fit_same_vehicle([0.1, 0.2], [False, False])


def test_the_distribution_picture():
    rng = np.random.default_rng(1)
    sims = np.concatenate([rng.normal(0.7, 0.1, 200), rng.normal(0.05, 0.12, 20000), [-0.9, 1.0]])
    same = np.arange(len(sims)) < 200
    histograms = similarity_histograms(sims, same)
    assert sum(histograms["same"]) == 200 and sum(histograms["different"]) == 20002  # the outliers in the end bins
    assert len(histograms["edges"]) == 49 and histograms["different"][0] >= 1
    image = similarity_picture(histograms, 0.42, pair=0.8)
    assert image.mode == "RGB" and image.size == (500, 220)
    pixels = np.asarray(image).reshape(-1, 3).astype(int)
    blue = (abs(pixels - [0x1F, 0x77, 0xB4]).sum(1) < 30).sum()  # the pair's line
    assert blue > 100
    plain = np.asarray(similarity_picture(histograms, 0.42)).reshape(-1, 3).astype(int)
    assert (abs(plain - [0x1F, 0x77, 0xB4]).sum(1) < 30).sum() < blue / 4


@pytest.mark.slow
def test_export_fits_temperatures_on_the_recipes_calibration_part(tmp_path, khoa_root):
    """rnnha.export --temperatures: the recipe's calibration part (vehicles it never trained on) fits a
    temperature per coarse level that lowers the ECE there; --calibrate adds the same-vehicle probability
    and the pair histograms; the folder's Predictor gives the tempered probabilities; the card says so."""
    from rnnha import RNNHA, RNNHAConfig
    from rnnha.checkpoint import save_checkpoint
    from rnnha.export import export_checkpoint
    from rnnha.predictor import Predictor

    torch.manual_seed(0)
    model = RNNHA(RNNHAConfig(num_classes=[4, 3], level_names=["type", "vehicle"], hidden_size=16, input_size=64,
                              class_names=[["bus", "car", "motorcycle", "truck"], ["a", "b", "c"]]))
    with torch.no_grad():
        model.head.classifiers[0].weight.mul_(200)  # an untrained, very overconfident type level
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    recipe = {"train": [{"kind": "two-camera", "root": str(khoa_root),
                         "options": {"list_file": "train.txt", "part": "train", "calibration_fraction": 0.1}}]}
    save_checkpoint(tmp_path / "last.safetensors", model, optimizer, scheduler,
                    {"model_config": model.config.to_dict(), "config": recipe, "epoch": 1})
    folder = export_checkpoint(tmp_path / "last.safetensors", tmp_path / "out", temperatures=True,
                               calibration=("two-camera", str(khoa_root), "val.txt"))
    loaded = RNNHA.from_pretrained(folder)
    calibration = loaded.info.calibration
    t = calibration["temperatures"]["type"]
    ece = calibration["temperature_ece"]["type"]
    assert t > 2 and ece["after"] < ece["before"] and 60 <= ece["images"] <= 100  # 10 % of 365 vehicles, 2 views
    assert "part': 'calibration'" in calibration["temperature_source"]
    same = calibration["same_vehicle"]
    assert same["a"] > 0 and set(calibration["pairs"]) == {"edges", "same", "different"}
    assert sum(calibration["pairs"]["same"]) == 102 and loaded.info.threshold is not None
    predictor = Predictor(loaded, dtype=torch.float32)
    assert predictor.temperature(0) == pytest.approx(t) and predictor.temperature(1) == 1.0
    image = sorted((khoa_root / "images").rglob("*.jpg"))[:1]
    logits = predictor.forward(predictor.preprocess(image)).logits[0].float()
    top = predictor.predict(image, topk=1)[0].levels["type"][0][1]
    assert top == pytest.approx(float((logits / t).softmax(1).max()), abs=1e-5)
    card = (folder / "README.md").read_text()
    assert "## Calibrated probabilities" in card and "The probability of the same vehicle is sigmoid(" in card
    with Image.open(folder / "similarity.png") as picture:
        assert picture.size == (500, 220) and "](similarity.png)" in card
    assert loaded.info.hierarchy == {"vehicle": {"type": ["bus", "car", "motorcycle", "truck"]}}
    from rnnha.gallery import Gallery
    from rnnha.service import ReidService

    a, b = sorted((khoa_root / "images").rglob("car_0139_cam*.jpg"))
    service = ReidService(predictor, Gallery([], torch.empty(0, 16), torch.empty(0, 2, 2)), overlays=False)
    comparison = service.compare(a, b)
    assert comparison.probability == pytest.approx(1 / (1 + np.exp(-(same["a"] * comparison.similarity + same["b"]))))
    picture = service.similarity_picture(comparison.similarity)
    assert picture.size == (500, 220)


def test_the_path_stops_at_the_first_level_it_is_not_sure_of():
    from rnnha.service import Identification, hierarchy_path, path_text

    names = ["type", "model", "vehicle"]
    hierarchy = {"model": {"type": ["car"]}}
    levels = {"type": [("car", 0.99)], "model": [("Audi TTS Coupe 2012", 0.81)], "vehicle": [("17", 0.3)]}
    path = hierarchy_path(levels, names, hierarchy)
    assert [(s.level, s.label, s.sure) for s in path] == [("type", "car", True), ("model", "Audi TTS Coupe 2012", True)]
    assert path_text(path) == "car 99 % → Audi TTS Coupe 2012 81 %"
    unsure = hierarchy_path({**levels, "model": [("Audi TT", 0.2)]}, names, hierarchy)
    assert path_text(unsure) == "car 99 % → Audi TT 20 % (not sure)"
    answer = Identification({}, "model", [], None, None, unsure).answer
    assert answer.label == "car"  # the deepest level it is sure of
    truck = hierarchy_path({**levels, "type": [("truck", 0.97)]}, names, hierarchy)
    assert path_text(truck) == "truck 97 %"  # car models do not apply under truck
    lost = hierarchy_path({**levels, "type": [("car", 0.4)]}, names, hierarchy)
    assert path_text(lost) == "car 40 % (not sure)" and Identification({}, "model", [], None, None, lost).answer is None
    assert path_text(hierarchy_path(levels, names)) == "car 99 % → Audi TTS Coupe 2012 81 %"  # no hierarchy: every level


def test_level_hierarchy_of_the_three_level_data(khoa_root, cars_root):
    from rnnha.data.base import level_hierarchy
    from rnnha.data.registry import DatasetSpec, load_specs

    samples = load_specs([DatasetSpec("two-camera", str(khoa_root), {"list_file": "val.txt"}),
                          DatasetSpec("stanford-cars", str(cars_root), {"subset": "holdout"}, labels={"type": "car"})])
    assert level_hierarchy(samples, ["type", "model", "vehicle"]) == {"model": {"type": ["car"]}}
