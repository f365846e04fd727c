"""Reconstruction and classification heads (docs/architecture.md §9)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .dropout import Dropout

__all__ = ["ReconstructionHead", "ClassificationHead", "POOLINGS", "hidden_sizes", "pool_tokens", "pooled_size"]

POOLINGS = ("bands", "mean", "max", "first", "cls", "last", "attention")


def hidden_sizes(hidden: int | Sequence[int] | None, default: int) -> list[int]:
    """``None`` → ``[default]``; an int → ``[int]``; a sequence → a list."""
    if hidden is None:
        return [default]
    if isinstance(hidden, int):
        return [hidden]
    return [int(h) for h in hidden]


class ReconstructionHead(nn.Module):
    """Tokens ``[B, N, D]`` → patch predictions ``[B, N, P]``: [Linear, GELU, Dropout, LayerNorm] per hidden size, then
    Linear."""

    def __init__(self, dim: int, patch_size: int, hidden: Sequence[int] | None = None, dropout: float = 0.1):
        super().__init__()
        layers: list[nn.Module] = []
        prev = dim
        for h in hidden_sizes(hidden, dim):
            layers += [nn.Linear(prev, h), nn.GELU(), Dropout(dropout), nn.LayerNorm(h)]
            prev = h
        self.head = nn.Sequential(*layers, nn.Linear(prev, patch_size))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(tokens)


def pooled_size(dim: int, pooling: str, rows: int) -> int:
    """Width of :func:`pool_tokens`' output for tokens of width ``dim`` in ``rows`` band rows."""
    return dim * rows if pooling == "bands" else dim


def pool_tokens(tokens: torch.Tensor, pooling: str, rows: int = 1) -> torch.Tensor:
    """``[B, N, D]`` → ``[B, D]``, or ``[B, rows·D]`` for ``bands``: the mean over time of each of the ``rows`` band
    rows (one wavelet band of one channel; tokens are row-major), concatenated, so the features keep which channel
    and band carry what. ``first``/``cls`` take token 0 (the model has no CLS token)."""
    if pooling == "bands":
        B, N, D = tokens.shape
        if N % rows:
            raise ValueError(f"bands pooling: {N} tokens do not form {rows} band rows")
        return tokens.reshape(B, rows, N // rows, D).mean(dim=2).flatten(1)
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

    ``rows``: the band rows of the token grid, for ``bands`` pooling (features ``[B, rows·D]``; hidden size still D).

    Multi-label tasks use the same head with one logit per label (sigmoid outside the model).
    """

    def __init__(self, dim: int, num_classes: int, hidden: int | Sequence[int] | None = None, dropout: float = 0.1,
                 pooling: str = "mean", rows: int = 1):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling, self.rows = pooling, rows
        prev = pooled_size(dim, pooling, rows)
        layers: list[nn.Module] = [nn.LayerNorm(prev)]
        for h in hidden_sizes(hidden, dim):
            layers += [nn.Linear(prev, h), nn.GELU(), Dropout(dropout)]
            prev = h
        self.head = nn.Sequential(*layers, nn.Linear(prev, num_classes))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Pooled features ``[B, D]`` → logits ``[B, K]`` (the head without its pooling)."""
        return self.head(features)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.classify(pool_tokens(tokens, self.pooling, self.rows))
