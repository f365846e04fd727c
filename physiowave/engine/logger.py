"""Run outputs on rank 0: TensorBoard scalars and images, ``training_history.json``, JSON results, summary."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import to_jsonable, write_json

__all__ = ["RunLogger", "write_json", "to_jsonable", "heatmap", "scalars_of"]


def scalars_of(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar entries of a metrics dict (drops confusion matrices, per-class tables, thresholds)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, np.generic)) and not isinstance(v, bool)}


def heatmap(values: np.ndarray, scale: int = 1) -> np.ndarray:
    """2-D array → uint8 RGB image ``[3, H·scale, W·scale]`` (blue = low, yellow = high) for TensorBoard."""
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    lo, hi = (v[finite].min(), v[finite].max()) if finite.any() else (0.0, 1.0)
    t = np.where(finite, (v - lo) / (hi - lo if hi > lo else 1.0), 0.0)
    rgb = np.stack([t, 0.2 + 0.6 * t, 1.0 - t])  # a simple blue → yellow ramp
    rgb = np.repeat(np.repeat(rgb, scale, axis=1), scale, axis=2)
    return (rgb * 255).astype(np.uint8)


class RunLogger:
    """TensorBoard writer and epoch history; a no-op on ranks other than 0."""

    def __init__(self, output_dir: str | Path, enabled: bool, history: dict[str, list] | None = None):
        self.dir = Path(output_dir)
        self.enabled = enabled
        self.history: dict[str, list] = history or {}
        self._tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.dir / "tensorboard"))

    def scalars(self, prefix: str, values: dict[str, Any], step: int) -> None:
        if self._tb is None:
            return
        for k, v in scalars_of(values).items():
            if math.isfinite(v):
                self._tb.add_scalar(f"{prefix}/{k}", v, step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        if self._tb is not None:
            self._tb.add_image(tag, image, step, dataformats="CHW")

    def text(self, tag: str, text: str, step: int = 0) -> None:
        if self._tb is not None:
            self._tb.add_text(tag, text, step)

    def record_epoch(self, values: dict[str, Any]) -> None:
        """Append one epoch's scalars to the history and rewrite ``training_history.json``."""
        n = len(next(iter(self.history.values()), []))
        for k, v in values.items():
            self.history.setdefault(k, [None] * n).append(v)
        for k in self.history:
            if len(self.history[k]) < n + 1:
                self.history[k].append(None)
        if self.enabled:
            write_json(self.dir / "training_history.json", self.history)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
