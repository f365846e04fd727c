"""Learning-rate schedules for the training scripts, behind one small ``LRSchedule`` object.

The training loop calls ``step_batch()`` after every optimizer step and ``step_epoch(metric)`` at the end of every
epoch; each schedule acts on its own interval and ignores the other call.

Flags -> arguments of :func:`build_scheduler` (the base LR of each param group is the optimizer's ``lr``, i.e.
``--lr``, scaled per group if the caller built several groups):

======================  ================================================================================
``--scheduler``         ``name``, one of :data:`SCHEDULERS`
``--epochs``            ``epochs``; ``steps_per_epoch`` = optimizer steps per epoch (batches // accumulation)
``--warmup_epochs``     ``warmup_steps`` = warmup_epochs x steps_per_epoch (fine-tuning: 10 % of all steps if 0)
``--min_lr``            ``min_lr``: LR floor of cosine/linear, ``eta_min`` of cosine_restarts
``--T_0 / --T_mult``    ``T_0`` (in epochs) / ``T_mult`` of cosine_restarts
``--lr_step_size``      ``step_size`` (epochs) of step
``--lr_gamma``          ``gamma``: decay factor of step, reduction factor of plateau
``--plateau_patience``  ``patience`` (epochs) of plateau; ``mode`` is "min" for a loss, "max" for a score
======================  ================================================================================

Intervals:

* ``cosine`` (per step): linear warmup ``lr = base * (s+1) / warmup_steps``, then half-cosine from ``base`` to
  ``min_lr``, reached at ``epochs * steps_per_epoch`` and kept after.
* ``linear`` (per step): the same warmup, then a straight line to ``min_lr``.
* ``cosine_restarts`` (per epoch): ``CosineAnnealingWarmRestarts(T_0, T_mult, eta_min=min_lr)``, ``T_0`` in
  epochs.
* ``onecycle`` (per step): ``OneCycleLR`` with peak ``onecycle_max_lr_factor x base`` (10 × ``--lr``),
  ``pct_start=0.1``, momentum/beta1 cycled when the optimizer has one; steps past the end keep the final LR.
* ``step`` (per epoch): ``StepLR(step_size, gamma)``.
* ``plateau`` (per epoch, needs the validation metric): ``ReduceLROnPlateau(mode, factor=gamma, patience)``.
* ``none``: constant LR.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.optim import lr_scheduler as tls

__all__ = ["SCHEDULERS", "LRSchedule", "build_scheduler"]

SCHEDULERS = ("cosine", "cosine_restarts", "onecycle", "linear", "step", "plateau", "none")
_PER_STEP = {"cosine", "linear", "onecycle"}
_PER_EPOCH = {"cosine_restarts", "step", "plateau"}


def _warmup_decay(base: float, min_lr: float, warmup: int, total: int, shape: str) -> Callable[[int], float]:
    """LambdaLR multiplier for one param group: linear warmup, then cosine/linear decay from ``base`` to ``min_lr``."""
    span = max(1, total - warmup)

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / span)
        frac = 0.5 * (1.0 + math.cos(math.pi * progress)) if shape == "cosine" else 1.0 - progress
        return (min_lr + (base - min_lr) * frac) / base if base > 0 else 0.0

    return multiplier


class LRSchedule:
    """A torch LR scheduler plus the interval it is stepped on (``"step"``, ``"epoch"`` or none).

    Attributes:
        name: the scheduler name (one of :data:`SCHEDULERS`).
        scheduler: the wrapped ``torch.optim.lr_scheduler`` object, ``None`` for ``"none"``.
    """

    def __init__(self, name: str, optimizer: torch.optim.Optimizer, scheduler: Any | None,
                 max_steps: int | None = None) -> None:
        self.name = name
        self.optimizer = optimizer
        self.scheduler = scheduler
        self._max_steps = max_steps  # onecycle: OneCycleLR raises when stepped past its length

    def step_batch(self) -> None:
        """Call after every optimizer step."""
        if self.name not in _PER_STEP:
            return
        if self._max_steps is not None and self.scheduler.last_epoch >= self._max_steps:
            return
        self.scheduler.step()

    def step_epoch(self, metric: float | None = None) -> None:
        """Call at the end of every epoch; ``metric`` is the monitored validation value (used by ``plateau``)."""
        if self.name not in _PER_EPOCH:
            return
        if self.name == "plateau":
            if metric is not None:
                self.scheduler.step(float(metric))
            return
        self.scheduler.step()

    def get_last_lr(self) -> list[float]:
        """Current LR of every param group."""
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """``{"name", "scheduler"}``: the name (checked on load) and the torch scheduler's state (None for none)."""
        return {"name": self.name, "scheduler": None if self.scheduler is None else self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the schedule and write its current LRs into the optimizer, so resuming needs nothing else."""
        if state.get("name") != self.name:
            raise ValueError(f"scheduler state: saved for --scheduler {state.get('name')!r}, "
                             f"but this run uses {self.name!r}")
        if self.scheduler is None:
            return
        self.scheduler.load_state_dict(state["scheduler"])
        for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr(), strict=True):
            group["lr"] = float(lr)


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, *, epochs: int, steps_per_epoch: int,
                    warmup_steps: int = 0, min_lr: float = 0.0, T_0: int = 10, T_mult: int = 2,
                    step_size: int = 10, gamma: float = 0.1, patience: int = 5, mode: str = "min",
                    onecycle_max_lr_factor: float = 10.0) -> LRSchedule:
    """Build the ``--scheduler name`` schedule for ``optimizer`` (see the module docstring for each one)."""
    if name not in SCHEDULERS:
        raise ValueError(f"--scheduler: unknown {name!r}, expected one of {', '.join(SCHEDULERS)}")
    if epochs < 1 or steps_per_epoch < 1:
        raise ValueError(f"build_scheduler: expected epochs >= 1 and steps_per_epoch >= 1, "
                         f"got {epochs} and {steps_per_epoch}")
    if warmup_steps < 0:
        raise ValueError(f"--warmup_epochs: expected warmup_steps >= 0, got {warmup_steps}")
    total = epochs * steps_per_epoch
    base_lrs = [float(group["lr"]) for group in optimizer.param_groups]

    if name in ("cosine", "linear"):
        lambdas = [_warmup_decay(base, min_lr, warmup_steps, total, name) for base in base_lrs]
        return LRSchedule(name, optimizer, tls.LambdaLR(optimizer, lambdas))
    if name == "cosine_restarts":
        return LRSchedule(name, optimizer, tls.CosineAnnealingWarmRestarts(optimizer, T_0=T_0, T_mult=T_mult,
                                                                           eta_min=min_lr))
    if name == "onecycle":
        cycle_momentum = "momentum" in optimizer.defaults or "betas" in optimizer.defaults
        sched = tls.OneCycleLR(optimizer, max_lr=[onecycle_max_lr_factor * b for b in base_lrs], epochs=epochs,
                               steps_per_epoch=steps_per_epoch, pct_start=0.1, cycle_momentum=cycle_momentum)
        return LRSchedule(name, optimizer, sched, max_steps=total - 1)
    if name == "step":
        return LRSchedule(name, optimizer, tls.StepLR(optimizer, step_size=step_size, gamma=gamma))
    if name == "plateau":
        if mode not in ("min", "max"):
            raise ValueError(f"plateau mode: expected 'min' or 'max', got {mode!r}")
        return LRSchedule(name, optimizer, tls.ReduceLROnPlateau(optimizer, mode=mode, factor=gamma,
                                                                 patience=patience))
    return LRSchedule(name, optimizer, None)
