"""rnnha.calibration on cases whose answer is known: a temperature recovered from logits made
overconfident by a known factor, ECE by hand and of calibrated / overconfident predictions, the
same-vehicle probability of a known logistic, the distribution picture."""
from __future__ import annotations

import numpy as np
import pytest
import torch

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
