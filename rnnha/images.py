"""Safe image decoding: whatever a user uploads becomes an upright RGB PIL image, or one clear error.

Handles paths, bytes, file objects, PIL images and NumPy arrays; applies the EXIF orientation; converts
every mode (L, LA, P, RGBA, CMYK, I;16, F, ...) to RGB; takes the first frame of an animation; refuses
files over MAX_FILE_BYTES, decompression bombs (checked from the header, before any pixel is decoded),
truncated files and images too small to say anything about. With `max_side`, a large JPEG is decoded
at reduced size (DCT scaling, PIL's `draft`) and every image comes back at most max_side pixels a side,
so work and memory stay bounded whatever the upload. Error messages name a file, never a folder.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageError", "load_image", "MAX_PIXELS", "MIN_SIDE", "MAX_FILE_BYTES"]

MAX_PIXELS = 50_000_000  # about 7000 x 7000; larger uploads are refused before decoding
MIN_SIDE = 16  # pixels; smaller images carry no usable detail
MAX_FILE_BYTES = 50 * 2**20  # an encoded image larger than this is refused unread
_RESIZABLE = {"RGB", "RGBA", "L", "LA", "CMYK", "YCbCr", "I", "F"}  # modes PIL resamples faithfully


class ImageError(ValueError):
    """An input that is not a usable image; the message says what was wrong and what to do."""


def _from_array(array: np.ndarray) -> Image.Image:
    if array.dtype.kind == "f" and array.max(initial=0) <= 1:
        array = array * 255  # floats in [0, 1]
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    try:
        return Image.fromarray(array)
    except TypeError as exc:
        raise ImageError(f"cannot read an array of shape {array.shape} as an image: {exc}") from exc


def _too_large(label: str, detail: str) -> ImageError:
    return ImageError(f"{label} is {detail}, too large to decode safely; "
                      f"resize it to at most {MAX_PIXELS:,} pixels")


def _open(source, max_side: int | None = None) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if source is None:
        raise ImageError("no image given; upload or choose an image")
    if isinstance(source, (bytes, bytearray)):
        size, source, label = len(source), io.BytesIO(source), "the upload"
    elif isinstance(source, (str, Path)):
        path = Path(source)
        label = path.name or "the image"
        if not path.is_file():
            raise ImageError(f"no image file named {label}")
        size = path.stat().st_size
    else:  # a file object
        label = Path(str(getattr(source, "name", "") or "the upload")).name
        size = None
    if size == 0:
        raise ImageError(f"{label} is empty (0 bytes); choose an image file")
    if size is not None and size > MAX_FILE_BYTES:
        raise ImageError(f"{label} is {size / 2**20:.0f} MiB; images of at most {MAX_FILE_BYTES // 2**20} MiB "
                         "are accepted")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if isinstance(source, (str, Path)):  # read, not opened by path: PIL memory-maps an uncompressed
                source = io.BytesIO(Path(source).read_bytes())  # TIFF then, and loses its orientation 5-8
            image = Image.open(source)
            if image.width * image.height > MAX_PIXELS:  # from the header: nothing decoded yet
                raise _too_large(label, f"{image.width}x{image.height} pixels")
            image.seek(0)  # first frame of an animation
            if max_side:
                image.draft(image.mode, (max_side, max_side))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
            image.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_large(label, "over PIL's pixel limit") from None
    except UnidentifiedImageError:
        raise ImageError(f"{label} is not an image PIL can read; upload a JPEG, PNG, WebP, BMP or GIF") from None
    except MemoryError:
        raise _too_large(label, "more than this server can hold") from None
    except Exception as exc:  # noqa: BLE001 - a decoder's failure on untrusted bytes is the file's fault
        raise ImageError(f"{label} could not be decoded ({type(exc).__name__}); the file may be truncated "
                         "or corrupt") from exc
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float32)
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


def load_image(source, min_side: int = MIN_SIDE, max_side: int | None = None) -> Image.Image:
    """Decode `source` into an upright RGB PIL image, or raise ImageError saying what is wrong.

    max_side: if given, the image is returned at most that many pixels a side (aspect kept); large
    JPEGs are then decoded at reduced size, so a 7000 x 7000 photo never exists at full resolution."""
    image = _open(source, max_side)
    try:
        if image is source:
            image = ImageOps.exif_transpose(image)  # a copy: the caller's image stays as it is
        else:  # ours: no copy of the pixels unless the orientation needs one
            ImageOps.exif_transpose(image, in_place=True)
    except Exception:  # noqa: BLE001 - a broken EXIF block is no reason to refuse the pixels
        pass
    if min(image.size) < min_side:
        raise ImageError(
            f"the image is {image.width}x{image.height} pixels; at least {min_side}x{min_side} is needed"
        )
    try:
        if max_side and max(image.size) > max_side:
            if image.mode not in _RESIZABLE:
                image = _to_rgb(image)
            image = image.copy() if image is source else image
            image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
            if min(image.size) < min_side:  # a long strip: kept min_side thick, else it could not be read again
                image = image.resize(tuple(max(side, min_side) for side in image.size), Image.Resampling.BICUBIC)
        return _to_rgb(image)
    except MemoryError:
        raise _too_large("the image", f"{image.width}x{image.height} pixels") from None
    except (OSError, ValueError) as exc:
        raise ImageError(f"the image could not be converted to RGB ({exc})") from exc
