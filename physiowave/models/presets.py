"""Named model presets (timm-style ``create_model``). Values are those the published checkpoints were built with,
including their raw input and original objective (``LEGACY_CONFIG``): pass ``input_norm="rms", objective="bands"``
to start a new model of a preset's shape."""
from __future__ import annotations

from typing import Any

from .physiowave import LEGACY_CONFIG, PhysioWave

__all__ = ["PRESETS", "create_model"]

PRESETS: dict[str, dict[str, Any]] = {
    # ecg.pth: 12 leads at 500 Hz, 2048-sample windows; 14,425,641 parameters without a classification head.
    "ecg": dict(in_channels=12, max_level=3, wave_kernel_size=24, wavelet_names=["db4", "db6", "sym4", "coif2"],
                patch_size=64, embed_dim=384, depth=8, num_heads=12, mlp_ratio=4.0),
    # emg.pth: 8 channels (Myo armband), 1024-sample windows; 4,854,486 parameters without a classification head.
    "emg": dict(in_channels=8, max_level=3, wave_kernel_size=16,
                wavelet_names=["sym4", "sym5", "db6", "coif3", "bior4.4"], patch_size=64, embed_dim=256, depth=6,
                num_heads=8, mlp_ratio=4.0),
    # The training scripts' default shape when neither --model nor a checkpoint gives one (any channel count).
    "base": dict(in_channels=12, max_level=3, wave_kernel_size=16, wavelet_names=["db4", "db6", "sym4"],
                 patch_size=20, embed_dim=256, depth=8, num_heads=8, mlp_ratio=4.0),
    # The shape of ../shared/compat/ecg_small.pth: a small ECG model for tests and demos.
    "ecg_small": dict(in_channels=12, max_level=3, wave_kernel_size=24, wavelet_names=["db4", "db6", "sym4", "coif2"],
                      patch_size=64, embed_dim=64, depth=2, num_heads=4, mlp_ratio=4.0),
}


def create_model(name: str, **overrides: Any) -> PhysioWave:
    """Build preset ``name`` ("ecg", "emg", "ecg_small"); keyword overrides replace preset values."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: expected one of {sorted(PRESETS)}")
    return PhysioWave(**{**PRESETS[name], **LEGACY_CONFIG, **overrides})
