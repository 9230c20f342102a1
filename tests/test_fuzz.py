"""Property-based fuzzing of the two readers of untrusted uploads: rnnha.images.load_image and
rnnha.uploads (zip_images, items_from_uploads).

Whatever the bytes, each call either gives a correct result or raises ImageError, never another
exception; nothing is written outside the upload's workdir, and a refused upload leaves no workdir.
Examples are fresh on every run (no derandomize): a failure prints the input that caused it."""
from __future__ import annotations

import hashlib
import io
import os
import struct
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from rnnha.images import ImageError, load_image
from rnnha.uploads import (IMAGE_SUFFIXES, MAX_COMPRESSION_RATIO, STORE_SIDE, _Budget, items_from_uploads,
                           zip_images)

MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]
FORMATS = ["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP"]
LOSSLESS = {"PNG", "BMP", "TIFF"}
EXIF_FORMATS = {"PNG", "JPEG", "TIFF", "WEBP"}
ANIMATED_FORMATS = {"PNG", "GIF", "WEBP"}
ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,  # as ImageOps.exif_transpose
               4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
               7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}
MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"BM", b"GIF89a", b"GIF87a", b"II*\x00", b"MM\x00*",
         b"RIFF\x00\x01\x00\x00WEBPVP8 ", b"RIFF\x00\x01\x00\x00WEBPVP8L", b"P6\n", b"P5 32 32 255\n",
         b"\x0a\x05\x01\x08", b"8BPS", b"\x00\x00\x01\x00", b"icns", b"qoif", b"DDS ", b"\x01\xda", b"\x59\xa6\x6a\x95",
         b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"%!PS-Adobe-3.0 EPSF-3.0\n", b"#define im_width 16\n"]
SLOW_CALL_S = 30  # far beyond any honest decode of these inputs: a call this slow is a hang
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                     HealthCheck.filter_too_much, HealthCheck.large_base_example])


# ---------------------------------------------------------------- image generation


