"""rnnha/uploads.py: a zip's size is judged from its end record before zipfile parses its directory."""
from __future__ import annotations

import io
import struct
import zipfile

import pytest
from PIL import Image

from rnnha.images import ImageError
from rnnha.uploads import MAX_ZIP_ENTRIES, _zip_directory, zip_images


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), "red").save(buffer, "PNG")
    return buffer.getvalue()


def test_too_many_entries_are_refused_unparsed_zip64_too(tmp_path):
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as z:  # over 65,535 entries: zipfile writes zip64 end records
        for i in range(70_000):
            z.writestr(f"{i}.txt", b"")
    assert _zip_directory(path)[0] == 70_000
    with pytest.raises(ImageError, match="70,000 entries"):
        list(zip_images(path))


def test_a_directory_larger_than_its_count_claims_is_refused(tmp_path):
    path = tmp_path / "liar.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("car.png", png())
        for i in range(200):  # 12 MB of directory in 200 entries: names of 60,000 characters
            z.writestr(f"{'n' * 60_000}{i}.txt", b"")
    data = bytearray(path.read_bytes())
    at = data.rfind(b"PK\x05\x06")
    data[at + 8:at + 12] = struct.pack("<HH", 1, 1)  # says: one entry
    path.write_bytes(bytes(data))
    assert _zip_directory(path)[0] == 1 and _zip_directory(path)[1] > MAX_ZIP_ENTRIES * 1024
    with pytest.raises(ImageError, match="MiB of directory"):
        list(zip_images(path))


def test_a_member_holding_zip_signatures_is_read(tmp_path):
    """Only the 20 bytes before the end record can be a zip64 locator: member data may hold its bytes."""
    path = tmp_path / "tricky.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("car.png", png())
        z.writestr("odd.bmp", b"PK\x06\x07" * 8)
    names = [name for name, _ in zip_images(path)]
    assert names == ["car.png", "odd.bmp"]
