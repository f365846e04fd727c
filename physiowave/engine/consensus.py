"""Before the first step of a run over several processes (nodes): every process must see the same flags, the same
data files and the same checkpoint to resume, and the training set must have a sample for each process.

A node with another copy of the data, another command line, or an output folder that is not shared (so that only
rank 0 finds the checkpoint to resume) would otherwise train a different model in lockstep, or hang in the first
collective that no longer matches. :func:`check_ranks_agree` gathers a small description from every process (one
``all_gather_object``) and raises the same one-line :class:`ConfigError` on every process when one differs.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import torch.distributed as dist

from .config import RunConfig
from .distributed import DistEnv
from .errors import ConfigError
from ..fileio import to_jsonable

__all__ = ["describe", "check_ranks_agree", "check_world_size"]


def describe(args: RunConfig, info: dict[str, Any], resume_path: Path | None,
             resume: dict[str, Any] | None) -> dict[str, str]:
    """What must be the same on every process, as ``{what: value}`` (short strings)."""
    out = {f"--{k}": json.dumps(to_jsonable(v), sort_keys=True) for k, v in sorted(vars(args).items())}
    for split in ("train", "val", "test"):
        for path in info.get(f"{split}_files") or []:
            out[f"file {path}"] = f"{os.path.getsize(path)} bytes" if os.path.exists(path) else "absent"
    for key in ("train_samples", "channels", "length", "num_classes", "label_kind", "train_file_stamps"):
        if key in info:
            out[f"data {key}"] = json.dumps(to_jsonable(info[key]), sort_keys=True)
    if resume is None:
        out["checkpoint to resume"] = "none"
    else:
        out["checkpoint to resume"] = (f"{resume_path} (step {resume.get('global_step', 0)}, next epoch "
                                       f"{resume.get('next_epoch')}, micro-batch {resume.get('micro_in_epoch', 0)})")
    return out


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_ranks_agree(args: RunConfig, env: DistEnv, info: dict[str, Any], resume_path: Path | None,
                      resume: dict[str, Any] | None) -> None:
    """Raise one :class:`ConfigError`, the same on every process, naming the first thing a process sees otherwise
    than rank 0 (nothing to do in a single process)."""
    if not env.distributed:
        return
    mine = (socket.gethostname(), describe(args, info, resume_path, resume))
    every: list[Any] = [None] * env.world_size
    dist.all_gather_object(every, mine)
    host0, ref = every[0]
    for rank, (host, seen) in enumerate(every[1:], start=1):
        for key in sorted(set(ref) | set(seen)):
            a, b = ref.get(key, "not given"), seen.get(key, "not given")
            if a != b:
                hint = ("the output folder must be on a file system every node sees" if key == "checkpoint to resume"
                        else "every node must run the same command on the same files")
                raise ConfigError(f"rank {rank} (on {host}) and rank 0 (on {host0}) disagree on {key}: "
                                  f"{_short(b)} there, {_short(a)} on rank 0; {hint}")


def check_world_size(train_samples: int, env: DistEnv) -> str | None:
    """A training set smaller than the number of processes is an error; one that the processes do not divide is
    a note (each epoch leaves out ``n mod W`` samples, different ones every epoch) → the note, or None."""
    n, w = train_samples, env.world_size
    if n < w:
        raise ConfigError(f"{w} processes but {n} training samples: each process needs at least one; run fewer "
                          "processes (torchrun --nnodes/--nproc_per_node) or give more training data")
    if n % w:
        return (f"note: {n} training samples over {w} processes: each epoch leaves out {n % w} of them (different "
                "ones every epoch), so that every process takes the same number of steps")
    return None
