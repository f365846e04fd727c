"""PhysioWave: a multi-scale wavelet-transformer for physiological signals (arXiv 2506.10351)."""
from .checkpoint import load_model
from .models import PRESETS, PhysioWave, create_model

__version__ = "0.1.0"

__all__ = ["PhysioWave", "create_model", "load_model", "PRESETS", "__version__"]
