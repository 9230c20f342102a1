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


@pytest.fixture(scope="module")
def tiny_gallery(tmp_path_factory, khoa_root):
    folder = tmp_path_factory.mktemp("tiny")
    for p in sorted((khoa_root / "images").rglob("car_013*_cam*.jpg"))[:4]:
        (folder / p.name).write_bytes(p.read_bytes())
    torch.manual_seed(0)
    predictor = Predictor(RNNHA(RNNHAConfig(pretrained_backbone=True, hidden_size=32, input_size=64)),
                          device="cpu", dtype=torch.float32)
    return predictor, items_from_folder(folder)


@pytest.mark.parametrize("attack", ["numbers", "metadata", "truncated", "garbage", "rows", "empty"])
def test_a_cache_that_does_not_verify_is_rebuilt(tmp_path, tiny_gallery, attack, caplog):
    from safetensors.torch import load_file, safe_open, save_file

    predictor, items = tiny_gallery
    built = Gallery.build(predictor, items, tmp_path)
    (cache,) = tmp_path.glob("gallery-*.safetensors")
    with safe_open(str(cache), "pt") as f:
        metadata = f.metadata()
    assert {"format", "model", "items", "count", "sha256"} <= set(metadata)
    tensors = load_file(str(cache))
    if attack == "numbers":  # a valid file with the right metadata: only the checksum tells
        tensors["embeddings"][0] = -tensors["embeddings"][0]
        save_file(tensors, str(cache), metadata=metadata)
    elif attack == "metadata":  # another model's cache under this name
        save_file(tensors, str(cache), metadata={**metadata, "model": "0" * 64})
    elif attack == "truncated":
        cache.write_bytes(cache.read_bytes()[:-100])
    elif attack == "garbage":
        cache.write_bytes(b"\x00" * 64)
    elif attack == "rows":  # consistent checksum, wrong number of rows
        from rnnha.gallery import _tensors_sha256

        short = {k: v[:2].contiguous() for k, v in tensors.items()}
        save_file(short, str(cache), metadata={**metadata, "sha256": _tensors_sha256(short)})
    else:
        cache.write_bytes(b"")
    with caplog.at_level("WARNING", logger="rnnha.gallery"):
        again = Gallery.build(predictor, items, tmp_path)
    assert "rebuilding it" in caplog.text
    assert torch.equal(again.embeddings, built.embeddings) and torch.equal(again.attention, built.attention)
    caplog.clear()
    with caplog.at_level("WARNING", logger="rnnha.gallery"):
        Gallery.build(predictor, items, tmp_path)  # the rebuilt file verifies
    assert caplog.text == ""


def test_the_cache_folder_is_bounded_least_recently_used_first(tmp_path, tiny_gallery):
    import os

    from rnnha.gallery import evict_least_recently_used

    predictor, items = tiny_gallery
    Gallery.build(predictor, items[:2], tmp_path)
    Gallery.build(predictor, items[2:], tmp_path)
    first, second = sorted(tmp_path.glob("gallery-*.safetensors"), key=lambda p: p.stat().st_mtime)
    os.utime(first, (1, 1)), os.utime(second, (2, 2))
    Gallery.build(predictor, items[:2], tmp_path)  # a cache hit makes `first` the most recently used
    size = first.stat().st_size
    Gallery.build(predictor, items, tmp_path, cache_bytes=2 * size + size // 2)  # room for two
    assert first.exists() and not second.exists() and len(list(tmp_path.glob("gallery-*"))) == 2
    (tmp_path / "other.bin").write_bytes(bytes(10 * size))  # not ours: never counted, never removed
    assert evict_least_recently_used(tmp_path, 0, keep=first) != [] and first.exists()
    assert (tmp_path / "other.bin").exists()


def test_search_skips_every_copy_of_the_query_image_by_lookup():
    """The query's own image (and any byte-identical copy) is not its own match; the exclusion is a
    dictionary lookup, so a search costs one matrix-vector product and a top-k, whatever the size."""
    from pathlib import Path

    from rnnha.gallery import Gallery, GalleryItem

    embeddings = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    items = [GalleryItem(Path(f"{i}.jpg"), digest="same" if i in (2, 4) else f"d{i}") for i in range(6)]
    gallery = Gallery(items, embeddings, torch.zeros(6, 2, 2))
    found = gallery.search(embeddings[2], k=5, exclude_digest="same")
    assert len(found) == 4 and {i for i, _ in found} == {0, 1, 3, 5}
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
    assert gallery.search(embeddings[2], k=1)[0][0] in (2, 4)  # without exclusion, itself first
    assert len(gallery.search(embeddings[0], k=50)) == 6
