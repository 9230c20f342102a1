"""Built-in entries. The embedded default model lives in assets/default (registered once it is there),
installed with the package as zoo/assets/default."""
from __future__ import annotations

import json
from pathlib import Path

from .registry import LocalSource, ZooEntry, register_model

# an installed package carries assets/ as zoo/assets (pyproject.toml); a checkout (and `pip install -e .`)
# reads assets/ beside the package
_INSTALLED = Path(__file__).resolve().parent / "assets"
ASSETS = _INSTALLED if (_INSTALLED / "default" / "config.json").is_file() else Path(__file__).resolve().parents[1] / "assets"


def _from_folder(name: str, folder: Path) -> ZooEntry:
    """An entry whose metadata is the folder's own config.json (one source of truth)."""
    document = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    zoo = document.get("zoo", {})
    return ZooEntry(name=name, source=LocalSource(str(folder), zoo.get("sha256")),
                    description=zoo.get("description", ""), license=zoo.get("license", "unknown"),
                    training_data=zoo.get("training_data", ""), metrics=document.get("metrics", {}),
                    tags=tuple(zoo.get("tags", ())))


if (ASSETS / "default" / "config.json").is_file():
    register_model(_from_folder("default", ASSETS / "default"))
