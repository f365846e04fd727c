"""Fine-tuning augmentation for one signal ``[C, T]``: Gaussian noise, amplitude scale, time stretch.

Defaults are the original release's classification augmentation (noise 0.01, scale and stretch in (0.9, 1.1),
probability 0.5). All randomness comes from the ``np.random.Generator`` passed in, so a dataset that seeds it
per (seed, epoch, index) gets the same augmentation whatever the worker count.
"""
from __future__ import annotations

import numpy as np

__all__ = ["Augmentation", "time_stretch"]


def time_stretch(x: np.ndarray, factor: float) -> np.ndarray:
    """Resample ``[C, T]`` linearly to ``round(T · factor)`` samples, then centre-crop or right zero-pad to ``T``.

    factor > 1 slows the signal down (features get longer), factor < 1 speeds it up.
    """
    if factor <= 0:
        raise ValueError(f"time_stretch: factor must be > 0, got {factor}")
    C, T = x.shape
    n = max(1, round(T * factor))
    # sample positions of the stretched signal, in units of the original samples
    grid = np.linspace(0.0, T - 1, n) if n > 1 else np.zeros(1)
    src = np.arange(T, dtype=np.float64)
    stretched = np.stack([np.interp(grid, src, row) for row in x]) if C else np.zeros((0, n))  # [C, n]
    if n >= T:
        start = (n - T) // 2
        return stretched[:, start:start + T]
    out = np.zeros((C, T), dtype=stretched.dtype)
    out[:, :n] = stretched
    return out


def _check_range(name: str, value: tuple[float, float]) -> tuple[float, float]:
    low, high = (float(v) for v in value)
    if not 0 < low <= high:
        raise ValueError(f"Augmentation: {name} must be (low, high) with 0 < low <= high, got {value}")
    return low, high


class Augmentation:
    """With probability ``prob``: add N(0, noise_std²) noise, multiply by one U(scale_range) factor and
    time-stretch by one U(stretch_range) factor (all three together). ``x [C, T]`` → float32 ``[C, T]``.

    The noise is absolute (not relative to the signal's scale), as in the original; inputs are expected to be
    normalised already.
    """

    def __init__(self, noise_std: float = 0.01, scale_range: tuple[float, float] = (0.9, 1.1),
                 stretch_range: tuple[float, float] = (0.9, 1.1), prob: float = 0.5) -> None:
        if noise_std < 0:
            raise ValueError(f"Augmentation: noise_std must be >= 0, got {noise_std}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"Augmentation: prob must be in [0, 1], got {prob}")
        self.noise_std = float(noise_std)
        self.scale_range = _check_range("scale_range", scale_range)
        self.stretch_range = _check_range("stretch_range", stretch_range)
        self.prob = float(prob)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``x [C, T]`` → augmented float32 ``[C, T]``; draws from ``rng`` in a fixed order."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"Augmentation: expected a [C, T] array, got shape {x.shape}")
        if rng.random() >= self.prob:
            return x.copy()
        noise = rng.normal(0.0, self.noise_std, size=x.shape) if self.noise_std > 0 else 0.0
        scale = rng.uniform(*self.scale_range)
        factor = rng.uniform(*self.stretch_range)
        y = (x + noise) * scale
        return time_stretch(y, factor).astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return (f"Augmentation(noise_std={self.noise_std}, scale_range={self.scale_range}, "
                f"stretch_range={self.stretch_range}, prob={self.prob})")
