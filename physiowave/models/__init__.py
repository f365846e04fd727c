"""PhysioWave network modules: one concept per file, in the order of docs/architecture.md."""
from .decoder import MaskedDecoder
from .fusion import FUSIONS, FusionModel
from .physiowave import DECODERS, LEGACY_CONFIG, PhysioWave
from .presets import PRESETS, create_model

__all__ = ["PhysioWave", "FusionModel", "FUSIONS", "PRESETS", "create_model", "MaskedDecoder", "DECODERS",
           "LEGACY_CONFIG"]
