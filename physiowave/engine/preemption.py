"""Preemption: stop cleanly at the next optimizer step when the scheduler says the job must end.

SLURM (``#SBATCH --signal``), Kubernetes and most schedulers send a signal (SIGTERM, or SIGUSR1 as configured) some
time before they kill or requeue a job. :class:`Preemption` installs handlers for ``--preempt_signals`` during
training; a handler only records the signal. After every optimizer step all processes agree (an all-reduce of the
recorded signal, so a signal that reached one node stops every node at the same step); the engine then writes a
step checkpoint on rank 0 and every process exits with status ``128 + signal`` (143 for SIGTERM, 138 for SIGUSR1).
The same command with ``--resume auto`` continues from that step and ends with the uninterrupted run's weights.
"""
from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist

from .distributed import DistEnv

__all__ = ["DEFAULT_SIGNALS", "Preempted", "Preemption", "parse_signals", "exit_status", "dataloader_worker_init"]

DEFAULT_SIGNALS = "SIGTERM,SIGUSR1"
_UNCATCHABLE = {signal.SIGKILL, signal.SIGSTOP}
_ACTIVE: tuple[signal.Signals, ...] = ()  # the signals an installed Preemption handles (forked workers see it too)


def dataloader_worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of the engine's DataLoaders: while training handles preemption signals, a DataLoader
    worker ignores them. SLURM signals every process of a job, and torch's worker processes die of SIGTERM, which
    made the training process fail ("DataLoader worker exited unexpectedly") instead of stopping cleanly; the
    workers end with their loader, as always."""
    for sig in _ACTIVE:
        signal.signal(sig, signal.SIG_IGN)


def parse_signals(text: str) -> tuple[signal.Signals, ...]:
    """``--preempt_signals`` → signals: comma-separated names (``SIGTERM``, ``USR1``, any case) or ``none``.
    Raises ValueError naming the first name that is not a catchable signal."""
    if text.strip().lower() in ("", "none"):
        return ()
    found: list[signal.Signals] = []
    for raw in text.split(","):
        name = raw.strip().upper()
        name = name if name.startswith("SIG") else "SIG" + name
        sig = getattr(signal.Signals, name, None) if name.isidentifier() else None
        if sig is None or sig in _UNCATCHABLE:
            raise ValueError(f"{raw.strip()!r} is not a signal a process can catch (e.g. SIGTERM,SIGUSR1, or none)")
        if sig not in found:
            found.append(sig)
    return tuple(found)


def exit_status(signum: int) -> int:
    """The exit status of a run stopped by signal ``signum``: the shell's convention for it, 128 + signum."""
    return 128 + int(signum)


class Preempted(Exception):
    """Raised on every process once the checkpoint of a stopped run is written; ``status``: the exit status."""

    def __init__(self, signum: int, message: str, report: bool):
        super().__init__(message)
        self.signum, self.status, self.report = signum, exit_status(signum), report


class Preemption:
    """Signal handlers from :meth:`install` to :meth:`restore`; :meth:`agreed` says, the same on every process,
    whether any process received one. Once the run stops (:meth:`stopped`) the handlers stay until the process
    exits, so a second signal during the save or the exit is only recorded."""

    def __init__(self, signals: tuple[signal.Signals, ...], env: DistEnv):
        self.signals, self.env = signals, env
        self.received = 0  # the first signal this process received (0: none)
        self.count = 0  # how many it received
        self.at: float | None = None
        self.stopping = False
        self._previous: dict[signal.Signals, Any] = {}

    def install(self) -> "Preemption":
        global _ACTIVE
        if threading.current_thread() is not threading.main_thread():
            self.signals = ()  # Python delivers signals to the main thread only: nothing to handle from here
        _ACTIVE = self.signals
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
            signal.siginterrupt(sig, False)  # restart interrupted system calls (file writes, sockets) instead of EINTR
        return self

    def restore(self) -> None:
        """Put the previous handlers back (not once the run is stopping)."""
        global _ACTIVE
        if self.stopping:
            return
        _ACTIVE = ()
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Runs in the main thread between two bytecodes: record only (printing here could re-enter a print).
        self.count += 1
        if not self.received:
            self.received, self.at = signum, time.monotonic()

    def agreed(self) -> int:
        """The signal any process received (0: none), identical on every process. A collective when distributed:
        every process calls it at the same point (after the same optimizer step)."""
        if not self.signals:
            return 0
        if not self.env.distributed:
            return self.received
        device = self.env.device if self.env.device.type == "cuda" else torch.device("cpu")
        flag = torch.tensor([self.received], dtype=torch.int64, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def stopped(self, signum: int, checkpoint: Path, where: str) -> Preempted:
        """After rank 0 wrote ``checkpoint``: wait until every process is here (so none exits, and makes torchrun
        stop the others, before the file is complete) → the exception that ends the run on every process."""
        self.stopping = True
        if self.env.distributed:
            dist.barrier()
        name = signal.Signals(signum).name
        seen = (f"received {time.monotonic() - self.at:.1f} s ago" if self.at is not None
                else "received by another process")
        return Preempted(signum, f"{name} ({seen}): stopped {where}; {checkpoint} is written. Run the same command "
                                 f"with --resume auto to continue (exit status {exit_status(signum)})",
                         report=self.env.is_main)
