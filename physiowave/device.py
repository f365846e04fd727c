"""The ``--device`` flag → a usable torch device (training and inference pick devices the same way)."""
from __future__ import annotations

import torch

__all__ = ["pick_device"]


def pick_device(flag: str | None, local_rank: int = 0) -> torch.device:
    """``--device`` value (None: CUDA when available, else CPU) → a usable device, or a one-line RuntimeError."""
    if flag is None:
        flag = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(flag)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {flag}: CUDA is not available on this machine (use --device cpu)")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"--device {flag}: MPS is not available on this machine")
    return device
