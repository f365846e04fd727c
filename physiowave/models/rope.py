"""Rotary position embedding on interleaved feature pairs (docs/architecture.md §8).

Reference: Su et al., "RoFormer" (2021). Position = flat token index n; pair (2j, 2j+1) of the first
``rope_dim`` features of each head is rotated by n·θ_j with θ_j = 10000^(−2j/rope_dim).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["RotaryEmbedding", "apply_rotary"]

_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}  # dtype of a rotation


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of the first ``2·cos.shape[-1]`` features of ``x`` ``[..., N, d]``.

    cos, sin: ``[N, rope_dim/2]``, or any shape broadcastable to ``x[..., :rope_dim/2]`` (e.g. ``[B, 1, N, rope_dim/2]``
    for per-sample positions). Returns a tensor of x's dtype.

    Pair (e, o) read as the complex number e + i·o is multiplied by cos + i·sin: one pass over x, where the same
    formula in real arithmetic takes six (3× slower on CPU); the products are the same.
    """
    rd = 2 * cos.shape[-1]
    rot, rest = x[..., :rd], x[..., rd:]
    # Real arithmetic for MPS versions without complex multiply, the TorchScript ONNX export, and torch.compile
    # (which fuses the six passes and cannot trace the layout checks below).
    if x.device.type == "mps" or torch.jit.is_tracing() or torch.compiler.is_compiling():
        even, odd = rot.unflatten(-1, (-1, 2)).unbind(-1)
        out = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2).to(x.dtype)
    else:
        work = rot if rot.dtype in (torch.float32, torch.float64) else rot.float()  # no complex bfloat16
        if work.stride(-1) != 1 or work.storage_offset() % 2 or any(s % 2 for s in work.stride()[:-1]):
            work = work.contiguous()
        turned = torch.view_as_complex(work.unflatten(-1, (-1, 2))) * torch.complex(cos, sin).to(_COMPLEX[work.dtype])
        out = torch.view_as_real(turned).flatten(-2).to(x.dtype)
    return torch.cat([out, rest], dim=-1) if rest.shape[-1] else out


class RotaryEmbedding(nn.Module):
    """Holds the cos/sin tables, built once per (length, device, dtype) and cached (not in the state dict).

    :meth:`at` gives the tables for arbitrary positions (a subset of tokens, e.g. the visible ones in MAE pretraining).
    """

    def __init__(self, rope_dim: int, base: float = 10000.0):
        super().__init__()
        if rope_dim % 2:
            raise ValueError(f"rope_dim must be even, got {rope_dim}")
        self.rope_dim = rope_dim
        self.base = base
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._thetas: dict[torch.device, torch.Tensor] = {}  # θ on each device that :meth:`at` works on

    def _theta(self) -> torch.Tensor:
        """θ_j = base^(−2j/rope_dim), float64 ``[rope_dim/2]``."""
        return self.base ** (-torch.arange(0, self.rope_dim, 2, dtype=torch.float64) / self.rope_dim)

    def tables(self, length: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin ``[length, rope_dim/2]``."""
        key = (length, device, dtype)
        if key not in self._cache:
            angles = torch.arange(length, dtype=torch.float64)[:, None] * self._theta()[None, :]
            # cast before moving: MPS has no float64
            self._cache[key] = (angles.cos().to(dtype).to(device), angles.sin().to(dtype).to(device))
        return self._cache[key]

    def at(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin ``[*positions.shape, rope_dim/2]`` for integer ``positions`` (e.g. ``[B, V]`` flat token indices).

        Row n equals row n of :meth:`tables` (same float64 arithmetic, then cast), built on the positions' device
        (on CPU for MPS, which has no float64) without a host sync or, after the first call, a host-to-device copy
        (θ is cached per device), so a CUDA graph can capture it.
        """
        device = positions.device
        work = torch.device("cpu") if device.type == "mps" else device
        if work not in self._thetas:
            self._thetas[work] = self._theta().to(work)
        angles = positions.to(work, torch.float64)[..., None] * self._thetas[work]
        return angles.cos().to(dtype).to(device), angles.sin().to(dtype).to(device)
