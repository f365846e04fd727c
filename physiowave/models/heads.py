"""Reconstruction and classification heads (architecture.md §9)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ReconstructionHead", "ClassificationHead", "POOLINGS", "hidden_sizes"]

POOLINGS = ("mean", "max", "first", "cls", "last", "attention")


def hidden_sizes(hidden: int | Sequence[int] | None, default: int) -> list[int]:
    """``None`` → ``[default]``; an int → ``[int]``; a sequence → a list."""
    if hidden is None:
        return [default]
    if isinstance(hidden, int):
        return [hidden]
    return [int(h) for h in hidden]


class ReconstructionHead(nn.Module):
    """Tokens ``[B, N, D]`` → patch predictions ``[B, N, P]``: [Linear, GELU, Dropout, LayerNorm] per hidden size, then Linear."""

    def __init__(self, dim: int, patch_size: int, hidden: Sequence[int] | None = None, dropout: float = 0.1):
        super().__init__()
        layers: list[nn.Module] = []
        prev = dim
        for h in hidden_sizes(hidden, dim):
            layers += [nn.Linear(prev, h), nn.GELU(), nn.Dropout(dropout), nn.LayerNorm(h)]
            prev = h
        self.head = nn.Sequential(*layers, nn.Linear(prev, patch_size))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(tokens)


def pool_tokens(tokens: torch.Tensor, pooling: str) -> torch.Tensor:
    """``[B, N, D]`` → ``[B, D]``. ``first``/``cls`` take token 0 (the model has no CLS token)."""
    if pooling == "mean":
        return tokens.mean(dim=1)
    if pooling == "max":
        return tokens.amax(dim=1)
    if pooling in ("first", "cls"):
        return tokens[:, 0]
    if pooling == "last":
        return tokens[:, -1]
    if pooling == "attention":  # softmax over tokens of each token's feature mean
        weights = torch.softmax(tokens.mean(dim=-1), dim=1)  # [B, N]
        return torch.einsum("bn,bnd->bd", weights.to(tokens.dtype), tokens)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


class ClassificationHead(nn.Module):
    """Tokens ``[B, N, D]`` → logits ``[B, K]``: pool → LayerNorm → [Linear, GELU, Dropout] per hidden size → Linear.

    Multi-label tasks use the same head with one logit per label (sigmoid outside the model).
    """

    def __init__(self, dim: int, num_classes: int, hidden: int | Sequence[int] | None = None, dropout: float = 0.1, pooling: str = "mean"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        layers: list[nn.Module] = [nn.LayerNorm(dim)]
        prev = dim
        for h in hidden_sizes(hidden, dim):
            layers += [nn.Linear(prev, h), nn.GELU(), nn.Dropout(dropout)]
            prev = h
        self.head = nn.Sequential(*layers, nn.Linear(prev, num_classes))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Pooled features ``[B, D]`` → logits ``[B, K]`` (the head without its pooling)."""
        return self.head(features)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.classify(pool_tokens(tokens, self.pooling))
