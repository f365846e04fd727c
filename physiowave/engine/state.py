"""Where a run stands (epoch, micro-batch, best so far, history) and the checkpoint that stores it exactly.

A checkpoint is written at the end of every epoch and, with ``--save_every_steps N``, every N optimizer steps
inside one; resuming from either continues with the same weights, optimizer state, learning rate, data order and
random numbers (dropout and masks are reseeded per micro-batch), so the run ends as an uninterrupted one would.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .. import __version__
from .config import RunConfig
from .errors import ConfigError
from ..fileio import to_jsonable
from .loop import Precision
from .schedule import LRSchedule
from .tasks import Task

__all__ = ["Progress", "make_checkpoint", "restore", "check_same_trajectory"]

# Settings that decide the data order or the optimisation: a resumed run that changed one would end as no
# uninterrupted run could. (--epochs joins them for the schedules whose shape depends on the run's length.)
TRAJECTORY_FLAGS = ("batch_size", "grad_accumulation_steps", "seed", "lr", "min_lr", "weight_decay", "betas",
                    "grad_clip", "scheduler", "warmup_epochs", "T_0", "T_mult", "lr_step_size", "lr_gamma",
                    "plateau_patience", "label_fraction", "val_split_ratio", "label_smoothing", "mask_ratio",
                    "masking_strategy", "importance_ratio", "fusion_lr", "modality_dropout")
_LENGTH_SHAPED = ("cosine", "linear", "onecycle")


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


def make_checkpoint(model: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule: LRSchedule,
                    precision: Precision, args: RunConfig, task: Task, info: dict[str, Any],
                    progress: Progress, metrics: dict[str, Any], history: dict[str, list]) -> dict[str, Any]:
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
    # e.g. one parameter group: written before weight decay spared norms and filters
    except (KeyError, ValueError) as err:
        raise ConfigError(f"--resume {source}: its optimizer state does not fit this version's ({err}); continue from "
                          "its weights with --pretrained_path instead") from err
    schedule.load_state_dict(ckpt["scheduler_state_dict"])
    if precision.scaler and ckpt.get("scaler_state_dict"):
        precision.scaler.load_state_dict(ckpt["scaler_state_dict"])
    return Progress(select_metric, epoch=int(ckpt["next_epoch"]), micro=int(ckpt.get("micro_in_epoch", 0)),
                    global_step=int(ckpt.get("global_step", 0)), sums=dict(ckpt.get("epoch_sums") or {}),
                    best=dict(ckpt.get("best") or {}), history=ckpt.get("history"))


def check_same_trajectory(args: RunConfig, ckpt: dict[str, Any], info: dict[str, Any], source: str) -> None:
    """Refuse to resume ``ckpt`` with a setting or training file that changes the data order or the optimisation:
    one line naming the flag, the saved value and the new one."""
    saved = ckpt.get("args") or {}
    flags = [f for f in TRAJECTORY_FLAGS if f in saved and hasattr(args, f)]
    if saved.get("scheduler") in _LENGTH_SHAPED and "epochs" in saved:
        flags.append("epochs")
    for flag in flags:
        before, now = to_jsonable(saved[flag]), to_jsonable(getattr(args, flag))
        if before != now:
            raise ConfigError(f"--{flag} {_shown(now)}: the run being resumed ({source}) was saved with --{flag} "
                              f"{_shown(before)}; resuming with another value would change its data order or "
                              f"optimisation: pass --{flag} {_shown(before)}, or start a new run from its weights "
                              f"with --pretrained_path {source} and another --output_dir")
    stamps, now = (ckpt.get("data") or {}).get("train_file_stamps"), info.get("train_file_stamps") or []
    content = lambda stamp: (stamp["size"], stamp["sha256_ends"])  # noqa: E731  (a copy elsewhere is the same data)
    if stamps is not None and list(map(content, stamps)) != list(map(content, now)):
        changed = [n["name"] for s, n in zip(stamps, now) if content(s) != content(n)] or [n["name"] for n in now]
        raise ConfigError(f"--train_file(s): {', '.join(changed[:3])} is not the training data the run being resumed "
                          f"({source}) was saved with (size or content differ); resume with the same files, or start "
                          f"a new run from its weights with --pretrained_path {source}")


def _shown(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)
