"""MAE-style transformer decoder for masked pretraining (``decoder="transformer"``).

Reference: He et al., "Masked Autoencoders Are Scalable Vision Learners" (2021). The encoder sees only the
visible tokens; this light decoder places them back at their positions in the full ``F × T/P`` grid, fills the
other positions with a learned mask token, adds a 2-D sin-cos code and predicts the P samples of every patch.
"""
from __future__ import annotations

import torch
from torch import nn

from .embedding import sincos_2d, table_dtype
from .transformer import TransformerEncoder, init_weights

__all__ = ["MaskedDecoder", "decoder_heads"]


def decoder_heads(decoder_dim: int) -> int:
    """Attention heads of a decoder of width ``decoder_dim``: head dim 32 when it divides, else one head."""
    return decoder_dim // 32 if decoder_dim % 32 == 0 else 1


class MaskedDecoder(nn.Module):
    """Visible encoder tokens ``[B, V, D]`` → patch predictions for all N tokens ``[B, N, P]``.

    Linear D→Dd, scatter into ``[B, N, Dd]`` over a learned mask token, + 2-D sin-cos code (the encoder's layout,
    width Dd), ``depth`` rotary pre-norm blocks over positions 0..N−1, LayerNorm, Linear Dd→P.
    """

    def __init__(self, embed_dim: int, patch_size: int, decoder_dim: int, depth: int, num_heads: int,
                 mlp_ratio: float = 4.0, dropout: float = 0.1):
        super().__init__()
        if decoder_dim < 1 or depth < 1:
            raise ValueError(f"decoder_dim and decoder_depth must be ≥ 1, got {decoder_dim} and {depth}")
        self.embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        # blocks + final LayerNorm
        self.transformer = TransformerEncoder(decoder_dim, depth, num_heads, mlp_ratio, dropout)
        self.pred = nn.Linear(decoder_dim, patch_size)
        self._pos_cache: dict[tuple, torch.Tensor] = {}
        self.apply(init_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    def positional_embedding(self, rows: int, cols: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``[rows·cols, Dd]`` 2-D sin-cos code, cached per shape, device and dtype."""
        key = (rows, cols, device, dtype)
        if key not in self._pos_cache:
            # cast first: MPS has no float64
            self._pos_cache[key] = sincos_2d(rows, cols, self.mask_token.shape[-1]).to(dtype).to(device)
        return self._pos_cache[key]

    def forward(self, visible: torch.Tensor, ids_keep: torch.Tensor, num_tokens: int, rows: int,
                cols: int) -> torch.Tensor:
        """visible ``[B, V, D]`` at flat positions ``ids_keep`` long ``[B, V]`` of a ``rows × cols`` grid with
        ``num_tokens`` = rows·cols tokens → predictions ``[B, N, P]``."""
        B, V, _ = visible.shape
        if rows * cols != num_tokens:
            raise ValueError(f"rows·cols = {rows}·{cols} does not equal num_tokens {num_tokens}")
        if ids_keep.shape != (B, V) or V > num_tokens:
            raise ValueError(f"ids_keep must be [B, V] = {(B, V)} with V ≤ num_tokens {num_tokens}, "
                             f"got {tuple(ids_keep.shape)}")
        x = self.embed(visible)  # [B, V, Dd]
        Dd = x.shape[-1]
        full = self.mask_token.to(x.dtype).expand(B, num_tokens, Dd)
        x = torch.scatter(full, 1, ids_keep.unsqueeze(-1).expand(-1, -1, Dd), x)  # [B, N, Dd]
        x = x + self.positional_embedding(rows, cols, x.device, table_dtype(x.dtype))
        return self.pred(self.transformer(x))
