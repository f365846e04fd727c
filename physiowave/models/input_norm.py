"""Input normalisation that makes a model independent of the signal's units (``input_norm="rms"``).

Physiological signals arrive in whatever units the recorder or the reader uses: ECG in mV or µV, sEMG in volts
(±0.001) or device counts (±128). The network's tokens add a fixed positional code to linear projections of the
wavelet bands, so without normalisation the same recording in other units is a different input (tiny bands
drown in the positional code and the model underfits). ``rms`` divides the whole sample by one scale: the
root-mean-square over all channels of each channel's deviation from its own mean (so a DC offset does not set the
scale). The output is the same for ``c·x`` as for ``x`` (any c > 0), the ratios between channels, which say which
channel is active and how strongly, are kept (a per-channel z-score would erase them), and so are the offsets the
front-end's wavelet selector and channel gate read (they look at each channel's time-mean).
"""
from __future__ import annotations

import torch

__all__ = ["INPUT_NORMS", "normalize_input"]

INPUT_NORMS = ("rms", "none")


def normalize_input(x: torch.Tensor, mode: str) -> torch.Tensor:
    """``[B, C, T]`` → ``[B, C, T]``; ``rms``: the sample divided by ``sqrt(mean over C of var over T)``.

    A sample without variation (silence, padding) is left as it is. ``none`` returns ``x`` unchanged (original
    checkpoints).
    """
    if mode == "none":
        return x
    if mode != "rms":
        raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {mode!r}")
    scale = x.float().var(dim=-1, unbiased=False).mean(dim=1).sqrt()[:, None, None]  # [B, 1, 1]
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return x / scale.to(x.dtype)
