"""Channel gate of the soft-gated decomposition (docs/architecture.md §4)."""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ChannelGate", "head_count"]


def head_count(channels: int) -> int:
    """4 heads as in the reference; for C not divisible by 4 the largest of {2, 1} that divides C."""
    return next(h for h in (4, 2, 1) if channels % h == 0)


class ChannelGate(nn.Module):
    """``[B, C, T]`` → gate ``[B, C, 1]`` in (0, 1) from the time-mean of the input."""

    def __init__(self, channels: int):
        super().__init__()
        self.heads = head_count(channels)
        self.q = nn.Linear(channels, channels)
        self.k = nn.Linear(channels, channels)
        self.v = nn.Linear(channels, channels)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        B, C, _ = a.shape
        p = a.mean(dim=-1)  # [B, C]
        # Attention *between heads* over contiguous C/heads feature groups: a 4×4 matrix per sample (reference quirk).
        q = self.q(p).view(B, self.heads, C // self.heads)
        k = self.k(p).view(B, self.heads, C // self.heads)
        v = self.v(p).view(B, self.heads, C // self.heads)
        attn = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(C // self.heads), dim=-1)  # [B, h, h]
        return torch.sigmoid((attn @ v).reshape(B, C)).unsqueeze(-1)