def _pixels(mode: str, size: tuple[int, int], seed: int, block: int) -> Image.Image:
    """A random image of `mode` (noise in blocks of block x block pixels: quick to encode when large)."""
    rng = np.random.default_rng(seed)
    w, h = size
    shape = (-(-h // block), -(-w // block))

    def noise(dtype, low, high, bands=None):
        array = rng.integers(low, high, size=shape + ((bands,) if bands else ()), endpoint=True)
        array = array.repeat(block, 0).repeat(block, 1)[:h, :w]
        return np.ascontiguousarray(array.astype(dtype))

    bands = {"L": 1, "LA": 2, "P": 1, "RGB": 3, "RGBA": 4, "CMYK": 4}
    if mode in bands:
        image = Image.frombytes(mode, size, noise(np.uint8, 0, 255, bands[mode]).tobytes())
        if mode == "P":
            image.putpalette(rng.integers(0, 255, 768, endpoint=True).astype(np.uint8).tobytes())
            if rng.random() < 0.5:
                image.info["transparency"] = int(rng.integers(0, 255))
        return image
    if mode == "1":
        return Image.frombytes("L", size, noise(np.uint8, 0, 1).tobytes()).point(lambda v: 255 * v).convert("1")
    if mode == "I;16":
        return Image.frombytes("I;16", size, noise("<u2", 0, 65535).tobytes())
    if mode == "I":
        return Image.frombytes("I", size, noise("<i4", -2**31, 2**31 - 1).tobytes())
    scale = float(rng.choice([1.0, 255.0, 1e6]))  # F: [0, 1], [0, 255] or far outside, and maybe NaN and inf
    array = (noise("<f4", -1000, 1000) * (scale / 1000)).astype("<f4")
    if rng.random() < 0.2:
        array.flat[rng.integers(0, array.size, 3)] = [np.nan, np.inf, -np.inf]
    return Image.frombytes("F", size, array.tobytes())


def _tiff_compression(mode: str, option: int) -> str | None:
    """One that PIL can save `mode` with (libtiff corrupts memory on some others, e.g. group4 for L)."""
    choices = [None, "tiff_lzw", "tiff_adobe_deflate", "packbits"]
    choices += ["jpeg"] if mode in ("L", "RGB") else ["group4"] if mode == "1" else []
    return choices[option % len(choices)]


def _encode(image: Image.Image, fmt: str, orientation: int, animated: bool, option: int) -> bytes:
    kw: dict = {}
    if orientation != 1 and fmt in EXIF_FORMATS:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kw["exif"] = exif
    if fmt == "JPEG":
        kw.update(quality=[75, 95, 10][option % 3], progressive=option % 2 == 1)
    elif fmt == "TIFF":
        kw["compression"] = _tiff_compression(image.mode, option)
    elif fmt == "WEBP":
        kw["lossless"] = option % 2 == 1
    if animated and fmt in ANIMATED_FORMATS:
        kw.update(save_all=True, append_images=[image.transpose(Image.Transpose.ROTATE_180)], duration=100)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. Pillow's deprecation of I-mode PNGs
        image.save(buffer, fmt, **kw)
    return buffer.getvalue()


@st.composite
def encoded_images(draw, max_side: int = 600, big: bool = False):
    """(encoded bytes, format, the image that was saved): a random mode x format x size that PIL can save."""
    mode, fmt = draw(st.sampled_from(MODES)), draw(st.sampled_from(FORMATS))
    side = st.one_of(st.integers(1, 20), st.integers(1, max_side))
    if big:
        side = st.one_of(side, st.integers(STORE_SIDE - 2, STORE_SIDE + 80))
    size = (draw(side), draw(side))
    image = _pixels(mode, size, draw(st.integers(0, 2**32 - 1)), draw(st.sampled_from([1, 1, 4, 16])))
    orientation = draw(st.sampled_from([1, 1, 1, 2, 3, 4, 5, 6, 7, 8]))
    option, animated = draw(st.integers(0, 11)), draw(st.booleans())
    try:
        data = _encode(image, fmt, orientation, animated, option)
    except Exception:  # noqa: BLE001 - whatever PIL refuses to save is no concern here
        assume(False)
    lossy_tiff = fmt == "TIFF" and _tiff_compression(mode, option) == "jpeg"
    return data, fmt + ("-JPEG" if lossy_tiff else ""), image


@st.composite
def mutated(draw, data: bytes):
    """`data` truncated, with bytes flipped (mostly in the header), overwritten or inserted."""
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "flip", "overwrite", "insert"]))
        if not data:
            break
        at = draw(st.one_of(st.integers(0, min(len(data), 64) - 1), st.integers(0, len(data) - 1)))
        if op == "truncate":
            del data[at:]
        elif op == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif op == "overwrite":
            chunk = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff", b"\x80\x00\x00\x00"]))
            data[at:at + len(chunk)] = chunk
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


STRIP = Image.new("RGB", (1100, 16), (200, 30, 30))  # reduced to 1024 a side, it would be 15 pixels thick
SMALL = _png(Image.new("RGB", (24, 20), (30, 200, 30)))
NOISE = _pixels("RGB", (64, 64), 0, 1)  # its compressed streams are long enough to be damaged in thirds
GREY = _pixels("L", (100, 200), 1, 1)  # an uncompressed TIFF of this, opened by path, is memory-mapped by PIL

random_files = st.builds(lambda magic, tail: magic + tail, st.sampled_from(MAGIC), st.binary(max_size=2048))
random_zips = st.builds(lambda head, body, end: head + body + end,
                        st.sampled_from([b"", b"PK\x03\x04", b"PK\x03\x04\x14\x00\x00\x00\x08\x00"]),
                        st.binary(max_size=2048),
                        st.one_of(st.just(b""), st.binary(min_size=18, max_size=18).map(lambda b: b"PK\x05\x06" + b),
                                  st.just(b"PK\x05\x06" + bytes(18))))


# ---------------------------------------------------------------- load_image


