"""Bounds on a PhysioWave architecture, checked before anything is built.

A configuration can come from a file someone else wrote (``config.json`` beside a checkpoint, a checkpoint's
``args``): a depth of ten million or a string where a number belongs must end in one line naming the field, not
in an exhausted memory or a ``TypeError`` deep inside ``nn.Linear``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["INT_LIMITS", "MAX_PARAMETERS", "check_architecture", "estimated_parameters"]

# field → (lowest, highest) for the integer fields; generous: the released presets use a small fraction of each
INT_LIMITS: dict[str, tuple[int, int]] = {
    "in_channels": (1, 4096), "max_level": (0, 12), "wave_kernel_size": (2, 1024), "embed_dim": (1, 8192),
    "depth": (1, 128), "num_heads": (1, 256), "num_classes": (1, 100_000), "decoder_depth": (0, 64),
    "decoder_dim": (1, 8192), "patch_size": (1, 100_000), "head_hidden_dim": (1, 65_536),
}
FLOAT_LIMITS: dict[str, tuple[float, float]] = {"mlp_ratio": (0.0, 64.0), "dropout": (0.0, 1.0),
                                                "head_dropout": (0.0, 1.0)}
MAX_PARAMETERS = 2_000_000_000  # 8 GB of fp32 weights
_OPTIONAL = ("num_classes", "decoder_dim", "head_hidden_dim")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(field: str, value: Any) -> None:
    values = list(value) if field in ("patch_size", "head_hidden_dim") and isinstance(value, Sequence) \
        and not isinstance(value, str) else [value]
    if len(values) > 16 or (not values and field != "head_hidden_dim"):  # [] head_hidden_dim: a linear head
        raise ValueError(f"{field} {value!r}: expected an integer or a list of up to 16 integers")
    lo, hi = INT_LIMITS[field]
    for v in values:
        if not _is_int(v):
            raise ValueError(f"{field} {value!r}: expected an integer, got {type(v).__name__}")
        if not lo <= v <= hi:
            raise ValueError(f"{field} {v}: outside its limits [{lo}, {hi}]")


def estimated_parameters(config: Mapping[str, Any]) -> int:
    """About how many parameters ``config`` builds (encoder, decoder and head blocks; exact within a few %)."""
    d, ratio = int(config.get("embed_dim", 384)), float(config.get("mlp_ratio", 4.0))
    block = lambda width: (4 + 2 * ratio) * width * width  # noqa: E731  (attention + MLP weights)
    width = config.get("decoder_dim") or d // 2
    decoder = int(config.get("decoder_depth", 2)) * block(width) if config.get("decoder") == "transformer" else d * d
    return int(int(config.get("depth", 8)) * block(d) + decoder)


def check_architecture(config: Mapping[str, Any]) -> None:
    """Raise ValueError (one line naming the field, its value and its limits) for a value of the wrong type, out of
    bounds, or an architecture above :data:`MAX_PARAMETERS`."""
    for field in INT_LIMITS:
        if field in config and not (field in _OPTIONAL and config[field] is None):
            _check_int(field, config[field])
    for field, (lo, hi) in FLOAT_LIMITS.items():
        if field in config:
            value = config[field]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{field} {value!r}: expected a number")
            if not lo <= value <= hi:
                raise ValueError(f"{field} {value}: outside its limits [{lo:g}, {hi:g}]")
    n = estimated_parameters(config)
    if n > MAX_PARAMETERS:
        raise ValueError(f"embed_dim {config.get('embed_dim')} × depth {config.get('depth')}: "
                         f"about {n:.2e} parameters, above the limit {MAX_PARAMETERS:.0e}")
