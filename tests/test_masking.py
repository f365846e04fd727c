"""docs/architecture.md §10: random and frequency-guided masking, reproducible from a generator; the masked loss."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from physiowave.models.masking import (frequency_guided_mask, frequency_guided_original_mask, make_mask,
                                       masked_mse_loss, random_mask)


def test_random_mask_is_per_sample_counted_and_seeded():
    a = random_mask(8, 100, 0.7, generator=torch.Generator().manual_seed(1))
    b = random_mask(8, 100, 0.7, generator=torch.Generator().manual_seed(1))
    c = random_mask(8, 100, 0.7, generator=torch.Generator().manual_seed(2))
    assert (a.sum(1) == 70).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len({tuple(row.tolist()) for row in a}) == 8  # not one mask for the whole batch


def test_frequency_guided_masks_the_high_energy_patches():
    B, N, P = 2, 20, 32
    t = torch.arange(P, dtype=torch.float32)
    patches = 0.01 * torch.randn(B, N, P)
    loud = torch.tensor([[1, 4, 9, 15], [0, 2, 3, 19]])
    for b in range(B):
        patches[b, loud[b]] += torch.sin(2 * torch.pi * 5 * t / P)
    patches[:, 7] += 10.0  # a large DC offset carries no spectral energy (DC excluded)
    mask = frequency_guided_mask(patches, 0.2, importance_ratio=1.0)
    for b in range(B):
        assert set(mask[b].nonzero().flatten().tolist()) == set(loud[b].tolist())


def test_frequency_guided_noise_share_follows_importance_ratio():
    patches = torch.randn(4, 200, 16) * torch.linspace(0.1, 3, 200)[None, :, None]
    masks = [frequency_guided_mask(patches, 0.5, r, torch.Generator().manual_seed(s))
             for r in (0.9, 0.1) for s in (0, 1)]
    agree_high = (masks[0] == masks[1]).float().mean()
    agree_low = (masks[2] == masks[3]).float().mean()
    assert agree_high > agree_low  # more noise, less agreement between seeds
    assert torch.equal(masks[0], frequency_guided_mask(patches, 0.5, 0.9, torch.Generator().manual_seed(0)))


def test_frequency_guided_original_scores_token_axis_spectrum():
    """Original FgM: |rFFT| over tokens summed over D, linearly resized to N (aligned corners), top-k."""
    B, N, D = 2, 12, 8
    tokens = torch.randn(B, N, D)
    mask = frequency_guided_original_mask(tokens, 0.25, importance_ratio=1.0)
    spectrum = torch.stack([torch.fft.rfft(tokens[:, :, d], dim=1).abs() for d in range(D)]).sum(0)  # [B, N//2+1]
    bins = N // 2 + 1
    pos = torch.arange(N) * (bins - 1) / (N - 1)
    lo = pos.floor().long().clamp(max=bins - 2)
    frac = pos - lo
    score = spectrum[:, lo] * (1 - frac) + spectrum[:, lo + 1] * frac
    expected = torch.zeros(B, N, dtype=torch.bool)
    expected.scatter_(1, score.topk(3, dim=1).indices, True)
    assert torch.equal(mask, expected)


def test_make_mask_dispatch_and_errors():
    patches, tokens = torch.randn(2, 10, 8), torch.randn(2, 10, 4)
    for strategy in ("random", "frequency_guided", "frequency_guided_original"):
        assert make_mask(strategy, patches, tokens, 0.3).sum(1).tolist() == [3, 3]
    with pytest.raises(ValueError, match="masking strategy must be one of"):
        make_mask("block", patches, tokens, 0.3)
    with pytest.raises(ValueError, match="mask_ratio"):
        make_mask("random", patches, tokens, 1.0)


def test_masked_mse_loss_counts_only_masked_tokens():
    pred, target = torch.zeros(1, 3, 2), torch.tensor([[[1.0, 1.0], [2.0, 2.0], [5.0, 5.0]]])
    mask = torch.tensor([[True, True, False]])
    torch.testing.assert_close(masked_mse_loss(pred, target, mask), torch.tensor(2.5))
    torch.testing.assert_close(masked_mse_loss(pred, target, mask), F.mse_loss(pred[mask], target[mask]))
    assert masked_mse_loss(pred, target, torch.zeros_like(mask)).item() == 0.0
