"""Where a run's time goes: wall seconds per phase, written to ``timing.json`` at the end of a run.

Phases: ``setup`` (output folder, data files opened and checked, model, optimizer and logger built), ``features`` (a
linear probe's frozen-encoder passes: validation and test features once, training features once or every epoch),
``data`` (the training loop waiting for its next batch: reading, cropping, augmenting), ``step`` (forward, backward,
optimizer; on CUDA it includes waiting for the GPU, since the loss is read back every step), ``eval`` (validation
passes), ``log`` (history, TensorBoard, figures), ``checkpoint`` (writing ``*.pth``), ``test`` (the best model on
the test files). ``other`` is the rest of the wall time of :func:`physiowave.engine.main.run` (importing torch and
the interpreter's start come before it and are not counted). A resumed run times only what it ran itself. A phase
timed inside another (a probe's features while the loop waits for data) counts once, as the inner phase.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

__all__ = ["PHASES", "PhaseClock"]

PHASES = ("setup", "features", "data", "step", "eval", "log", "checkpoint", "test")


class PhaseClock:
    """Sums of wall seconds per phase since it was made."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self.train_samples = 0  # training windows stepped over by this process

    def add(self, phase: str, seconds: float) -> None:
        if phase not in self.seconds:
            raise KeyError(f"unknown phase {phase!r}; known: {', '.join(PHASES)}")
        self.seconds[phase] += seconds

    def mark(self) -> tuple[float, float]:
        """Now, and the seconds timed so far: where :meth:`add_since` counts from."""
        return time.perf_counter(), sum(self.seconds.values())

    def add_since(self, phase: str, mark: tuple[float, float]) -> None:
        """Add the wall seconds since ``mark`` less those other phases were given meanwhile."""
        t0, timed = mark
        self.add(phase, time.perf_counter() - t0 - (sum(self.seconds.values()) - timed))

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        mark = self.mark()
        try:
            yield
        finally:
            self.add_since(name, mark)

    def report(self) -> dict[str, float]:
        """``{"wall_s", phase seconds…, "other", "train_samples", "train_samples_per_step_s",
        "train_samples_per_wall_s"}``: training windows per second of ``step`` time alone (what the network allows
        on this machine) and of the whole run."""
        wall = time.perf_counter() - self.start
        step, n = self.seconds["step"], self.train_samples
        return {"wall_s": wall, **self.seconds, "other": max(wall - sum(self.seconds.values()), 0.0),
                "train_samples": n, "train_samples_per_step_s": n / step if step > 0 else 0.0,
                "train_samples_per_wall_s": n / wall if wall > 0 else 0.0}

    def line(self) -> str:
        """``setup 2.1 s (3 %), step 50.2 s (80 %), …`` over the phases that took time."""
        wall = max(time.perf_counter() - self.start, 1e-9)
        parts = [(k, v) for k, v in self.seconds.items() if v >= 0.05]
        parts.append(("other", max(wall - sum(self.seconds.values()), 0.0)))
        return ", ".join(f"{k} {v:.1f} s ({100 * v / wall:.0f} %)" for k, v in parts)
