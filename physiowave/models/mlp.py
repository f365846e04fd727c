"""The encoder MLP (Linear → GELU → Dropout → Linear → Dropout) with a lean training path.

Plain autograd keeps four hidden-sized tensors per block (GELU input, a float dropout mask, the second
Linear's input, ...) and passes over the hidden activations once more for each dropout. In training,
:class:`_MlpFunction` keeps only the pre-activation and the second dropout's one-byte keep mask, recomputes GELU in
backward, applies both dropout scales to the (small) second weight matrix instead of the activations, and folds the
first dropout into the pre-activation: a dropped unit's pre-activation is set to −10⁴, where GELU and its derivative
are exactly 0 (in fp32, bf16 and fp16), so that dropout needs no mask of its own. The function computed is the same.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dropout import Dropout, keep_mask

__all__ = ["Mlp"]


DROPPED = -1e4  # a dropped unit's pre-activation: GELU(−1e4) = GELU′(−1e4) = 0 exactly


class _MlpFunction(torch.autograd.Function):
    """y = k2 ⊙ (gelu(h′) W2ᵀ s² + b2 s) with h′ = where(k1, x W1ᵀ + b1, −10⁴), keep masks k1, k2 and s = 1/(1−p);
    saves x, h′ and the bool mask k2. Equal to drop(drop(gelu(x W1ᵀ + b1)) W2ᵀ + b2)."""

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, p: float):
        s = 1.0 / (1.0 - p)  # 1 without dropout
        h = F.linear(x, w1, b1)  # [..., H]
        if p > 0:
            h = torch.where(keep_mask(h.shape, p, h.device), h, DROPPED)
        y = F.linear(F.gelu(h), w2 * (s * s), b2 * s)  # [..., D]
        keep2 = keep_mask(y.shape, p, y.device) if p > 0 else None
        if keep2 is not None:
            y.mul_(keep2.to(y.dtype))
        ctx.save_for_backward(x, h, w1, w2, keep2)
        ctx.s = s
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, h, w1, w2, keep2 = ctx.saved_tensors
        s = ctx.s
        if keep2 is not None:
            grad_y = grad_y * keep2.to(grad_y.dtype)
        a = F.gelu(h)  # recomputed instead of stored; 0 at dropped units
        gy2 = grad_y.reshape(-1, grad_y.shape[-1])  # [M, D]
        grad_w2 = (gy2.t() @ a.reshape(-1, a.shape[-1])).mul_(s * s)
        grad_b2 = gy2.sum(0).mul_(s)
        grad_a = grad_y @ (w2 * (s * s))  # [..., H]
        grad_h = torch.ops.aten.gelu_backward(grad_a, h)  # 0 at dropped units
        gh2 = grad_h.reshape(-1, grad_h.shape[-1])  # [M, H]
        grad_w1 = gh2.t() @ x.reshape(-1, x.shape[-1])
        grad_b1 = gh2.sum(0)
        return grad_h @ w1, grad_w1, grad_b1, grad_w2, grad_b2, None


class Mlp(nn.Sequential):
    """``[B, N, D]`` → ``[B, N, D]``. Children at indices 0 and 3 are the Linears (original keys ``mlp.0``,
    ``mlp.3``)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.1):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), Dropout(dropout), nn.Linear(hidden, dim), Dropout(dropout))
        self.p = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and torch.is_grad_enabled()) or torch.compiler.is_compiling():
            return super().forward(x)  # inference; under torch.compile the plain layers fuse better than the lean path
        fc1, fc2 = self[0], self[3]
        params = (fc1.weight, fc1.bias, fc2.weight, fc2.bias)
        device = x.device.type
        # Under autocast, run in the autocast dtype, as autocast would run the Linears.
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        with torch.autocast(device, enabled=False):
            return _MlpFunction.apply(x.to(dtype), *(t.to(dtype) for t in params), self.p)
