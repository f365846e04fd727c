"""The encoder MLP (Linear → GELU → Dropout → Linear → Dropout) with a memory-lean training path.

Plain autograd keeps four hidden-sized tensors per block (GELU input, a float dropout mask, the second
Linear's input, ...). In training, :class:`_MlpFunction` keeps only the pre-activation and one-byte
dropout masks and recomputes GELU in backward; the function computed is the same.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Mlp", "drop_mask"]

_BITS = 15  # dropout masks are drawn from 15 random bits per element


def drop_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """Bool mask of dropped elements, each True with probability p (on CPU p is rounded up to a multiple of 2⁻¹⁵).

    On CPU, ``bernoulli_`` costs ~5 ns per element; slicing 15-bit draws out of int32 random words is ~4× cheaper.
    """
    if device.type != "cpu":
        return torch.empty(shape, dtype=torch.bool, device=device).bernoulli_(p)
    n = shape.numel()
    words = torch.empty((n + 1) // 2, dtype=torch.int32).random_()  # uniform in [0, 2³¹): 31 random bits
    halves = words.view(torch.int16)[:n].bitwise_and_((1 << _BITS) - 1)  # two 15-bit uniforms per word
    threshold = math.ceil(p * (1 << _BITS))
    return (halves < threshold).view(shape)


class _MlpFunction(torch.autograd.Function):
    """y = drop(drop(gelu(x W1ᵀ + b1)) W2ᵀ + b2); saves x, the pre-activation and bool masks.

    Masks are applied with ``masked_fill_`` (multiplying by a bool tensor would first convert it to a float copy).
    """

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, p: float):
        scale = 1.0 / (1.0 - p) if p > 0 else 1.0
        h = F.linear(x, w1, b1)  # [..., H]
        a = F.gelu(h)
        drop1 = drop2 = None
        if p > 0:
            drop1 = drop_mask(h.shape, p, h.device)
            a.masked_fill_(drop1, 0.0).mul_(scale)
        y = F.linear(a, w2, b2)  # [..., D]
        if p > 0:
            drop2 = drop_mask(y.shape, p, y.device)
            y.masked_fill_(drop2, 0.0).mul_(scale)
        ctx.save_for_backward(x, h, w1, w2, drop1, drop2)
        ctx.scale = scale
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, h, w1, w2, drop1, drop2 = ctx.saved_tensors
        scale = ctx.scale
        if drop2 is not None:
            grad_y = grad_y.masked_fill(drop2, 0.0).mul_(scale)
        a = F.gelu(h)  # recomputed instead of stored
        if drop1 is not None:
            a.masked_fill_(drop1, 0.0).mul_(scale)
        gy2 = grad_y.reshape(-1, grad_y.shape[-1])  # [M, D]
        grad_w2 = gy2.t() @ a.reshape(-1, a.shape[-1])
        grad_b2 = gy2.sum(0)
        grad_a = grad_y @ w2  # [..., H]
        if drop1 is not None:
            grad_a.masked_fill_(drop1, 0.0).mul_(scale)
        grad_h = torch.ops.aten.gelu_backward(grad_a, h)
        gh2 = grad_h.reshape(-1, grad_h.shape[-1])  # [M, H]
        grad_w1 = gh2.t() @ x.reshape(-1, x.shape[-1])
        grad_b1 = gh2.sum(0)
        return grad_h @ w1, grad_w1, grad_b1, grad_w2, grad_b2, None


class Mlp(nn.Sequential):
    """``[B, N, D]`` → ``[B, N, D]``. Children at indices 0 and 3 are the Linears (original keys ``mlp.0``, ``mlp.3``)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.1):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout))
        self.p = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and torch.is_grad_enabled()):
            return super().forward(x)
        fc1, fc2 = self[0], self[3]
        params = (fc1.weight, fc1.bias, fc2.weight, fc2.bias)
        device = x.device.type
        # Under autocast, run in the autocast dtype, as autocast would run the Linears.
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        with torch.autocast(device, enabled=False):
            return _MlpFunction.apply(x.to(dtype), *(t.to(dtype) for t in params), self.p)
