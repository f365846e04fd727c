"""The two errors the scripts report as one line (exit status 1) instead of a traceback."""
from __future__ import annotations

__all__ = ["ConfigError", "NonFiniteLossError"]


class ConfigError(ValueError):
    """A flag, file, checkpoint or output folder that cannot be used, found before any compute is spent (or a write
    that failed): reported as one line naming the flag or file and what was expected."""


class NonFiniteLossError(RuntimeError):
    """A NaN/inf loss or gradient norm: the run stops before the optimizer step corrupts the weights."""
