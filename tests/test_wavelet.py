"""docs/architecture.md §1-§3: filter initialisation from PyWavelets and the filter-bank convolution."""
from __future__ import annotations

import numpy as np
import pytest
import pywt
import torch
from scipy.interpolate import interp1d

from physiowave.models.selector import AdaptiveWaveletSelector
from physiowave.models.wavelet import WaveletFilterPair, wavelet_filters


@pytest.mark.parametrize("name", ["db4", "sym4", "coif2", "bior4.4"])
def test_filters_equal_pywavelets_when_length_matches(name):
    w = pywt.Wavelet(name)
    pair = WaveletFilterPair(3, len(w.dec_lo), name)
    for conv, coeffs in ((pair.low_filter, w.dec_lo), (pair.high_filter, w.dec_hi)):
        assert conv.weight.shape == (3, 1, len(coeffs))
        np.testing.assert_allclose(conv.weight[:, 0].detach().numpy(), np.tile(coeffs, (3, 1)), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name,k", [("db4", 24), ("coif3", 16), ("bior4.4", 7), ("db6", 12)])
def test_resampling_rule(name, k):
    w = pywt.Wavelet(name)
    low, high = wavelet_filters(name, k)
    assert low.shape == high.shape == (k,)
    lo, hi = np.asarray(w.dec_lo), np.asarray(w.dec_hi)
    if len(lo) == k:
        np.testing.assert_allclose(low, lo)
        return
    grid = np.arange(k) * (len(lo) - 1) / (k - 1)  # output point i sits at i·(n−1)/(K−1)
    lo_i, hi_i = interp1d(np.arange(len(lo)), lo)(grid), interp1d(np.arange(len(hi)), hi)(grid)
    np.testing.assert_allclose(low, lo_i * lo.sum() / lo_i.sum(), rtol=1e-10)
    np.testing.assert_allclose(high, hi_i * np.abs(hi).sum() / np.abs(hi_i).sum(), rtol=1e-10)
    assert np.isclose(low.sum(), lo.sum()) and np.isclose(np.abs(high).sum(), np.abs(hi).sum())


def test_unknown_wavelet_is_rejected():
    with pytest.raises(ValueError, match="unknown wavelet 'db99'"):
        wavelet_filters("db99", 8)


@pytest.mark.parametrize("k", [8, 9])
def test_single_wavelet_bank_is_strided_cross_correlation(k):
    """One wavelet: weight 1, so the outputs are the un-flipped filters, padding K//2, every second sample from 0."""
    sel = AdaptiveWaveletSelector(2, k, ["db4"])
    x = torch.randn(1, 2, 50, dtype=torch.float64)
    sel = sel.double()
    approx, detail = sel(x)
    for out, conv in ((approx, sel.wavelet_filters[0].low_filter), (detail, sel.wavelet_filters[0].high_filter)):
        for c in range(2):
            padded = np.pad(x[0, c].numpy(), k // 2)
            ref = np.correlate(padded, conv.weight[c, 0].detach().numpy(), mode="valid")[::2]
            np.testing.assert_allclose(out[0, c].detach().numpy(), ref, rtol=1e-12, atol=1e-12)


def test_selector_mixes_wavelets_by_softmax_weights():
    sel = AdaptiveWaveletSelector(4, 8, ["db4", "sym4", "coif2"]).double()
    x = torch.randn(3, 4, 64, dtype=torch.float64)
    w = sel.wavelet_weights(x)
    assert torch.allclose(w.sum(-1), torch.ones(3, dtype=torch.float64))
    approx, detail = sel(x)
    conv = torch.nn.functional.conv1d
    ref_a = sum(w[:, i, None, None] * conv(x, f.low_filter.weight, padding=4,
                                           groups=4)[..., ::2] for i, f in enumerate(sel.wavelet_filters))
    ref_d = sum(w[:, i, None, None] * conv(x, f.high_filter.weight, padding=4,
                                           groups=4)[..., ::2] for i, f in enumerate(sel.wavelet_filters))
    torch.testing.assert_close(approx, ref_a)
    torch.testing.assert_close(detail, ref_d)


def test_dense_filters_when_channels_are_not_separate():
    sel = AdaptiveWaveletSelector(3, 8, ["db4", "sym4"], separate_channels=False).double()
    low = sel.wavelet_filters[0].low_filter.weight
    assert low.shape == (3, 3, 8)
    np.testing.assert_allclose(low[0, 0].detach().numpy(), pywt.Wavelet("db4").dec_lo, rtol=1e-6)
    x = torch.randn(2, 3, 32, dtype=torch.float64)
    w = sel.wavelet_weights(x)
    approx, _ = sel(x)
    ref = sum(w[:, i, None, None] * f.low_filter(x)[..., ::2] for i, f in enumerate(sel.wavelet_filters))
    torch.testing.assert_close(approx, ref)
