"""Pre-norm transformer encoder with rotary attention (docs/architecture.md §8). Layout after timm / nanoGPT."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .embedding import table_dtype
from .mlp import Mlp
from .rope import RotaryEmbedding, apply_rotary

__all__ = ["Attention", "Block", "TransformerEncoder", "init_weights"]


def init_weights(module: nn.Module) -> None:
    """Linear: truncated normal (std 0.02), bias 0; LayerNorm: 1 / 0. Use with ``apply``.

    Convolutions keep their own init (docs/architecture.md §9.4).
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class Attention(nn.Module):
    """Multi-head self-attention with RoPE on q and k, fused SDPA kernel. ``[B, N, D]`` → ``[B, N, D]``."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        # unbind, not slicing: its backward stacks the three gradients in one copy instead of zero-filling and adding
        q, k, v = (t.transpose(1, 2) for t in self.qkv(x).view(B, N, 3, self.num_heads, D // self.num_heads).unbind(2))
        # [B, H, N, hd]; scale (D/H)^−½
        out = F.scaled_dot_product_attention(apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v)
        return self.proj(out.transpose(1, 2).reshape(B, N, D))


class Block(nn.Module):
    """``x + Attn(LN1(x))`` then ``x + MLP(LN2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.1):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden, dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin)
        return x + self.mlp(self.norm2(x))


class TransformerEncoder(nn.Module):
    """``depth`` blocks and a final LayerNorm; ``[B, N, D]`` → ``[B, N, D]``."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.1):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.rope = RotaryEmbedding(dim // num_heads)
        self.grad_checkpointing = False  # recompute each block in backward: far less memory, ~30% more time

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``[B, N, D]``; ``positions`` long ``[B, N]``: each token's flat index in the full sequence (RoPE
        rotates token i by ``positions[b, i]``·θ), or None for 0..N−1 (cached tables)."""
        if positions is None:
            cos, sin = self.rope.tables(x.shape[1], x.device, table_dtype(x.dtype))
        else:
            if positions.shape != x.shape[:2]:
                raise ValueError(f"positions must be [B, N] = {tuple(x.shape[:2])} for tokens {tuple(x.shape)}, "
                                 f"got {tuple(positions.shape)}")
            # [B, 1, N, hd/2]: broadcast over heads
            cos, sin = (t.unsqueeze(1) for t in self.rope.at(positions, table_dtype(x.dtype)))
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, cos, sin, use_reentrant=False)  # RNG state is replayed: same dropout masks
            else:
                x = block(x, cos, sin)
        return self.norm(x)
