"""Typed errors of the library. Each is a ValueError whose message says what is wrong and what to
change, in one line; command lines print it as `error: ...` and exit with status 2, never a traceback."""
from __future__ import annotations

__all__ = ["DataError", "ConfigError"]


class DataError(ValueError):
    """A dataset that is missing, malformed or inconsistent; the message names the file and the fix."""


class ConfigError(ValueError):
    """A training recipe that cannot run: an unknown key, a bad value, a missing file it names."""
