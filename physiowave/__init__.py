"""PhysioWave: a multi-scale wavelet-transformer for physiological signals (arXiv 2506.10351)."""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = ["PhysioWave", "FusionModel", "create_model", "load_model", "from_pretrained", "save_pretrained", "PRESETS",
           "__version__"]

# Imported on first use, so `physiowave.preprocess` (and its worker processes) never load torch.
_LAZY = {"PhysioWave": ".models", "FusionModel": ".models", "create_model": ".models", "PRESETS": ".models",
         "load_model": ".loading", "from_pretrained": ".loading", "save_pretrained": ".loading"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
