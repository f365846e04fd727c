"""Samplers: shuffled shards for training (resumable mid-epoch) and disjoint shards for evaluation."""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["TrainSampler", "EvalSampler"]


class TrainSampler(Sampler[int]):
    """Each rank's share of a per-epoch permutation of ``range(n)`` (seeded by ``(seed, epoch)``, like
    ``DistributedSampler``), truncated to a multiple of the world size so every rank takes the same number of steps.
    ``skip`` drops the first samples of the epoch, to resume a run at its position in the data.
    """

    def __init__(self, n: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        if n < world_size:
            raise ValueError(f"{n} training samples cannot be shared by {world_size} processes")
        self.n, self.rank, self.world_size, self.seed = n, rank, world_size, seed
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        return self.n // self.world_size - self.skip

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=g)[: (self.n // self.world_size) * self.world_size]
        return iter(order[self.rank:: self.world_size][self.skip:].tolist())


class EvalSampler(Sampler[int]):
    """Indices ``rank, rank + W, …``: every sample exactly once across ranks, no padding (shards may differ by one)."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, n, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)
