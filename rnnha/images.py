"""Safe image decoding: whatever a user uploads becomes an upright RGB PIL image, or one clear error.

Handles paths, bytes, file objects, PIL images and NumPy arrays; applies the EXIF orientation; converts
every mode (L, LA, P, RGBA, CMYK, I;16, F, ...) to RGB; takes the first frame of an animation; refuses
decompression bombs, truncated files and images too small to say anything about.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageError", "load_image", "MAX_PIXELS", "MIN_SIDE"]

MAX_PIXELS = 50_000_000  # about 7000 x 7000; larger uploads are refused before decoding
MIN_SIDE = 16  # pixels; smaller images carry no usable detail


class ImageError(ValueError):
    """An input that is not a usable image; the message says what was wrong and what to do."""


def _open(source) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        array = source
        if array.dtype.kind == "f" and array.max(initial=0) <= 1:
            array = array * 255  # floats in [0, 1]
        if array.dtype != np.uint8:
            array = np.clip(array, 0, 255).astype(np.uint8)
        try:
            return Image.fromarray(array)
        except TypeError as exc:
            raise ImageError(f"cannot read an array of shape {source.shape} as an image: {exc}") from exc
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageError("the upload is empty (0 bytes); choose an image file")
        source = io.BytesIO(source)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"no image file at {path}")
        if path.stat().st_size == 0:
            raise ImageError(f"{path.name} is empty (0 bytes); choose an image file")
    elif source is None:
        raise ImageError("no image given; upload or choose an image")
    name = source if isinstance(source, (str, Path)) else getattr(source, "name", None)
    label = Path(str(name)).name if name else "the upload"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source)
            if image.width * image.height > MAX_PIXELS:
                raise ImageError(
                    f"{label} is {image.width}x{image.height} pixels, too large to decode safely; "
                    f"resize it to at most {MAX_PIXELS:,} pixels"
                )
            image.seek(0)  # first frame of an animation
            image.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(
            f"{label} is too large to decode safely ({exc}); resize it to at most {MAX_PIXELS:,} pixels"
        ) from exc
    except UnidentifiedImageError:
        raise ImageError(
            f"{label} is not an image PIL can read; upload a JPEG, PNG, WebP, BMP or GIF"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(
            f"{label} could not be decoded ({exc}); the file may be truncated or corrupt"
        ) from exc
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        if mode.startswith("I;16") and low >= 0 and high <= 65535:
            array = array / 257.0  # 16-bit -> 8-bit
        elif high > low:
            array = (array - low) / (high - low) * 255.0
        return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def load_image(source, min_side: int = MIN_SIDE) -> Image.Image:
    """Decode `source` into an upright RGB PIL image, or raise ImageError saying what is wrong."""
    image = _open(source)
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block is no reason to refuse the pixels
        pass
    if min(image.size) < min_side:
        raise ImageError(
            f"the image is {image.width}x{image.height} pixels; at least {min_side}x{min_side} is needed"
        )
    return _to_rgb(image)
