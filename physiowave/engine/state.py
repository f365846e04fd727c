"""Where a run stands (epoch, micro-batch, best so far, history) and the checkpoint that stores it exactly.

A checkpoint is written at the end of every epoch and, with ``--save_every_steps N``, every N optimizer steps
inside one; resuming from either continues with the same weights, optimizer state, learning rate, data order and
random numbers (dropout and masks are reseeded per micro-batch), so the run ends as an uninterrupted one would.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import __version__
from .errors import ConfigError
from .logger import to_jsonable
from .loop import Precision
from .schedule import LRSchedule
from .tasks import Task

__all__ = ["Progress", "make_checkpoint", "restore"]


@dataclass
class Progress:
    """The position of a run: ``micro`` micro-batches of epoch ``epoch`` are done (with metric ``sums`` over them)."""

    select_metric: str
    epoch: int = 0
    micro: int = 0
    global_step: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=dict)
    history: dict[str, list] | None = None

    def __post_init__(self) -> None:
        self.best = self.best or {"metric": self.select_metric}


def make_checkpoint(model: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule: LRSchedule, precision: Precision,
                    args: argparse.Namespace, task: Task, info: dict[str, Any], progress: Progress,
                    metrics: dict[str, Any], history: dict[str, list]) -> dict[str, Any]:
    """Everything a resume needs, plus what readers of the file want (configuration, metrics, data, task).
    ``epoch`` is the last completed epoch (-1 for none), ``next_epoch``/``micro_in_epoch`` the position."""
    val = metrics.get("val") or {}
    ckpt: dict[str, Any] = {
        "task": task.kind, "epoch": progress.epoch - 1 if progress.micro else progress.epoch,
        "next_epoch": progress.epoch if progress.micro else progress.epoch + 1, "micro_in_epoch": progress.micro,
        "epoch_sums": dict(progress.sums), "global_step": progress.global_step,
        "model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict(),
        "scheduler_state_dict": schedule.state_dict(),
        "scaler_state_dict": precision.scaler.state_dict() if precision.scaler else None,
        "metrics": to_jsonable(metrics), "args": to_jsonable(vars(args)), "model_config": to_jsonable(model.config),
        "best": dict(progress.best), "history": to_jsonable(history), "data": to_jsonable(info),
        "physiowave_version": __version__,
    }
    ckpt.update(to_jsonable(task.checkpoint_entries(val)) if val else {})
    return ckpt


def restore(ckpt: dict[str, Any], source: str, optimizer: torch.optim.Optimizer, schedule: LRSchedule,
            precision: Precision, select_metric: str) -> Progress:
    """Load the optimizer, schedule and scaler states of ``ckpt`` → the run's position."""
    try:
        optimizer.load_state_dict(ckpt["optimizer_state_dict"])
    except (KeyError, ValueError) as err:  # e.g. one parameter group: written before weight decay spared norms and filters
        raise ConfigError(f"--resume {source}: its optimizer state does not fit this version's ({err}); continue from "
                          "its weights with --pretrained_path instead") from err
    schedule.load_state_dict(ckpt["scheduler_state_dict"])
    if precision.scaler and ckpt.get("scaler_state_dict"):
        precision.scaler.load_state_dict(ckpt["scaler_state_dict"])
    return Progress(select_metric, epoch=int(ckpt["next_epoch"]), micro=int(ckpt.get("micro_in_epoch", 0)),
                    global_step=int(ckpt.get("global_step", 0)), sums=dict(ckpt.get("epoch_sums") or {}),
                    best=dict(ckpt.get("best") or {}), history=ckpt.get("history"))
