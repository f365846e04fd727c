"""Run outputs on rank 0: TensorBoard scalars and images, ``training_history.json``, JSON results, summary."""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any


from ..fileio import scalars_of
from .outputs import write_result

__all__ = ["RunLogger"]



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

    def figure(self, tag: str, make: Callable[[], Any], step: int) -> None:
        """Log the matplotlib figure ``make()`` returns as an image (``make`` is not called on other ranks)."""
        if self._tb is not None:
            from ..figures import figure_to_array

            self._tb.add_image(tag, figure_to_array(make()), step, dataformats="CHW")

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
            write_result(self.dir / "training_history.json", self.history)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