def _load(data: bytes, as_: str, min_side: int, max_side: int | None, folder: Path):
    """load_image on `data` given as bytes, a path or a file object: an RGB image, or None for ImageError."""
    if as_ == "bytes":
        source = data
    elif as_ == "bytearray":
        source = bytearray(data)
    elif as_ == "file":
        source = io.BytesIO(data)
    else:
        path = folder / "upload.bin"
        path.write_bytes(data)
        source = str(path) if as_ == "str" else path
    start = time.monotonic()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's notes on odd files; only the outcome matters here
            image = load_image(source, min_side=min_side, max_side=max_side)
    except ImageError:
        image = None
    assert time.monotonic() - start < SLOW_CALL_S, "load_image hangs"
    if image is not None:
        assert isinstance(image, Image.Image) and image.mode == "RGB", image
        assert min(image.size) >= 1
        if max_side:
            assert max(image.size) <= max_side, (image.size, max_side)
        image.tobytes()  # the pixels are there
    return image


sources = st.sampled_from(["bytes", "bytearray", "file", "path", "str"])
min_sides = st.sampled_from([1, 16, 16, 40])
max_sides = st.one_of(st.none(), st.integers(40, 700))


@settings(FUZZ, max_examples=400)
@given(encoded_images(), sources, min_sides, max_sides)
@example((_png(STRIP), "PNG", STRIP), "bytes", 16, 1024)  # was returned 1024x15: unreadable by load_image again
@example((_encode(GREY, "TIFF", 6, False, 0), "TIFF", GREY), "path", 16, None)  # was 100x200, not upright 200x100
def test_load_image_of_valid_images(encoded, as_, min_side, max_side):
    data, fmt, saved = encoded
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        orientation = Image.open(io.BytesIO(data)).getexif().get(0x0112, 1)  # from the header, as saved
    upright = saved.transpose(ORIENTATION[orientation]) if orientation in ORIENTATION else saved
    w, h = upright.size
    with tempfile.TemporaryDirectory() as folder:
        image = _load(data, as_, min_side, max_side, Path(folder))
    if min(w, h) < min_side:
        assert image is None, f"a {w}x{h} image passed min_side={min_side}"
        return
    assert image is not None, f"a valid {saved.mode} {fmt} of {w}x{h} was refused"
    if not max_side or max(w, h) <= max_side:
        assert image.size == (w, h)
        assert min(image.size) >= min_side
    else:  # reduced: the aspect kept within rounding, except that a long strip stays min_side thick
        assert min(image.size) >= min_side, (w, h, image.size)
        scale = max(image.size) / max(w, h)
        assert all(abs(out - side * scale) <= 2 or out == min_side
                   for out, side in zip(image.size, (w, h))), (w, h, image.size)
    if fmt in LOSSLESS and saved.mode in ("RGB", "L", "1") and not max_side:  # L and 1 become RGB exactly
        assert np.array_equal(np.asarray(image), np.asarray(upright.convert("RGB")))


@settings(FUZZ, max_examples=500)
@given(st.data(), encoded_images(max_side=160), sources, min_sides, max_sides)
def test_load_image_of_damaged_images(data, encoded, as_, min_side, max_side):
    damaged = data.draw(mutated(encoded[0]), label="damaged")
    with tempfile.TemporaryDirectory() as folder:
        image = _load(damaged, as_, min_side, max_side, Path(folder))
    assert image is None or min(image.size) >= 1


@settings(FUZZ, max_examples=750)
@given(random_files, sources, min_sides, max_sides)
def test_load_image_of_random_bytes(data, as_, min_side, max_side):
    with tempfile.TemporaryDirectory() as folder:
        _load(data, as_, min_side, max_side, Path(folder))


# ---------------------------------------------------------------- zips


NAME_PREFIXES = ["", "", "sub/", "a/b/", "./", "../", "../../", "../../../../../", "sub/../../../../", "/",
                 "<abs>/", "..\\..\\", "C:/"]
SUFFIXES = sorted(IMAGE_SUFFIXES) + [".JPG", ".Png", ".TIFF"]


