"""Masked-pretraining objectives: what the reconstruction head predicts and the loss it is scored with
(docs/architecture.md §12).

``original`` (the original release): the target is the patched output of the model's own learnable wavelet
front-end and the loss is the plain MSE over masked patches. With gradients flowing into the target, the
front-end can lower the loss by shrinking its own bands (and AdamW's decay pulls the same way); even with the
target detached it moves as the front-end learns through the encoder path.

``bands`` (the default for new models): the target comes from a fixed wavelet transform of the (normalised)
input, built from the first wavelet's initial filters in the front-end's band layout, so no parameter can move
it and the loss cannot be lowered by changing the target. Each masked patch is scored on two things, each a
normalised MSE whose value 1.0 is what predicting the mean gets:

* its shape: the patch standardised to zero mean and unit variance (MAE's ``norm_pix_loss``);
* its energy: the log root-mean-square of the patch. For stochastic signals such as sEMG the waveform of a hidden
  patch cannot be predicted from its context, only how strong it is (which muscles are active); for ECG both can.

The head predicts ``P + 1`` numbers per patch (``P`` for the shape, one for the log-RMS).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .wavelet import wavelet_filters

__all__ = ["OBJECTIVES", "FixedWaveletTransform", "prediction_size", "patch_targets", "objective_loss", "band_rms"]

OBJECTIVES = ("bands", "original")
_EPS = 1e-6  # relative to the sample's mean patch variance


def prediction_size(objective: str, patch_size: int) -> int:
    """Numbers the reconstruction head predicts per token."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    return patch_size if objective == "original" else patch_size + 1


class FixedWaveletTransform(nn.Module):
    """``[B, C, T]`` → ``[B, (L+1)·C, T]`` with the front-end's band layout (details of levels 1..L, then the final
    approximation, each upsampled to T by repetition), from one wavelet's fixed filters; no parameters."""

    def __init__(self, channels: int, max_level: int, kernel_size: int, wavelet: str):
        super().__init__()
        self.channels, self.max_level, self.kernel_size = channels, max_level, kernel_size
        low, high = wavelet_filters(wavelet, kernel_size)
        taps = torch.from_numpy(np.stack([low, high])).float()[:, None].repeat(channels, 1, 1)  # [2C, 1, K]
        self.register_buffer("taps", taps, persistent=False)  # not in the state dict: rebuilt from the config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        C, T = self.channels, x.shape[-1]
        a, bands = x, []
        for _ in range(self.max_level):
            y = F.conv1d(a, self.taps.to(a.dtype), stride=2, padding=self.kernel_size // 2, groups=C)  # [B, 2C, T2]
            a, d = y[:, 0::2], y[:, 1::2]
            bands.append(F.interpolate(d, size=T, mode="nearest"))
        bands.append(F.interpolate(a, size=T, mode="nearest"))
        return torch.cat(bands, dim=1)


def patch_targets(patches: torch.Tensor) -> torch.Tensor:
    """``[B, N, P]`` patches → ``[B, N, P + 1]``: each patch standardised, then its log-RMS."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, unbiased=False, keepdim=True)
    ms = patches.square().mean(dim=-1, keepdim=True)
    # [B, 1, 1]: scale-free, for silent patches
    floor = _EPS * var.mean(dim=1, keepdim=True) + torch.finfo(patches.dtype).tiny
    shape = (patches - mean) / (var + floor).sqrt()
    return torch.cat([shape, 0.5 * torch.log(ms + floor)], dim=-1)


def _masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ over masked tokens of ``values`` ``[B, N, K]`` (or ``[B, N]``) → ``[B]``."""
    m = mask.to(values.dtype)
    if values.dim() == 3:
        values = values.sum(-1)
    return (values * m).sum(1)


def objective_loss(objective: str, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(loss, per-sample float64 sums ``[B]``) over the masked tokens. pred, target ``[B, N, K]``; mask bool ``[B, N]``.

    The sums make normalised MSEs over any set of samples: ``shape_nmse = shape_sq / shape_var`` (the patch shape:
    1.0 = predicting each patch's mean) and, for ``bands``, ``energy_nmse = energy_sq / (energy_sq2 − energy_sum²/
    tokens)·tokens`` (the log-RMS: 1.0 = predicting its mean over the masked tokens).
    """
    pred, target = pred.float(), target.float()
    P = pred.shape[-1] - (objective != "original")
    wave_p, wave_t = pred[..., :P], target[..., :P]
    shape_sq = _masked_sum((wave_p - wave_t).square(), mask)  # [B], with its gradient
    centred = (wave_t - wave_t.mean(dim=-1, keepdim=True)).square().detach()
    tokens = mask.sum(1).to(pred.dtype)
    sums = {"shape_sq": shape_sq.detach(), "shape_var": _masked_sum(centred, mask), "tokens": tokens,
            "elements": tokens * P}
    if objective == "original":
        loss = shape_sq.sum() / (tokens.sum() * P).clamp_min(1)  # plain MSE, as the original
        return loss, {k: v.double() for k, v in sums.items()}
    shape_loss = shape_sq.sum() / sums["shape_var"].sum().clamp_min(1e-12)
    e_p, e_t = pred[..., P], target[..., P].detach()
    energy_sq = _masked_sum((e_p - e_t).square(), mask)  # [B], with its gradient
    # Variance of the target energies over all masked tokens (two passes, as torch.var), from masked sums: no
    # boolean indexing, so no host sync (a step can be captured in a CUDA graph).
    count = tokens.sum()
    energy_sum = _masked_sum(e_t, mask)  # [B]
    e_mean = energy_sum.sum() / count.clamp_min(1)
    e_var = torch.where(count > 1, _masked_sum((e_t - e_mean).square(), mask).sum() / count.clamp_min(1), 1.0)
    energy_loss = energy_sq.sum() / (count.clamp_min(1) * e_var.clamp_min(1e-12))
    sums.update(energy_sq=energy_sq.detach(), energy_sum=energy_sum, energy_sq2=_masked_sum(e_t.square(), mask))
    return shape_loss + energy_loss, {k: v.double() for k, v in sums.items()}


def band_rms(spec: torch.Tensor, channels: int) -> torch.Tensor:
    """Per-sample RMS of each band of a spectrum ``[B, (L+1)·C, T]`` → float64 ``[B, L+1]`` (collapse monitor)."""
    B, _, T = spec.shape
    return spec.detach().double().reshape(B, -1, channels, T).square().mean(dim=(2, 3)).sqrt()
