"""User uploads into a gallery, safely: loose images and zip files, every size checked before anything
is read into memory, and nothing left on disk when an upload is refused.

Limits (module constants, stated in the README's "Limits and safety"):
- MAX_UPLOAD_IMAGES images per gallery;
- a zip's entry count and directory size are read from its end record before the archive is parsed
  (MAX_ZIP_ENTRIES, and at most 1 KiB of directory per entry);
- each member's declared size (at most images.MAX_FILE_BYTES) and compression ratio (at most
  MAX_COMPRESSION_RATIO) are checked before it is read, and it is read through a bounded stream, so a
  member that lies about its size cannot exceed the limit either;
- the declared sizes of everything read add up to at most MAX_UPLOAD_BYTES;
- images larger than STORE_SIDE are kept as a reduced PNG (what the app shows and embeds anyway).
"""
from __future__ import annotations

import io
import lzma
import shutil
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Iterator, Sequence

from .images import MAX_FILE_BYTES, ImageError, load_image

__all__ = ["IMAGE_SUFFIXES", "MAX_UPLOAD_IMAGES", "MAX_UPLOAD_BYTES", "MAX_ZIP_ENTRIES", "MAX_COMPRESSION_RATIO",
           "STORE_SIDE", "ZipRefused", "zip_images", "items_from_uploads"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
MAX_UPLOAD_IMAGES = 2000
MAX_UPLOAD_BYTES = 1 * 2**30  # uncompressed, all files of one upload together
MAX_ZIP_ENTRIES = 10_000
MAX_COMPRESSION_RATIO = 100  # images barely compress; a member that shrinks 100:1 is a bomb
STORE_SIDE = 1024
MAX_NAME_BYTES = 200  # UTF-8 bytes of a stored file's name (file systems hold 255; zip members' are unbounded)


class ZipRefused(ImageError):
    """One zip file that cannot be used (unreadable, too many entries); the rest of an upload can be."""


class _Budget:
    def __init__(self, limit: int = MAX_UPLOAD_BYTES):
        self.left = limit

    def take(self, size: int, name: str) -> None:
        if size > self.left:
            raise ImageError(f"the upload holds more than {MAX_UPLOAD_BYTES // 2**20} MiB of images "
                             f"(reached at {name}); upload fewer or smaller files")
        self.left -= size


def _zip_directory(path: Path) -> tuple[int, int]:
    """(entries, central directory bytes) of a zip by its end record (zip64 too), read before zipfile
    parses a central directory that could hold millions of entries (it goes by the bytes, not the count)."""
    with open(path, "rb") as f:
        f.seek(0, io.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 22 - 65535))
        tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) < at + 22:
        raise zipfile.BadZipFile("no end of central directory")
    entries, size = struct.unpack("<HI", tail[at + 10:at + 16])
    locator = at - 20  # a zip64 locator stands right before the end record, never elsewhere
    if locator >= 0 and tail[locator:locator + 4] == b"PK\x06\x07":  # zip64: the count is in its end record
        offset = struct.unpack("<Q", tail[locator + 8:locator + 16])[0]
        with open(path, "rb") as f:
            f.seek(offset)
            record = f.read(56)
        if record[:4] != b"PK\x06\x06" or len(record) < 56:
            raise zipfile.BadZipFile("zip64 end record missing")
        entries, size = struct.unpack("<QQ", record[32:48])
    return entries, size


