"""Patch tokens and sin-cos positional codes (docs/architecture.md §7).

References: MAE ``util/pos_embed.py`` (2-D sin-cos tables), "Attention Is All You Need" (1-D code).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PatchEmbed", "sincos_1d", "sincos_2d", "interleaved_sincos", "PositionalEmbedding1d", "table_dtype"]


def table_dtype(activation_dtype: torch.dtype) -> torch.dtype:
    """dtype of position tables (sin-cos, RoPE) for activations of ``activation_dtype``: fp32 under half precision."""
    return torch.float32 if activation_dtype in (torch.float16, torch.bfloat16) else activation_dtype


def sincos_1d(positions: torch.Tensor, width: int) -> torch.Tensor:
    """``[N]`` positions → ``[N, width]``: all sines, then all cosines, ω_k = 10000^(−k/(width/2)).

    An odd width gets one trailing zero feature.
    """
    half = width // 2
    omega = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64) / (width / 2))
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    code = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return F.pad(code, (0, width - 2 * half))


def sincos_2d(rows: int, cols: int, dim: int) -> torch.Tensor:
    """Code for a ``rows × cols`` token grid in row-major order → ``[rows·cols, dim]`` (float64).

    The first dim//2 features encode the row (frequency band), the remaining dim − dim//2 the column (time patch).
    """
    r = torch.arange(rows).repeat_interleave(cols)
    c = torch.arange(cols).repeat(rows)
    return torch.cat([sincos_1d(r, dim // 2), sincos_1d(c, dim - dim // 2)], dim=1)


def interleaved_sincos(length: int, dim: int) -> torch.Tensor:
    """``[length, dim]``: feature 2k = sin(n·ω_k), 2k+1 = cos(n·ω_k), ω_k = 10000^(−2k/dim) (float64)."""
    n = torch.arange(length, dtype=torch.float64)[:, None]
    omega = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    code = torch.zeros(length, dim, dtype=torch.float64)
    code[:, 0::2] = torch.sin(n * omega)
    code[:, 1::2] = torch.cos(n * omega)[:, : dim // 2]
    return code


class PositionalEmbedding1d(nn.Module):
    """The reference's ``1d`` positions: a fixed, non-trainable ``[1, max_len, D]`` table in the state dict."""

    def __init__(self, dim: int, max_len: int = 5000):
        super().__init__()
        self.pos_embed = nn.Parameter(interleaved_sincos(max_len, dim).float()[None], requires_grad=False)

    def forward(self, num_tokens: int) -> torch.Tensor:
        """→ ``[N, D]`` for the flat token indices 0..N−1."""
        if num_tokens <= self.pos_embed.shape[1]:
            return self.pos_embed[0, :num_tokens]
        # Past max_len the reference switches to the concatenated sines-then-cosines code (a different function; kept).
        positions = torch.arange(num_tokens)
        return sincos_1d(positions, self.pos_embed.shape[-1]).to(self.pos_embed.dtype).to(self.pos_embed.device)


class PatchEmbed(nn.Module):
    """Spectrum ``[B, F, T]`` → tokens ``[B, F·(T/P), D]`` (row-major: all time patches of row 0, then row 1, …).

    Keeps the reference's Conv2d(1, D, (1, P), stride (1, P)) parameters; computed as one matrix product.
    """

    def __init__(self, patch_size: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=(1, patch_size), stride=(1, patch_size))
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        patches = spec.unflatten(-1, (-1, self.patch_size)).flatten(1, 2)  # [B, F·T/P, P]
        tokens = F.linear(patches, self.proj.weight.flatten(1), self.proj.bias)  # [B, N, D]
        return F.gelu(self.norm(tokens))
