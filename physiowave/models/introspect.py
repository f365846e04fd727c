"""What the figures show, computed from a model: wavelet bands, learned filters, selector weights, reconstruction.

Arrays in, NumPy arrays out (no plotting, no I/O); ``physiowave.figures`` draws them.
"""
from __future__ import annotations

import numpy as np
import torch

from .masking import IMPORTANCE_RATIO, MASK_RATIO, MASKING
from .physiowave import PhysioWave
from .wavelet import wavelet_filters

__all__ = ["band_names", "wavelet_bands", "learned_filters", "selector_weights", "masked_reconstruction"]


def band_names(max_level: int) -> list[str]:
    """Names of the L+1 bands in the model's order: details of levels 1..L, then the approximation."""
    return [f"detail {i}" for i in range(1, max_level + 1)] + [f"approximation {max_level}"]


@torch.no_grad()
def wavelet_bands(model: PhysioWave, x: torch.Tensor) -> np.ndarray:
    """``[B, C, T]`` → bands ``[B, C, L+1, T]`` (``decompose`` rows are band-major: row = band·C + channel)."""
    spec = model.decompose(x)  # [B, (L+1)·C, T]
    B, _, T = spec.shape
    return spec.reshape(B, -1, model.in_channels, T).transpose(1, 2).float().cpu().numpy()


@torch.no_grad()
def learned_filters(model: PhysioWave) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(wavelet names, learned taps ``[W, 2, C, K]`` (low, high per channel), PyWavelets initialisation ``[W, 2, K]``).

    Dense (``use_separate_channel=False``) filters ``[C, C, K]`` are reduced to each output channel's own input tap
    row (the diagonal), the filter that channel applies to itself."""
    selector = model.wavelet_decomp.selector
    names = list(model.config["wavelet_names"])
    learned, initial = [], []
    for name, pair in zip(names, selector.wavelet_filters):
        taps = []
        for conv in (pair.low_filter, pair.high_filter):
            w = conv.weight.detach().float().cpu()  # [C, 1, K] or [C, C, K]
            taps.append(w[:, 0] if w.shape[1] == 1 else torch.diagonal(w, dim1=0, dim2=1).T)
        learned.append(torch.stack(taps).numpy())
        initial.append(np.stack(wavelet_filters(name, selector.kernel_size)))
    return names, np.stack(learned), np.stack(initial)


@torch.no_grad()
def selector_weights(model: PhysioWave, x: torch.Tensor) -> np.ndarray:
    """Softmax wavelet weights the selector gives each sample at each level: ``[B, L, W]``."""
    seen: list[torch.Tensor] = []
    hook = model.wavelet_decomp.selector.selector.register_forward_hook(lambda m, i, out: seen.append(out.detach()))
    try:
        model.decompose(x)
    finally:
        hook.remove()
    return torch.stack(seen, dim=1).float().cpu().numpy()


@torch.no_grad()
def masked_reconstruction(model: PhysioWave, x: torch.Tensor, mask_ratio: float = MASK_RATIO,
                          masking: str = MASKING, importance_ratio: float = IMPORTANCE_RATIO, seed: int = 0
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One masked pretraining pass → (target ``[B, C, L+1, T]``, prediction ``[B, C, L+1, T]``, mask ``[B, C, L+1,
    T/P]``).

    The model's pretraining head predicts every patch; the caller shows it where the mask is True. With the
    ``bands`` objective these are the standardised patch shapes (the predicted log-RMS is left out)."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    B, C, P = x.shape[0], model.in_channels, model.patch_size
    pred, target, mask = (t[..., :P] if t.ndim == 3 else t
                          for t in model.forward_pretrain(x, mask_ratio, masking, importance_ratio, generator=gen))
    rows = model.num_bands // C  # L+1

    def as_bands(t: torch.Tensor) -> np.ndarray:  # token order row·(T/P) + patch → [B, C, L+1, T/P (·P)]
        t = t.reshape(B, rows, C, -1, P).flatten(-2) if t.ndim == 3 else t.reshape(B, rows, C, -1)
        return t.transpose(1, 2).float().cpu().numpy()

    return as_bands(target), as_bands(pred), as_bands(mask).astype(bool)
