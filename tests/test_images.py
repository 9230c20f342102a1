"""rnnha/images.py: every kind of upload becomes upright RGB, or one clear ImageError."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from rnnha.images import MAX_PIXELS, ImageError, load_image


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo(khoa_pair) -> Image.Image:
    return Image.open(khoa_pair[0]).convert("RGB")


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "1"])
def test_every_mode_becomes_rgb(photo, mode):
    if mode == "I;16":
        image = Image.fromarray(np.asarray(photo.convert("L"), dtype=np.uint16) * 257)
    else:
        image = photo.convert(mode)
    out = load_image(encode(image, "PNG" if mode not in ("CMYK", "F", "I") else "TIFF"))
    assert out.mode == "RGB" and out.size == photo.size
    grey = np.asarray(out, dtype=np.float64).mean()
    assert 10 < grey < 245  # the picture survived, not a black or white page


def test_sixteen_bit_png_keeps_its_range(photo):
    grey = np.asarray(photo.convert("L"), dtype=np.uint16)
    out = load_image(encode(Image.fromarray(grey * 257), "PNG"))
    np.testing.assert_allclose(np.asarray(out)[..., 0], grey, atol=1)


def test_transparent_pixels_become_white():
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    assert load_image(encode(rgba, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_exif_rotation_is_applied(photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = load_image(encode(photo, "JPEG", exif=exif))
    assert out.size == (photo.height, photo.width)


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (40, 30), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    out = load_image(data)
    assert out.size == (40, 30) and out.getpixel((5, 5))[0] > 200


@pytest.mark.parametrize("source, message", [
    (b"", "empty"),
    (b"%PDF-1.4 not an image at all", "not an image"),
    (None, "no image given"),
])
def test_non_images_are_refused_clearly(source, message):
    with pytest.raises(ImageError, match=message):
        load_image(source)


def test_truncated_jpeg_is_refused(photo):
    data = encode(photo, "JPEG")
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(data[: len(data) // 2])


def test_tiny_image_is_refused():
    with pytest.raises(ImageError, match="1x1 pixels; at least 16x16"):
        load_image(encode(Image.new("RGB", (1, 1)), "PNG"))


def test_decompression_bomb_is_refused_before_decoding():
    for side in (8000, 20000):  # over our limit; over PIL's own limit too
        assert side * side > MAX_PIXELS
        bomb = encode(Image.new("1", (side, side)), "PNG")  # a small file, many megapixels
        assert len(bomb) < 200_000
        with pytest.raises(ImageError, match="too large to decode safely"):
            load_image(bomb)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ImageError, match="no image file"):
        load_image(tmp_path / "nope.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(tmp_path / "empty.jpg")


def test_arrays_are_accepted(photo):
    array = np.asarray(photo)
    assert load_image(array).size == photo.size
    assert load_image(array.astype(np.float32) / 255).size == photo.size
