"""The RNN-HA model zoo: `from zoo import list_models, get_entry, load_model`."""
from .registry import (ENTRY_POINT_GROUP, CheckpointSource, HubSource, ImageNetSource, LocalSource, ZooEntry,
                       ZooError, get_entry, list_models, load_model, register_model, reload_plugins, resolve)
from . import entries  # noqa: F401  (registers the built-in models)

__all__ = ["list_models", "get_entry", "load_model", "register_model", "reload_plugins", "resolve", "ZooEntry",
           "LocalSource", "HubSource", "CheckpointSource", "ImageNetSource", "ZooError", "ENTRY_POINT_GROUP"]
