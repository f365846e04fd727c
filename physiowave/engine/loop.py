"""One training epoch and one evaluation pass (the engine's two loops; MAE ``engine_*`` in spirit).

Randomness is a function of ``(seed, rank, epoch, micro-batch)``: dropout and masks are reseeded per micro-batch,
so a run resumed from a checkpoint continues exactly as the uninterrupted one would have.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from .distributed import DistEnv, all_reduce_sums, derive_seed, gather_by_index, seed_everything
from .errors import NonFiniteLossError
from .tasks import Task
from .timing import PhaseClock

__all__ = ["Precision", "train_one_epoch", "evaluate", "move_batch"]


@dataclass
class Precision:
    """``--use_amp``: bf16 autocast where supported, else fp16 with a GradScaler; otherwise fp32."""

    device: torch.device
    dtype: torch.dtype | None  # None = fp32
    scaler: torch.amp.GradScaler | None

    @classmethod
    def from_flag(cls, use_amp: bool, device: torch.device) -> "Precision":
        if not use_amp:
            return cls(device, None, None)
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return cls(device, torch.float16, torch.amp.GradScaler("cuda"))
        return cls(device, torch.bfloat16, None)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast + GradScaler"}[self.dtype]


def move_batch(batch: Any, device: torch.device) -> Any:
    """Tensors, and tuples/lists/dicts of them (fusion inputs are ``{modality: [B, C, T]}``), onto ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_batch(v, device) for k, v in batch.items()}
    return type(batch)(move_batch(b, device) for b in batch)


def _generator(device: torch.device, *key: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derive_seed(*key))


def _check_finite(value: float, env: DistEnv, what: str, where: str) -> None:
    bad = not math.isfinite(value)
    if env.distributed:  # every rank must stop together, or the others hang in the next all-reduce
        flag = torch.tensor([float(bad)], device=env.device if env.device.type == "cuda" else "cpu")
        dist.all_reduce(flag)
        bad = flag.item() > 0
    if bad:
        raise NonFiniteLossError(f"non-finite {what} ({value}) at {where}, before the optimizer step")


def _optimizer_step(optimizer: torch.optim.Optimizer, schedule: Any, precision: Precision, params: list[nn.Parameter],
                    grad_clip: float, env: DistEnv, where: str) -> None:
    """Unscale (fp16), clip (stopping on a non-finite norm), step, zero the gradients, advance the per-step schedule."""
    if precision.scaler:
        precision.scaler.unscale_(optimizer)
    if grad_clip > 0:
        norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
        if precision.scaler is None:
            _check_finite(norm, env, "gradient norm", where)
    if precision.scaler:
        precision.scaler.step(optimizer)
        precision.scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    schedule.step_batch()


def train_one_epoch(net: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, schedule: Any, task: Task,
                    env: DistEnv, precision: Precision, *, epoch: int, seed: int, accum: int, grad_clip: float,
                    num_micro: int, start_micro: int = 0, sums: dict[str, float] | None = None,
                    params: list[nn.Parameter] | None = None,
                    on_step: Callable[[int, dict[str, float]], None] | None = None,
                    desc: str = "train", clock: PhaseClock | None = None) -> dict[str, float]:
    """Train over ``loader`` (already positioned at micro-batch ``start_micro`` of ``num_micro``) → averaged metrics.

    Every ``accum`` micro-batches (and once for a final partial group) the gradients are clipped and the optimizer
    and per-step schedule advance; DDP synchronises gradients only on the last micro-batch of a group.
    ``on_step(micro_done, sums)`` is called after each optimizer step with this process's metric sums so far
    (``sums``: those of the micro-batches before ``start_micro``, from a mid-epoch checkpoint). ``clock`` gets the
    seconds spent waiting for batches (``data``) and computing (``step``; ``on_step``'s checkpoints excluded).
    """
    net.train()
    params = params if params is not None else [p for p in net.parameters() if p.requires_grad]
    sums = dict(sums or {})
    samples, t0 = 0, time.perf_counter()
    bar = tqdm(total=num_micro, initial=start_micro, desc=desc, disable=not env.is_main, dynamic_ncols=True,
               leave=False)
    optimizer.zero_grad(set_to_none=True)
    micro = start_micro
    clock = clock or PhaseClock()
    ready = time.perf_counter()
    try:
        for _, batch in loader:
            got = time.perf_counter()
            clock.add("data", got - ready)
            group_start = (micro // accum) * accum
            group_size = min(accum, num_micro - group_start)
            last_in_group = micro - group_start == group_size - 1
            seed_everything(seed, env.rank, epoch, micro)
            gen = _generator(env.device, seed, env.rank, epoch, micro, 1)
            batch = move_batch(batch, env.device)
            sync = contextlib.nullcontext() if last_in_group or not hasattr(net, "no_sync") else net.no_sync()
            with sync:
                with precision.autocast():
                    loss, stats = task.train_step(net, batch, gen)
                _check_finite(stats["loss_sum"], env, "loss", f"epoch {epoch + 1}, micro-batch {micro + 1}")
                scaled = loss / group_size
                (precision.scaler.scale(scaled) if precision.scaler else scaled).backward()
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            micro += 1
            samples += int(stats["count"])
            clock.train_samples += int(stats["count"])
            if last_in_group:
                _optimizer_step(optimizer, schedule, precision, params, grad_clip, env,
                                f"epoch {epoch + 1}, micro-batch {micro}")
            clock.add("step", time.perf_counter() - got)
            if last_in_group and on_step is not None:
                on_step(micro, sums)
            if env.is_main:
                bar.update(1)
                bar.set_postfix(loss=f"{stats['loss_sum'] / max(stats['count'], 1):.4f}",
                                lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                                sps=f"{samples * env.world_size / (time.perf_counter() - t0):.1f}")
            ready = time.perf_counter()
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0
    sums = all_reduce_sums(sums, env)
    out = task.train_metrics(sums) if sums else {}
    out["samples_per_sec"] = samples * env.world_size / elapsed if elapsed > 0 else 0.0
    return out


@torch.no_grad()
def evaluate(net: nn.Module, loader: Iterable, task: Task, env: DistEnv, precision: Precision, *, seed: int,
             desc: str = "eval") -> dict[str, np.ndarray]:
    """Per-sample outputs over the whole set: each process evaluates its shard, results are gathered in index order."""
    net.eval()
    indices: list[np.ndarray] = []
    parts: dict[str, list[np.ndarray]] = {}
    for idx, batch in tqdm(loader, desc=desc, disable=not env.is_main, dynamic_ncols=True, leave=False):
        gen = _generator(env.device, seed, 7919, int(idx[0]))  # masks fixed per batch start: comparable across epochs
        with precision.autocast():
            out = task.eval_step(net, move_batch(batch, env.device), gen)
        indices.append(np.asarray(idx))
        for k, v in out.items():
            parts.setdefault(k, []).append(v)
    local_idx = np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64)
    local = {k: np.concatenate(v) for k, v in parts.items()}  # {} for an empty shard, which still joins the gather
    return gather_by_index(local_idx, local, env)