@st.composite
def member_names(draw, suffixes):
    prefix = draw(st.sampled_from(NAME_PREFIXES))
    stem = draw(st.one_of(st.sampled_from(["car_0001_cam1", "car_0139_cam2", "x", ".", "..", "..."]),
                          st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
                                  min_size=1, max_size=12),
                          st.integers(200, 300).map(lambda n: "y" * n),  # too long for most file systems
                          st.integers(70, 100).map(lambda n: "é€" * n)))
    return prefix + stem + draw(st.sampled_from(suffixes))


@st.composite
def members(draw):
    """(name, bytes, compression) of one zip member."""
    kind = draw(st.sampled_from(["image", "image", "image", "garbage", "empty", "zeros", "text"]))
    if kind == "image":
        data = draw(encoded_images(max_side=120, big=True))[0]
    elif kind == "garbage":
        data = draw(random_files)
    elif kind == "empty":
        data = b""
    elif kind == "zeros":
        data = bytes(draw(st.sampled_from([1000, 50_000, 2_000_000])))
    else:
        data = draw(st.text(max_size=200)).encode()
    suffixes = SUFFIXES if kind != "text" else [".txt", "", ".zip", ".png"]
    name = draw(member_names(suffixes))
    compression = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_DEFLATED,
                                        zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]))
    return name, data, compression


def _write_zip(path: Path, entries, root: Path) -> list[tuple[str, bytes]]:
    """Writes the members (names with <abs> pointing into root/outside); returns (stored name, bytes)."""
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile's "Duplicate name"
        with zipfile.ZipFile(path, "w") as archive:
            for name, data, compression in entries:
                info = zipfile.ZipInfo(name.replace("<abs>", str(root / "outside")))
                info.compress_type = compression
                archive.writestr(info, data)
                written.append((info.filename, data))
    return written


def _central_directory(raw: bytes) -> list[int]:
    """Offsets of the central-directory records of a zip written by zipfile (no comment, no zip64)."""
    cd_count, cd_size, cd_offset = struct.unpack("<HII", raw[-12:-2])
    offsets, at = [], cd_offset
    for _ in range(cd_count):
        offsets.append(at)
        n, m, k = struct.unpack("<HHH", raw[at + 28:at + 34])
        at += 46 + n + m + k
    return offsets


@st.composite
def lies(draw, raw: bytes):
    """The zip with members' recorded sizes changed (central directory and/or local header)."""
    raw = bytearray(raw)
    records = _central_directory(bytes(raw))
    for _ in range(draw(st.integers(0, 3)) if records else 0):
        record = draw(st.sampled_from(records))
        local = struct.unpack("<I", raw[record + 42:record + 46])[0]
        field = draw(st.sampled_from([(record, 24), (record, 20), (local, 22), (local, 18)]))  # file/compress size
        old = struct.unpack("<I", raw[sum(field):sum(field) + 4])[0]
        new = min(draw(st.sampled_from([0, 1, max(old - 1, 0), old + 1, old * 2, 2**31, 2**32 - 1])), 2**32 - 1)
        raw[sum(field):sum(field) + 4] = struct.pack("<I", new)
        if draw(st.booleans()):  # the same lie in both records
            other = (local, field[1] - 2) if field[0] == record else (record, field[1] + 2)
            raw[sum(other):sum(other) + 4] = struct.pack("<I", new)
    return bytes(raw)


@st.composite
def zips(draw):
    """(members, damage): how the written zip is then damaged: clean, lies, mutated or garbled 0/1/2."""
    entries = draw(st.lists(members(), max_size=6))
    for i in range(1, len(entries)):  # some duplicated names
        if draw(st.integers(0, 4)) == 0:
            entries[i] = (draw(st.sampled_from(entries[:i]))[0],) + entries[i][1:]
    damage = draw(st.sampled_from(["clean", "clean", "lies", "mutated", "garbled 0", "garbled 1", "garbled 2"]))
    return entries, damage