def zip_images(path: str | Path, budget: _Budget | None = None,
               skipped: list[str] | None = None) -> Iterator[tuple[str, bytes]]:
    """(member name, bytes) of each image member of a zip, sizes checked before reading. Members that
    are refused are noted in `skipped`; a zip that is not readable raises ImageError."""
    path, budget = Path(path), budget or _Budget()
    skipped = skipped if skipped is not None else []
    try:
        count, size = _zip_directory(path)
        if count > MAX_ZIP_ENTRIES or size > MAX_ZIP_ENTRIES * 1024:
            raise ZipRefused(f"{path.name} has {count:,} entries ({size / 2**20:.1f} MiB of directory); a zip of at "
                             f"most {MAX_ZIP_ENTRIES:,} entries is accepted")
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = info.filename
                if Path(name).suffix.lower() not in IMAGE_SUFFIXES or info.is_dir():  # is_dir() fails on ""
                    continue
                if info.file_size > MAX_FILE_BYTES:
                    skipped.append(f"{Path(name).name}: {info.file_size / 2**20:.0f} MiB unpacked, over the "
                                   f"{MAX_FILE_BYTES // 2**20} MiB limit")
                    continue
                if info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
                    skipped.append(f"{Path(name).name}: compressed {info.file_size // max(info.compress_size, 1):,}"
                                   f":1, more than an image can be (limit {MAX_COMPRESSION_RATIO}:1)")
                    continue
                budget.take(info.file_size, Path(name).name)
                try:
                    with archive.open(info) as member:
                        data = member.read(info.file_size + 1)  # bounded even if the header lies
                except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError, zlib.error,
                        lzma.LZMAError) as exc:  # a damaged member: deflate and lzma have errors of their own
                    skipped.append(f"{Path(name).name}: cannot be unpacked ({type(exc).__name__})")
                    continue
                if len(data) != info.file_size:
                    skipped.append(f"{Path(name).name}: its size does not match the zip's record")
                    continue
                yield name, data
    except ImageError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, struct.error, ValueError):
        raise ZipRefused(f"{path.name} is not a readable zip file") from None


def _file_name(name: str) -> str:
    """`name`, or when longer than MAX_NAME_BYTES its start cut to fit, the suffix kept."""
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    suffix = Path(name).suffix[:8]
    return name.encode()[:MAX_NAME_BYTES - len(suffix.encode())].decode(errors="ignore") + suffix


def _store(data: bytes, image, target: Path) -> Path:
    """The upload's own bytes, or a reduced PNG when the image is larger than STORE_SIDE."""
    if max(image.size) >= STORE_SIDE:
        target = target.with_suffix(".png")
        image.save(target, "PNG")
    else:
        target.write_bytes(data)
    return target


def items_from_uploads(paths: Sequence[str | Path], workdir: str | Path):
    """Uploaded images and/or zip files -> (gallery items, a note per file skipped). Images are copied
    into workdir (a zip member by its base name only; nothing is extracted by the archive's own paths).
    If the upload is refused (ImageError), workdir is removed with everything written into it."""
    from .data.two_camera import parse_name
    from .gallery import GalleryItem, file_digest

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    items, skipped, budget = [], [], _Budget()

    def add(name: str, data: bytes) -> None:
        if len(items) >= MAX_UPLOAD_IMAGES:
            raise ImageError(f"a gallery holds at most {MAX_UPLOAD_IMAGES} images; upload fewer")
        base = Path(name).name
        try:
            image = load_image(data, max_side=STORE_SIDE)
        except ImageError as exc:
            skipped.append(f"{base}: {exc}")
            return
        digest = file_digest(data)
        folder = workdir / digest[:12]
        folder.mkdir(exist_ok=True)
        target = _store(data, image, folder / _file_name(base))  # the user's own file name, shown in the app
        parsed = parse_name(base) or {}
        items.append(GalleryItem(target, parsed.get("vehicle"), parsed.get("camera"), digest))

    try:
        for path in map(Path, paths):
            if path.suffix.lower() == ".zip":
                try:
                    for name, data in zip_images(path, budget, skipped):
                        add(name, data)
                except ZipRefused as exc:
                    skipped.append(str(exc))
                continue
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                skipped.append(f"{path.name}: {size / 2**20:.0f} MiB, over the {MAX_FILE_BYTES // 2**20} MiB limit")
                continue
            budget.take(size, path.name)
            add(path.name, path.read_bytes())
        if not items:
            raise ImageError("none of the uploaded files is a usable image: " + "; ".join(skipped[:3]))
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return items, skipped
