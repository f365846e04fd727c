"""Dropout with cheap masks: one byte per element, drawn 15 random bits at a time on CPU.

On CPU ``nn.Dropout`` draws each element with ``bernoulli_`` (~5 ns per element) and keeps a float mask; slicing
15-bit uniforms out of int32 random words is ~6× cheaper and the kept mask is one byte. The function is the same
(an element is zeroed with probability p, the rest scaled by 1/(1−p)), with p rounded up to a multiple of 2⁻¹⁵ on CPU.
Masks are applied by multiplying with the mask converted to the activation's dtype: ``masked_fill_`` and a
multiply by a bool or byte tensor are 3-5× slower on CPU (the latter converts the mask behind the scenes anyway).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Dropout", "keep_mask"]

_BITS = 15


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """Bool mask of ``shape``, True where an element is kept (probability 1 − p)."""
    if device.type != "cpu":
        return torch.empty(shape, dtype=torch.bool, device=device).bernoulli_(1.0 - p)
    n = shape.numel()
    words = torch.empty((n + 1) // 2, dtype=torch.int32, device=device).random_()  # uniform in [0, 2³¹): 31 random bits
    halves = words.view(torch.int16)[:n].bitwise_and_((1 << _BITS) - 1)  # two 15-bit uniforms per word
    threshold = math.ceil(p * (1 << _BITS))
    return (halves >= threshold).view(shape)


class _DropoutFunction(torch.autograd.Function):
    """``x ⊙ keep / (1 − p)``, saving only the bool mask."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x * keep.to(x.dtype).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return grad * keep.to(grad.dtype).mul_(ctx.scale), None, None


class Dropout(nn.Dropout):
    """Drop-in ``nn.Dropout`` (same module, same place in a state dict) with :func:`keep_mask` masks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.p >= 1:
            return x * 0
        if torch.compiler.is_compiling():
            return F.dropout(x, self.p, True)  # torch.compile generates its own fused mask
        return _DropoutFunction.apply(x, keep_mask(x.shape, self.p, x.device), 1.0 / (1.0 - self.p))
