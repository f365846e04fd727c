"""Soft-gated multi-level wavelet decomposition (docs/architecture.md §6)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .cross_scale_ffn import CrossScaleFFN
from .gate import ChannelGate
from .selector import AdaptiveWaveletSelector

__all__ = ["SoftGatedWaveletDecomposition"]


class SoftGatedWaveletDecomposition(nn.Module):
    """``[B, C, T]`` → spectrum ``[B, (L+1)·C, T]``: detail rows of levels 1..L, then the final approximation."""

    def __init__(
        self,
        channels: int,
        max_level: int,
        kernel_size: int,
        wavelet_names: Sequence[str],
        separate_channels: bool = True,
        ffn_ratio: float = 4.0,
        ffn_dropout: float = 0.1,
    ):
        super().__init__()
        self.channels = channels
        self.max_level = max_level
        # shared by all levels
        self.selector = AdaptiveWaveletSelector(channels, kernel_size, wavelet_names, separate_channels)
        self.gate = ChannelGate(channels)  # shared by all levels
        self.sub_ffn = nn.ModuleList(CrossScaleFFN(2 * channels, ffn_ratio, ffn_dropout) for _ in range(max_level))
        self.res_scales = nn.ParameterList(nn.Parameter(torch.zeros(1)) for _ in range(max_level))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        C, T = self.channels, x.shape[-1]
        a, d = x, torch.zeros_like(x)
        earlier: list[torch.Tensor] = []  # level inputs s, time-major [B, T, 2C]
        bands: list[torch.Tensor] = []
        for ffn, rho in zip(self.sub_ffn, self.res_scales):
            a2, d2 = self.selector(a)  # [B, C, T2]
            # PyTorch 'nearest' (input index ⌊j·T2/T⌋), not 'nearest-exact', as in the reference.
            up = F.interpolate(torch.cat([a2, d2], dim=1), size=T, mode="nearest")  # [B, 2C, T]
            g = self.gate(a)  # [B, C, 1]
            s = torch.cat([a, d], dim=1) * g.repeat(1, 2, 1) + up * (1 - g).repeat(1, 2, 1)  # [B, 2C, T]
            memory = torch.cat(earlier, dim=1) if earlier else None  # [B, level·T, 2C]
            o = s + rho * ffn(s, memory)
            a, d = o[:, :C], o[:, C:]
            earlier.append(s.transpose(1, 2))  # the input s, not o (reference)
            bands.append(d)
        bands.append(a)
        return torch.cat(bands, dim=1)
