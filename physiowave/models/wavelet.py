"""Learnable wavelet filter pairs (docs/architecture.md §1-§2).

Each pair is a low-pass and a high-pass depthwise convolution initialised from a PyWavelets wavelet,
resampled to the kernel size ``K`` when the wavelet's own filter length differs.
"""
from __future__ import annotations

import numpy as np
import pywt
import torch
from torch import nn

__all__ = ["resample_filter", "wavelet_filters", "WaveletFilterPair"]


def resample_filter(coeffs: np.ndarray, kernel_size: int, keep: str) -> np.ndarray:
    """Resample a filter to ``kernel_size`` taps by linear interpolation with aligned end points.

    Point i of the output sits at position i·(n−1)/(K−1) of the input. ``keep="sum"`` rescales so the
    plain sum is unchanged (low-pass); ``keep="abs_sum"`` keeps the sum of absolute values (high-pass).
    """
    coeffs = np.asarray(coeffs, dtype=np.float64)
    n = len(coeffs)
    if n == kernel_size:
        return coeffs
    positions = np.linspace(0.0, n - 1, kernel_size)
    out = np.interp(positions, np.arange(n), coeffs)
    if keep == "sum":
        return out * (coeffs.sum() / out.sum())
    if keep == "abs_sum":
        return out * (np.abs(coeffs).sum() / np.abs(out).sum())
    raise ValueError(f"keep must be 'sum' or 'abs_sum', got {keep!r}")


def wavelet_filters(name: str, kernel_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Decomposition (low, high) filters of a PyWavelets wavelet, each with ``kernel_size`` taps."""
    if name not in pywt.wavelist(kind="discrete"):
        raise ValueError(f"unknown wavelet {name!r}: expected a discrete PyWavelets name such as db4, sym4, coif3, "
                         "bior4.4")
    wavelet = pywt.Wavelet(name)
    low = resample_filter(np.asarray(wavelet.dec_lo), kernel_size, keep="sum")
    high = resample_filter(np.asarray(wavelet.dec_hi), kernel_size, keep="abs_sum")
    return low, high


class WaveletFilterPair(nn.Module):
    """One learnable (low, high) filter pair; weights ``[C, 1, K]`` (depthwise) or ``[C, C, K]`` (dense).

    The pair is applied by :class:`~physiowave.models.selector.AdaptiveWaveletSelector`, which runs all
    pairs in one convolution; this module only owns and initialises the parameters.
    """

    def __init__(self, channels: int, kernel_size: int, wavelet: str, separate_channels: bool = True):
        super().__init__()
        groups = channels if separate_channels else 1
        self.low_filter = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2, groups=groups,
                                    bias=False)
        self.high_filter = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2, groups=groups,
                                     bias=False)
        low, high = wavelet_filters(wavelet, kernel_size)
        with torch.no_grad():
            for conv, taps in ((self.low_filter, low), (self.high_filter, high)):
                taps = torch.as_tensor(taps, dtype=conv.weight.dtype)
                if separate_channels:
                    conv.weight.copy_(taps.expand_as(conv.weight))
                # dense filters: only weight[0, 0, :] gets the wavelet, the rest keep PyTorch's init (reference quirk)
                else:
                    conv.weight[0, 0].copy_(taps)
