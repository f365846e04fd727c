"""Any saved model → the model: a checkpoint file (ours or the original release's), a model folder, or a Hugging Face
Hub repo id. :func:`load_model` dispatches to :mod:`physiowave.checkpoint` (files) and :mod:`physiowave.hub`
(folders); :func:`from_pretrained` / :func:`save_pretrained` are the folder format's two ends."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from . import hub
from .checkpoint import model_from_checkpoint, read_checkpoint
from .models import FusionModel, PhysioWave

__all__ = ["load_model", "from_pretrained", "save_pretrained"]

save_pretrained = hub.save_pretrained


def from_pretrained(source: str | Path, **kwargs: Any) -> PhysioWave | FusionModel:
    """A folder written by :func:`save_pretrained` (or ``physiowave convert``), or a Hugging Face Hub repo id
    (downloaded to the hub client's cache) → the model it holds (a :class:`PhysioWave` or a :class:`FusionModel`),
    in eval mode. ``kwargs``: ``revision``, ``cache_dir``, ``token``, ``local_files_only``, ``expect`` (the class it
    must be) and architecture overrides (``num_classes=None``: the encoder without its head)."""
    return hub.load_pretrained(source, **kwargs)

def load_model(path: str | Path, map_location: str | torch.device = "cpu",
               **overrides: Any) -> PhysioWave | FusionModel:
    """Build a :class:`PhysioWave` from a checkpoint's own ``args`` (or its shapes), load its weights, return it in
    eval mode.

    ``overrides`` replace architecture values (e.g. ``num_heads`` for a file without ``args``);
    ``num_classes=None`` leaves out a fine-tuned file's classification head (a fusion branch needs none).
    A fusion run's checkpoint gives its :class:`FusionModel` (overrides do not apply). A model folder written by
    :func:`save_pretrained` / ``physiowave convert``, or a Hugging Face Hub repo id, is read by :mod:`physiowave.hub`.
    """
    if hub.is_pretrained(path):
        return hub.load_pretrained(path, **overrides)
    return model_from_checkpoint(read_checkpoint(path, map_location), path, **overrides)
