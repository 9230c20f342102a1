"""rnnha/overlay.py, rnnha/gallery.py, rnnha/verification.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from rnnha import RNNHA, RNNHAConfig
from rnnha.gallery import Gallery, items_from_folder
from rnnha.overlay import attention_overlay, colorbar, upsample
from rnnha.predictor import Predictor
from rnnha.verification import calibrate_threshold, pair_similarities


def test_overlay_has_the_image_size_and_follows_the_map():
    image = Image.new("RGB", (90, 60), (128, 128, 128))
    attention = torch.zeros(3, 3)
    attention[0, 2] = 1.0  # top right is hot
    out = attention_overlay(image, attention, alpha=0.6, cmap="inferno")
    assert out.size == image.size and out.mode == "RGB"
    pixels = np.asarray(out, dtype=float)
    assert pixels[5, 85].sum() > pixels[55, 5].sum()  # inferno: bright where the attention is
    raw = attention_overlay(image, attention, raw=True)
    assert raw.size == image.size and not np.array_equal(np.asarray(raw), np.asarray(out))
    up = upsample(attention, (90, 60))
    assert up.shape == (60, 90) and up.min() == 0 and up.max() == 1
    assert colorbar().size == (256, 36)
    with pytest.raises(ValueError, match="unknown colormap"):
        attention_overlay(image, attention, cmap="nope")


def test_threshold_calibration_separates_pairs():
    sims = np.array([0.9, 0.85, 0.8, 0.5, 0.45, 0.3, 0.2])
    same = np.array([True, True, False, True, False, False, False])
    result = calibrate_threshold(sims, same)
    assert 0.45 < result["threshold"] < 0.5  # keeps all same pairs, drops 3 of 4 different ones
    assert result["balanced_accuracy"] == pytest.approx(100 * 0.5 * (1 + 3 / 4))
    with pytest.raises(ValueError, match="both"):
        calibrate_threshold(sims, np.ones(7, bool))
    embeddings = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [1, 0.1], [0, 1]]), dim=1)
    values, labels = pair_similarities(embeddings, ["a", "a", "b"])
    assert labels.tolist() == [True, False, False] and values[0] > values[1]


def test_gallery_search_and_cache(tmp_path, khoa_root):
    folder = tmp_path / "g"
    folder.mkdir()
    for p in sorted((khoa_root / "images").rglob("car_013*_cam*.jpg"))[:4]:
        (folder / p.name).write_bytes(p.read_bytes())
    torch.manual_seed(0)
    predictor = Predictor(RNNHA(RNNHAConfig(pretrained_backbone=True, hidden_size=32, input_size=64)),
                          device="cpu", dtype=torch.float32)
    items = items_from_folder(folder)
    assert items[0].vehicle and items[0].camera in {"1", "2"}
    gallery = Gallery.build(predictor, items, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("gallery-*.safetensors"))) == 1
    cached = Gallery.build(predictor, items, tmp_path / "cache")
    assert torch.equal(cached.embeddings, gallery.embeddings)
    hits = gallery.search(gallery.embeddings[0], k=3)
    assert hits[0] == (0, pytest.approx(1.0, abs=1e-5)) and len(hits) == 3
    assert all(i != 0 for i, _ in gallery.search(gallery.embeddings[0], k=3, exclude_digest=items[0].digest))
    other = Predictor(RNNHA(RNNHAConfig(pretrained_backbone=True, hidden_size=32, input_size=64)), device="cpu")
    Gallery.build(other, items, tmp_path / "cache")  # another model: another cache file
    assert len(list((tmp_path / "cache").glob("gallery-*.safetensors"))) == 2
