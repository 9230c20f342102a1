"""Two-camera folders such as khoa-vehicle-reid: `<type>_<id>_cam<k>.jpg` anywhere under a root,
optionally restricted by a list file of names. Coarse level: type; camera: k; vehicle: (type, id)."""
from __future__ import annotations

import re
from pathlib import Path

from .base import DataError, Sample

_NAME = re.compile(r"(?P<type>[A-Za-z]+)_(?P<id>\d+)_cam(?P<cam>\d+)\.(jpe?g|png|webp|bmp)", re.I)


def parse_name(name: str) -> dict[str, str] | None:
    match = _NAME.fullmatch(name)
    if not match:
        return None
    kind = match["type"].lower()
    return {"type": kind, "vehicle": f"{kind}_{match['id']}", "camera": match["cam"]}


def load(root: str | Path, list_file: str | Path | None = None) -> list[Sample]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder of <type>_<id>_cam<k>.jpg images")
    files = {p.name: p for p in sorted(root.rglob("*")) if parse_name(p.name)}
    if list_file is not None:
        list_path = Path(list_file) if Path(list_file).is_absolute() else root / list_file
        if not list_path.is_file():
            raise DataError(f"list file {list_path} is missing")
        names = list_path.read_text().split()
        unknown = [n for n in names if n not in files]
        if unknown:
            raise DataError(f"{list_path.name} names {len(unknown)} images not under {root}, "
                            f"e.g. {unknown[0]!r}")
    else:
        names = sorted(files)
    if not names:
        raise DataError(f"no <type>_<id>_cam<k> images under {root}")
    samples = []
    for name in names:
        parsed = parse_name(name)
        samples.append(Sample(files[name], {"type": parsed["type"], "vehicle": parsed["vehicle"]},
                              camera=parsed["camera"]))
    return samples
