"""Built-in entries. The embedded default model lives in assets/default (registered once it is there),
installed with the package as zoo/assets/default."""
from __future__ import annotations

from pathlib import Path

from .registry import LocalSource, ZooEntry, register_model

# an installed package carries assets/ as zoo/assets (pyproject.toml); a checkout (and `pip install -e .`)
# reads assets/ beside the package
_INSTALLED = Path(__file__).resolve().parent / "assets"
ASSETS = _INSTALLED if (_INSTALLED / "default" / "config.json").is_file() else Path(__file__).resolve().parents[1] / "assets"


def _from_folder(name: str, folder: Path) -> ZooEntry:
    """An entry whose metadata is the folder's own config.json (one source of truth, read by the one
    folder-format module)."""
    from rnnha.pretrained import read_folder_config

    info = read_folder_config(folder)[1]
    return ZooEntry(name=name, source=LocalSource(str(folder), info.sha256), description=info.description,
                    license=info.license, training_data=info.training_data, metrics=info.metrics,
                    tags=tuple(info.tags))


if (ASSETS / "default" / "config.json").is_file():
    register_model(_from_folder("default", ASSETS / "default"))
