"""Adaptive wavelet selector (docs/architecture.md §3).

Every wavelet's filter pair is applied to the input; per-sample softmax weights computed from the
time-mean of the input mix the approximations and the details.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .wavelet import WaveletFilterPair

__all__ = ["AdaptiveWaveletSelector"]


class AdaptiveWaveletSelector(nn.Module):
    """``[B, C, T]`` → (approximation, detail), each ``[B, C, T2]`` with T2 = ⌊(T + 2⌊K/2⌋ − K)/2⌋ + 1."""

    def __init__(self, channels: int, kernel_size: int, wavelet_names: Sequence[str], separate_channels: bool = True):
        super().__init__()
        self.kernel_size = kernel_size
        self.separate_channels = separate_channels
        self.wavelet_filters = nn.ModuleList(
            WaveletFilterPair(channels, kernel_size, name, separate_channels) for name in wavelet_names
        )
        n = len(self.wavelet_filters)
        # Sequential indices (2 and 4) are the original state-dict keys.
        self.selector = nn.Sequential(
            nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(channels, 128), nn.ReLU(), nn.Linear(128, n),
            nn.Softmax(dim=-1)
        )

    def wavelet_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample selection weights ``[B, W]`` (softmax over wavelets)."""
        return self.selector(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, C, _ = x.shape
        n = len(self.wavelet_filters)
        pairs = [(f.low_filter.weight, f.high_filter.weight) for f in self.wavelet_filters]
        # One convolution for all wavelets; stride 2 keeps output samples 0, 2, 4, ... of the stride-1 filter.
        if self.separate_channels:
            weight = torch.stack([w for pair in pairs for w in pair], dim=1)  # [C, 2W, 1, K]
            y = F.conv1d(x, weight.flatten(0, 1), stride=2, padding=self.kernel_size // 2, groups=C)
            y = y.unflatten(1, (C, n, 2))  # [B, C, W, 2, T2]
        else:
            weight = torch.stack([w for pair in pairs for w in pair], dim=0)  # [2W, C, C, K]
            y = F.conv1d(x, weight.flatten(0, 1), stride=2, padding=self.kernel_size // 2)
            y = y.unflatten(1, (n, 2, C)).permute(0, 3, 1, 2, 4)  # [B, C, W, 2, T2]
        w = self.wavelet_weights(x).to(y.dtype)  # [B, W]
        mixed = torch.einsum("bcwkt,bw->bckt", y, w)  # [B, C, 2, T2]
        return mixed[:, :, 0], mixed[:, :, 1]
