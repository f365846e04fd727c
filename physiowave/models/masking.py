"""Token masking for masked pretraining (docs/architecture.md §10) and the masked reconstruction loss.

Every strategy draws its randomness from an explicit ``torch.Generator`` (on the tensors' device),
so a mask is reproducible from the seed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["MASKING_STRATEGIES", "MASKING", "MASK_RATIO", "IMPORTANCE_RATIO", "random_mask", "frequency_guided_mask",
           "frequency_guided_original_mask", "make_mask", "masked_mse_loss"]

MASKING_STRATEGIES = ("random", "frequency_guided", "frequency_guided_original")
# The defaults of masked pretraining wherever a mask is drawn (the scripts, the model's methods, `physiowave plot`);
# recipes (physiowave/engine/recipes.py) set their own values on top.
MASKING, MASK_RATIO, IMPORTANCE_RATIO = "frequency_guided", 0.6, 0.6


def _top_k_mask(score: torch.Tensor, mask_ratio: float) -> torch.Tensor:
    """Bool ``[B, N]`` marking the ``int(N · mask_ratio)`` highest scores of each row."""
    B, N = score.shape
    k = int(N * mask_ratio)
    mask = torch.zeros(B, N, dtype=torch.bool, device=score.device)
    if k > 0:
        mask.scatter_(1, score.topk(k, dim=1).indices, True)
    return mask


def _uniform(shape: tuple[int, int], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=like.device, dtype=torch.float32)


def random_mask(batch: int, num_tokens: int, mask_ratio: float, device: torch.device | str = "cpu",
                generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniformly drawn set of ``int(N · mask_ratio)`` tokens per sample → bool ``[B, N]``."""
    noise = torch.rand((batch, num_tokens), generator=generator, device=device)
    return _top_k_mask(noise, mask_ratio)


def frequency_guided_mask(patches: torch.Tensor, mask_ratio: float, importance_ratio: float,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """The paper's FgM. patches ``[B, N, P]`` → bool ``[B, N]``.

    Score = spectral energy of each patch (|rFFT|², DC excluded), min-max normalised per sample to [0, 1],
    mixed with uniform noise as ``r · score + (1 − r) · U(0, 1)``; the highest mixed scores are masked.
    """
    energy = torch.fft.rfft(patches.float(), dim=-1)[..., 1:].abs().square().sum(-1)  # [B, N]
    low = energy.amin(dim=1, keepdim=True)
    span = energy.amax(dim=1, keepdim=True) - low
    score = (energy - low) / span.clamp_min(torch.finfo(energy.dtype).tiny)
    mixed = importance_ratio * score + (1 - importance_ratio) * _uniform(score.shape, score, generator)
    return _top_k_mask(mixed, mask_ratio)


def frequency_guided_original_mask(tokens: torch.Tensor, mask_ratio: float, importance_ratio: float,
                                   generator: torch.Generator | None = None) -> torch.Tensor:
    """The original code's FgM, kept to reproduce original pretraining runs. tokens ``[B, N, D]`` (position-encoded).

    |rFFT| along the *token* axis summed over D, linearly resized (aligned corners) from N//2+1 bins to N,
    unnormalised, DC kept; mixed with ``torch.rand(B, N)`` noise. The noise barely matters (importance ≫ 1).
    """
    B, N, _ = tokens.shape
    importance = torch.fft.rfft(tokens.float(), dim=1).abs().sum(-1)  # [B, N//2+1]
    importance = F.interpolate(importance[:, None], size=N, mode="linear", align_corners=True)[:, 0]  # [B, N]
    mixed = importance_ratio * importance + (1 - importance_ratio) * _uniform((B, N), importance, generator)
    return _top_k_mask(mixed, mask_ratio)


def make_mask(strategy: str, patches: torch.Tensor, tokens: torch.Tensor, mask_ratio: float,
              importance_ratio: float = 0.6, generator: torch.Generator | None = None) -> torch.Tensor:
    """Dispatch on ``strategy`` (one of :data:`MASKING_STRATEGIES`) → bool ``[B, N]``."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    if strategy == "random":
        return random_mask(tokens.shape[0], tokens.shape[1], mask_ratio, tokens.device, generator)
    if strategy == "frequency_guided":
        return frequency_guided_mask(patches, mask_ratio, importance_ratio, generator)
    if strategy == "frequency_guided_original":
        return frequency_guided_original_mask(tokens, mask_ratio, importance_ratio, generator)
    raise ValueError(f"masking strategy must be one of {MASKING_STRATEGIES}, got {strategy!r}")


def masked_mse_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the masked tokens only. pred, target ``[B, N, P]``; mask bool ``[B, N]``.

    Returns 0 (with a gradient path) when nothing is masked.
    """
    m = mask.unsqueeze(-1).to(pred.dtype)
    sq = (pred.float() - target.float()).square() * m
    return sq.sum() / (m.sum() * pred.shape[-1]).clamp_min(1.0)
