"""PhysioWave network modules: one concept per file, in the order of architecture.md."""
from .decoder import MaskedDecoder
from .physiowave import DECODERS, PhysioWave
from .presets import PRESETS, create_model

__all__ = ["PhysioWave", "PRESETS", "create_model", "MaskedDecoder", "DECODERS"]
