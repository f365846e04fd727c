"""Processes and devices: torchrun's environment → rank, device and process group.

``RANK``/``LOCAL_RANK``/``WORLD_SIZE`` come from torchrun (global rank for the process group, local rank for the
GPU, so multi-node runs are correct), or from SLURM's variables when ``srun`` starts one task per GPU; without
them the run is a single process. NCCL on CUDA, gloo otherwise.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from ..device import pick_device

__all__ = ["derive_seed", "DistEnv", "launcher_env", "init_distributed", "cleanup", "seed_everything",
           "gather_by_index", "all_reduce_sums", "barrier"]


@dataclass(frozen=True)
class DistEnv:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1




def launcher_env(environ: dict[str, str] | None = None) -> tuple[int, int, int]:
    """(rank, local rank, world size): torchrun's ``RANK``/``LOCAL_RANK``/``WORLD_SIZE``; else, for a script that
    ``srun`` started as several tasks, SLURM's ``SLURM_PROCID``/``SLURM_LOCALID``/``SLURM_STEP_NUM_TASKS`` (with
    ``MASTER_ADDR``/``MASTER_PORT`` for the rendezvous, which the job script sets); else one process."""
    e = os.environ if environ is None else environ
    tasks = int(e.get("SLURM_STEP_NUM_TASKS", 1))
    if "WORLD_SIZE" in e or tasks <= 1 or "SLURM_PROCID" not in e:
        return int(e.get("RANK", 0)), int(e.get("LOCAL_RANK", 0)), int(e.get("WORLD_SIZE", 1))
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not e.get(name)]
    if missing:
        raise RuntimeError(f"srun started {tasks} tasks of this script but {' and '.join(missing)} is not set: export "
                           "MASTER_ADDR=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1) "
                           "MASTER_PORT=29500 before srun, or start one torchrun per node (slurm/common.sh, "
                           "docs/cluster.md)")
    return int(e["SLURM_PROCID"]), int(e.get("SLURM_LOCALID", 0)), tasks


def init_distributed(device: str | None = None, expected_world_size: int | None = None) -> DistEnv:
    """Read torchrun's (or srun's) variables, pick the device, start the process group when there is more than one
    process."""
    rank, local_rank, world_size = launcher_env()
    if "WORLD_SIZE" not in os.environ and world_size == 1 and expected_world_size and expected_world_size > 1:
        raise RuntimeError(f"--world_size {expected_world_size} needs several processes: launch with "
                           f"torchrun --nproc_per_node={expected_world_size} (plain python runs one process)")
    if expected_world_size and expected_world_size != world_size and rank == 0:
        print(f"note: --world_size {expected_world_size} differs from torchrun's WORLD_SIZE={world_size}; "
              f"using {world_size}")
    env = DistEnv(rank, local_rank, world_size, pick_device(device, local_rank))
    if env.distributed and not dist.is_initialized():
        backend = "nccl" if env.device.type == "cuda" else "gloo"
        kwargs = {"device_id": env.device} if backend == "nccl" else {}
        try:
            dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size, **kwargs)
        except (RuntimeError, ValueError) as err:  # e.g. DistNetworkError: an address that cannot be reached
            where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise RuntimeError(f"rank {rank} of {world_size} could not join the process group at {where}: "
                               f"{first}") from err
    return env


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def derive_seed(*key: int) -> int:
    """A 32-bit seed from a tuple key, e.g. (seed, rank, epoch, step): independent streams per key."""
    return int(np.random.SeedSequence(list(key)).generate_state(1)[0])


def seed_everything(*key: int) -> None:
    """Seed torch (all devices), NumPy and ``random`` from a tuple key, e.g. (seed, rank, step)."""
    import random

    seed = derive_seed(*key)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def all_reduce_sums(values: dict[str, float], env: DistEnv) -> dict[str, float]:
    """Sum each value over processes (float64)."""
    if not env.distributed or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_comm_device(env))
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def _comm_device(env: DistEnv) -> torch.device:
    return env.device if env.device.type == "cuda" else torch.device("cpu")


def gather_by_index(indices: np.ndarray, arrays: dict[str, np.ndarray], env: DistEnv) -> dict[str, np.ndarray]:
    """Collect per-sample outputs from every process and order them by dataset index → arrays over the whole set."""
    if env.distributed:
        loaded: list = [None] * env.world_size
        dist.all_gather_object(loaded, (indices, arrays))
        indices = np.concatenate([ix for ix, _ in loaded])
        keys = sorted({k for _, a in loaded for k in a})  # an empty shard contributes no arrays
        arrays = {k: np.concatenate([a[k] for _, a in loaded if k in a]) for k in keys}
    order = np.argsort(indices, kind="stable")
    if len(np.unique(indices)) != len(indices):
        raise RuntimeError("evaluation saw a sample twice: the evaluation sampler must shard without padding")
    return {k: v[order] for k, v in arrays.items()}
