"""The linear probe: a logistic regression on frozen backbone features, fitted on one set, scored on another."""
import pytest
import torch

from rnnha.data import DataError, load_dataset
from rnnha.probe import fit_linear_probe, linear_probe


def test_probe_separates_what_is_separable_and_nothing_else():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 32, generator=g) * 3
    y = torch.arange(5).repeat(40)
    x = centres[y] + torch.randn(200, 32, generator=g) * 2
    x_new = centres[y] + torch.randn(200, 32, generator=g) * 2
    predict = fit_linear_probe(x, y, 5)
    assert (predict(x_new).argmax(1) == y).float().mean() > 0.9
    shuffled = y[torch.randperm(200, generator=g)]  # labels unrelated to the features: chance on new data
    predict = fit_linear_probe(x, shuffled, 5)
    assert (predict(x_new).argmax(1) == shuffled).float().mean() < 0.4


def test_probe_reads_vehicle_types_from_imagenet_features(khoa_root):
    """Zero-shot ImageNet features tell motorcycles, cars, trucks and buses apart: a probe fitted on
    camera-1 images of every 6th train vehicle beats the majority class on their camera-2 images."""
    from zoo import load_model

    samples = load_dataset("two-camera", khoa_root, list_file="train.txt")
    vehicles = sorted({s.labels["vehicle"] for s in samples})[::6]
    chosen = [s for s in samples if s.labels["vehicle"] in vehicles]
    train = [s for s in chosen if s.camera == "1"]
    test = [s for s in chosen if s.camera == "2"]
    assert len(train) == len(test) == len(vehicles) == 68
    predictor = load_model("imagenet:efficientnet_lite0", device="cpu")
    result = linear_probe(predictor, train, test, level="type", progress=False)
    labels = [s.labels["type"] for s in test]
    majority = 100 * max(labels.count(t) for t in set(labels)) / len(labels)
    assert result["num_train"] == result["num_test"] == 68
    assert result["top1"] > majority + 20, (result, majority)  # measured: 97.1 against 60.3
    with pytest.raises(DataError, match="no training image carries a 'model' label"):
        linear_probe(predictor, train, test, level="model", progress=False)
