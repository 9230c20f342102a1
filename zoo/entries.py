"""Built-in entries. The embedded models live in assets/default and assets/two_level (each registered
once it is there), installed with the package as zoo/assets/."""
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


# the three-level default (vehicle type -> car model -> identity, calibrated) and the two-level model it
# replaced (car model -> identity), whose re-id is the best of the shipped models
for _name, _folder in (("default", "default"), ("two-level", "two_level")):
    if (ASSETS / _folder / "config.json").is_file():
        register_model(_from_folder(_name, ASSETS / _folder))
