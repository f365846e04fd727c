"""AdamW with weight decay only where it belongs, and the learning-rate schedule of a run."""
from __future__ import annotations


import torch
from torch import nn

from .config import RunConfig
from .schedule import LRSchedule, build_scheduler
from .tasks import LOWER_IS_BETTER, Task

__all__ = ["decays", "build_optimizer", "build_schedule"]


def decays(name: str, param: nn.Parameter) -> bool:
    """Whether AdamW's weight decay applies: weight matrices yes; biases, norms, scales, mask tokens and the wavelet
    filter taps no (decay would pull the wavelet bands and the normalisations toward zero)."""
    return param.ndim >= 2 and "wavelet_filters" not in name and "mask_token" not in name


def build_optimizer(named_params: list[tuple[str, nn.Parameter]], args: RunConfig, task: Task,
                    modality_logits: nn.Parameter | None = None) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters with ``--betas`` (the recipe's unless given; else the task's),
    ``--weight_decay`` on the parameters :func:`decays` says, none on the rest. A fusion model's modality logits get
    their own group: ``--fusion_lr``,
    no weight decay (which would pull them to uniform)."""
    special = modality_logits if modality_logits is not None and modality_logits.requires_grad else None
    rest = [(n, p) for n, p in named_params if p is not special]
    groups = [{"params": [p for n, p in rest if decays(n, p)]},
              {"params": [p for n, p in rest if not decays(n, p)], "weight_decay": 0.0}]
    if special is not None:
        groups.append({"params": [special], "lr": args.fusion_lr, "weight_decay": 0.0})
    groups = [g for g in groups if g["params"]]
    # The fused kernel (one pass per step) is ~5× faster than the default on CPU; PyTorch has it on CPU and CUDA.
    fused = all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"]) or None
    return torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay, betas=_betas(args, task),
                             fused=fused)


def _betas(args: RunConfig, task: Task) -> tuple[float, float]:
    betas = args.betas
    return (float(betas[0]), float(betas[1])) if betas else task.betas


def build_schedule(args: RunConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> LRSchedule:
    """``--scheduler`` over ``--epochs`` × ``steps_per_epoch`` optimizer steps; ``--warmup_epochs 0`` warms up
    over the first 10 % of the steps."""
    total = args.epochs * steps_per_epoch
    warmup = args.warmup_epochs * steps_per_epoch if args.warmup_epochs else int(0.1 * total)
    mode = "min" if args.select_metric.removeprefix("record_") in LOWER_IS_BETTER else "max"
    return build_scheduler(args.scheduler, optimizer, epochs=args.epochs, steps_per_epoch=steps_per_epoch,
                           warmup_steps=min(warmup, total), min_lr=args.min_lr, T_0=args.T_0, T_mult=args.T_mult,
                           step_size=args.lr_step_size, gamma=args.lr_gamma, patience=args.plateau_patience, mode=mode)
