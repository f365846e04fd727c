"""Cross-scale channel-aggregation FFN (docs/architecture.md §5).

Per level: a 1×1 → depthwise → GELU FFN over the 2C channels of the gated (approximation, detail)
signal, plus multi-head attention whose queries are the FFN output at every time step and whose
keys/values are the inputs of all earlier levels. The attention runs through the fused
``F.scaled_dot_product_attention`` kernel, so the T × (level·T) score matrix is never stored.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dropout import Dropout
from .gate import head_count

__all__ = ["ChannelAggregationFFN", "CrossScaleAttention", "CrossScaleFFN"]


class _LayerScale(nn.Module):
    """Learnable per-channel scale ``[1, h, 1, 1]`` (original key ``sigma.scale``)."""

    def __init__(self, channels: int, init: float):
        super().__init__()
        self.scale = nn.Parameter(torch.full((1, channels, 1, 1), init))


class ChannelAggregationFFN(nn.Module):
    """``[B, E, T]`` → ``[B, E, T]``. Parameters keep the reference's 2-D conv shapes (input height 1)."""

    def __init__(self, channels: int, ratio: float = 4.0, dropout: float = 0.1):
        super().__init__()
        hidden = int(channels * ratio)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.decomp = nn.Conv2d(hidden, 1, 1)
        self.sigma = _LayerScale(hidden, 1e-5)
        self.drop = Dropout(dropout)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        u = F.conv1d(s, self.fc1.weight.flatten(2), self.fc1.bias)  # [B, h, T]
        # The input height is 1, so the 3×3 kernel's top and bottom rows only ever see zero padding (reference quirk).
        u = F.conv1d(u, self.dw.weight[:, :, 1], self.dw.bias, padding=1, groups=u.shape[1])
        u = self.drop(F.gelu(u))
        t = F.gelu(F.conv1d(u, self.decomp.weight.flatten(2), self.decomp.bias))  # [B, 1, T]
        u = u - t
        u = u + self.sigma.scale.flatten(2) * u
        return self.drop(F.conv1d(u, self.fc2.weight.flatten(2), self.fc2.bias))


class CrossScaleAttention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameter layout (packed in-projection), fused kernel."""

    def __init__(self, dim: int, num_heads: int = 4):
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """query ``[B, T, E]``, memory ``[B, S, E]`` → ``[B, T, E]``."""
        B, T, E = query.shape
        w_q, w_kv = self.in_proj_weight.split([E, 2 * E])
        b_q, b_kv = self.in_proj_bias.split([E, 2 * E])
        q = F.linear(query, w_q, b_q).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # [B, h, T, E/h]
        # 2×[B, h, S, E/h]
        k, v = F.linear(memory, w_kv, b_kv).unflatten(-1, (2, self.num_heads, -1)).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(B, T, E))


class CrossScaleFFN(nn.Module):
    """One level's FFN: ``base(s) + τ · attention(base(s), earlier inputs)``; ``s`` is ``[B, E, T]``."""

    def __init__(self, channels: int, ratio: float = 4.0, dropout: float = 0.1):
        super().__init__()
        self.base = ChannelAggregationFFN(channels, ratio, dropout)
        self.attn = CrossScaleAttention(channels, head_count(channels))  # 4 heads unless 2C is not divisible by 4
        self.scale = nn.Parameter(torch.tensor(0.1))

    def forward(self, s: torch.Tensor, earlier: torch.Tensor | None = None) -> torch.Tensor:
        """s ``[B, E, T]``; earlier ``[B, S, E]`` (inputs of the earlier levels, time-major) or None at level 0."""
        out = self.base(s)
        if earlier is None:
            # level 0: no earlier scale, so `attn` and `scale` never get input (dead parameters, as in the reference)
            return out
        attended = self.attn(out.transpose(1, 2), earlier)  # [B, T, E]
        return out + self.scale * attended.transpose(1, 2)