def _garbled(raw: bytes, third: int) -> bytes:
    """Every member's stored bytes inverted in their first, second or last third: headers intact, streams not."""
    raw = bytearray(raw)
    for record in _central_directory(bytes(raw)):
        size, = struct.unpack("<I", raw[record + 20:record + 24])
        local, = struct.unpack("<I", raw[record + 42:record + 46])
        start = local + 30 + sum(struct.unpack("<HH", raw[local + 26:local + 30]))
        for i in range(start + third * size // 3, start + (third + 1) * size // 3):
            raw[i] ^= 0xFF
    return bytes(raw)


def _damage(data, damage: str, raw: bytes) -> bytes:
    if damage.startswith("garbled"):
        return _garbled(raw, int(damage[-1]))
    if damage == "lies":
        return data.draw(lies(raw), label="lying zip")
    if damage == "mutated":
        return data.draw(mutated(raw), label="mutated zip")
    return raw


def _usable(data: bytes) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_image(data, max_side=STORE_SIDE)
        return True
    except ImageError:
        return False


def _check_zip_images(path: Path, written: list[tuple[str, bytes]], damage: str, limit: int | None):
    by_name: dict[str, list[bytes]] = {}
    for name, data in written:
        by_name.setdefault(name, []).append(data)
    skipped: list[str] = []
    got = []
    start = time.monotonic()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name, data in zip_images(path, _Budget(limit) if limit else None, skipped):
                got.append((name, data))
    except ImageError:
        pass
    assert time.monotonic() - start < SLOW_CALL_S, "zip_images hangs"
    assert all(isinstance(note, str) for note in skipped)
    for name, data in got:
        assert Path(name).suffix.lower() in IMAGE_SUFFIXES
        if damage == "mutated":  # names may be damaged; the data is still checked by its CRC
            assert any(data == d for _, d in written), name
        else:
            assert data in by_name.get(name, []), f"{name}: yielded bytes differ from those written"
    if limit:
        assert sum(len(data) for _, data in got) <= limit
    return got


@settings(FUZZ, max_examples=500)
@given(random_zips)
@example(b"PK\x06\x07" + bytes(4) + struct.pack("<Q", 2**64 - 1) + bytes(4) + b"PK\x05\x06" + bytes(18))
@example(b"PK\x05\x06" + bytes(6) + b"\x01\x00" + bytes(4) + struct.pack("<I", 2**32 - 1) + bytes(2))
def test_zip_of_random_bytes(data):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        path = root / "upload.zip"
        path.write_bytes(data)
        _check_zip_images(path, [], "clean", None)
        workdir = root / "work"
        with pytest.raises(ImageError):
            items_from_uploads([path], workdir)
        assert not workdir.exists()
        assert sorted(p.name for p in root.iterdir()) == ["upload.zip"]


@settings(FUZZ, max_examples=150)
@given(st.data(), zips(), st.one_of(st.none(), st.integers(0, 300_000)))
@example(None, ([("car.png", _png(NOISE), zipfile.ZIP_DEFLATED)], "garbled 0"), None)  # was zlib.error
@example(None, ([("car.png", _png(NOISE), zipfile.ZIP_LZMA)], "garbled 1"), None)  # was _lzma.LZMAError
@example(None, ([("car.png", _png(NOISE), zipfile.ZIP_BZIP2)], "garbled 1"), None)
@example(None, ([("", SMALL, zipfile.ZIP_STORED)], "clean"), None)  # was IndexError in ZipInfo.is_dir
def test_zip_images_yields_what_was_written(data, archive, limit):
    entries, damage = archive
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        path = root / "upload.zip"
        written = _write_zip(path, entries, root)
        path.write_bytes(_damage(data, damage, path.read_bytes()))
        got = _check_zip_images(path, written, damage, limit)
        if damage == "clean" and not limit:  # every image-named member within the limits, in order
            with zipfile.ZipFile(path) as zf:
                expected = [(info.filename, d) for info, (_, d) in zip(zf.infolist(), written)
                            if Path(info.filename).suffix.lower() in IMAGE_SUFFIXES and not info.is_dir()
                            and info.file_size <= MAX_COMPRESSION_RATIO * max(info.compress_size, 1)]
            assert got == expected
        assert sorted(p.name for p in root.iterdir()) == ["upload.zip"]


def _snapshot(root: Path, workdir: Path) -> dict[str, bytes | None]:
    """Every file and folder under root, except the workdir and the folders that lead to it."""
    keep = {workdir, *workdir.parents}
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == workdir or workdir in here.parents:
            continue
        for name in dirnames:
            if here / name not in keep:
                found[str(here / name)] = None
        for name in filenames:
            found[str(here / name)] = (here / name).read_bytes()
    return found


@st.composite
def loose_files(draw):
    kind = draw(st.sampled_from(["image", "image", "garbage", "zip"]))
    if kind == "image":
        data = draw(encoded_images(max_side=120))[0]
    else:
        data = draw(random_files)
    base = draw(st.sampled_from(["car_0007_cam1", "photo", "upload", "y" * 200]))
    return base + (".zip" if kind == "zip" else draw(st.sampled_from(SUFFIXES + [".txt"]))), data


@settings(FUZZ, max_examples=110)
@given(st.data(), zips(), st.lists(loose_files(), max_size=3))
@example(None, ([("y" * 300 + ".png", SMALL, zipfile.ZIP_STORED)], "clean"), [])  # was OSError: name too long
@example(None, ([("strip.png", _png(STRIP), zipfile.ZIP_STORED)], "clean"), [])  # was stored unreadable
@example(None, ([("car.png", _png(NOISE), zipfile.ZIP_DEFLATED)], "garbled 0"), [])  # was zlib.error
@example(None, ([("", SMALL, zipfile.ZIP_STORED), ("car.png", SMALL, zipfile.ZIP_STORED)], "clean"), [])
def test_items_from_uploads_writes_only_its_workdir(data, archive, loose):
    entries, damage = archive
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "outside").mkdir()
        (root / "uploads").mkdir()
        zip_path = root / "uploads" / "gallery.zip"
        written = _write_zip(zip_path, entries, root)
        zip_path.write_bytes(_damage(data, damage, zip_path.read_bytes()))
        paths = [zip_path]
        for i, (name, content) in enumerate(loose):
            (root / "uploads" / str(i)).mkdir()
            paths.append(root / "uploads" / str(i) / name)
            paths[-1].write_bytes(content)
        workdir = root / "a" / "b" / "work"
        before = _snapshot(root, workdir)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                items, skipped = items_from_uploads(paths, workdir)
        except ImageError:
            items = None
        assert _snapshot(root, workdir) == before, "a file was written outside the workdir"
        digests = {hashlib.sha1(d).hexdigest() for _, d in written}
        digests |= {hashlib.sha1(content).hexdigest() for name, content in loose if not name.endswith(".zip")}
        if items is None:
            assert not workdir.exists()
        else:
            assert items and all(isinstance(note, str) for note in skipped)
            stored = set()
            for item in items:
                assert item.path.resolve().is_relative_to(workdir.resolve()), item.path
                assert item.digest in digests
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # numpy's note on the NaN of an F-mode TIFF
                    assert load_image(item.path).mode == "RGB"
                stored.add(item.path)
            assert {p for p in workdir.rglob("*") if p.is_file()} == stored  # no stray files
        if damage == "clean":  # exactly the usable images, whoever they came from
            with zipfile.ZipFile(zip_path) as zf:
                expected = {hashlib.sha1(d).hexdigest() for info, (_, d) in zip(zf.infolist(), written)
                            if Path(info.filename).suffix.lower() in IMAGE_SUFFIXES and not info.is_dir()
                            and info.file_size <= MAX_COMPRESSION_RATIO * max(info.compress_size, 1)
                            and _usable(d)}
            expected |= {hashlib.sha1(content).hexdigest() for name, content in loose
                         if not name.endswith(".zip") and _usable(content)}
            assert {item.digest for item in items or []} == expected
