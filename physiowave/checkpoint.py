"""Reading PhysioWave checkpoints: the only place that calls ``torch.load``.

Original release files are dicts with ``model_state_dict`` (or ``state_dict``) and ``args``, saved as a dict
(fine-tuning) or as an ``argparse.Namespace`` (pretraining); some are a bare state dict. Files are read with
``weights_only=True``: only tensors, containers, ``argparse.Namespace`` and NumPy scalars are rebuilt, never
arbitrary objects.
"""
from __future__ import annotations

import argparse
import inspect
import os
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .models import LEGACY_CONFIG, FusionModel, PhysioWave

__all__ = ["LEGACY_CONFIG", "read_checkpoint", "extract_state_dict", "clean_state_dict", "model_args", "infer_config",
           "load_state_dict_checked", "model_from_checkpoint", "save_checkpoint", "load_encoder_weights"]

_PREFIXES = ("module.", "_orig_mod.")
_MODEL_KEYS = set(inspect.signature(PhysioWave.__init__).parameters) - {"self"}


def _safe_globals() -> list[Any]:
    """Non-tensor types that original checkpoints contain and that are safe to rebuild."""
    core = getattr(np, "_core", None) or np.core
    types: list[Any] = [argparse.Namespace, np.dtype, np.ndarray, core.multiarray.scalar, core.multiarray._reconstruct]
    return types + [type(np.dtype(t)) for t in ("float64", "float32", "float16", "int64", "int32", "int8", "uint8",
                                                "bool")]


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True`` (plus Namespace and NumPy scalars); a clear error otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with open(path, "rb") as f:
        head = f.read(2)
    if not (zipfile.is_zipfile(path) or head[:1] == b"\x80"):  # torch.save's zip archive, or the legacy pickle
        raise ValueError(f"{path}: not a PyTorch checkpoint (neither torch.save's zip archive nor a legacy pickle)")
    with torch.serialization.safe_globals(_safe_globals()):
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:  # UnpicklingError for disallowed globals, RuntimeError for corrupt files
            unsafe = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
            lines = [ln for ln in str(err).strip().splitlines() if ln.strip() and "weights_only" not in ln
                     and "Weights only load failed" not in ln]
            reason = (f"it holds a pickled {unsafe.group(1)}, and only tensors, containers, "
                      "Namespace and NumPy values are loaded"
                      if unsafe else (lines or [type(err).__name__])[0])
            raise ValueError(f"{path}: cannot be read as a weights-only checkpoint: {reason}") from err


def extract_state_dict(checkpoint: Any) -> dict[str, torch.Tensor]:
    """The state dict of any of the three layouts: ``model_state_dict``, ``state_dict`` or a bare state dict."""
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"expected a dict checkpoint, got {type(checkpoint).__name__}")
    for key in ("model_state_dict", "state_dict", "model"):
        if isinstance(checkpoint.get(key), Mapping):
            return dict(checkpoint[key])
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return dict(checkpoint)
    raise ValueError("no state dict found: expected 'model_state_dict', 'state_dict' or tensors, "
                     f"got keys {sorted(checkpoint)[:8]}")


def clean_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip DDP ``module.`` and ``torch.compile`` ``_orig_mod.`` prefixes."""
    out = {}
    for key, value in state_dict.items():
        while key.startswith(_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


def model_args(checkpoint: Any) -> dict[str, Any] | None:
    """The stored model flags as a dict (``model_config``, else ``args`` as a dict or ``argparse.Namespace``), or
    None."""
    if not isinstance(checkpoint, Mapping):
        return None
    args = checkpoint.get("model_config") or checkpoint.get("args")
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    return dict(args) if isinstance(args, Mapping) else None


def _indices(state_dict: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in state_dict if (m := re.fullmatch(pattern, k))})


def infer_config(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, Any], list[str]]:
    """Architecture from state-dict shapes alone → (PhysioWave kwargs, names of values that had to be assumed).

    Wavelet names only set the initial filters (the file's filters replace them); ``num_heads`` and
    ``pooling`` leave no trace in the shapes and are assumed (head dim 32, mean pooling) unless overridden.
    """
    sd = state_dict
    try:
        low = sd["wavelet_decomp.selector.wavelet_filters.0.low_filter.weight"]
        n_wavelets = len(_indices(sd, r"wavelet_decomp\.selector\.wavelet_filters\.(\d+)\.low_filter\.weight"))
        proj = sd["patch_embed.proj.weight"]
        embed_dim = proj.shape[0]
        depth = len(_indices(sd, r"encoder\.blocks\.(\d+)\.attn\.qkv\.weight"))
        mlp_hidden = sd["encoder.blocks.0.mlp.0.weight"].shape[0]
    except KeyError as err:
        raise ValueError(f"not a PhysioWave state dict: key {err.args[0]!r} is missing") from err
    candidates = ["db4", "db6", "sym4", "coif3", "sym5", "coif2", "bior4.4", "db8", "sym6", "coif4"]
    config: dict[str, Any] = dict(
        in_channels=low.shape[0], max_level=len(_indices(sd, r"wavelet_decomp\.res_scales\.(\d+)")),
        wave_kernel_size=low.shape[-1], wavelet_names=(candidates * n_wavelets)[:n_wavelets],
        use_separate_channel=low.shape[1] == 1,
        patch_size=proj.shape[-1], embed_dim=embed_dim, depth=depth,
        num_heads=max(1, embed_dim // 32) if embed_dim % 32 == 0 else 1, mlp_ratio=mlp_hidden / embed_dim,
        pos_embed_type="1d" if "pos_embed.pos_embed" in sd else "2d", **LEGACY_CONFIG,
    )
    assumed = ["wavelet_names", "num_heads"]
    head = _head_config(sd)
    if head:
        config.update(head)
        assumed.append("pooling")
    return config, assumed


def _head_config(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """``num_classes`` and ``head_hidden_dim`` from the classification head's Linear shapes ({} without a head)."""
    key = "task_heads.classification.head.{}.weight"
    linears = [i for i in _indices(state_dict, r"task_heads\.classification\.head\.(\d+)\.weight")
               if state_dict[key.format(i)].ndim == 2]
    if not linears:
        return {}
    return dict(num_classes=state_dict[key.format(linears[-1])].shape[0],
                head_hidden_dim=[state_dict[key.format(i)].shape[0] for i in linears[:-1]])


def load_state_dict_checked(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor],
                            source: str = "checkpoint") -> None:
    """Strict load whose errors name the key and the expected and found shapes (or the missing/unexpected keys)."""
    own = model.state_dict()
    for key, value in state_dict.items():
        if key in own and own[key].shape != value.shape:
            raise ValueError(f"{source}: key {key!r} has shape {tuple(value.shape)}, "
                             f"the model expects {tuple(own[key].shape)}")
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise ValueError(f"{source}: state dict does not fit the model: missing keys {missing[:5]}"
                         f"{' …' if len(missing) > 5 else ''}, unexpected keys "
                         f"{unexpected[:5]}{' …' if len(unexpected) > 5 else ''}")
    bad = next((k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise ValueError(f"{source}: weight {bad!r} holds NaN or inf values: the file is damaged or comes from a "
                         "diverged run; refusing to load it")
    model.load_state_dict(state_dict, strict=True)




def model_from_checkpoint(checkpoint: Any, path: str | Path = "checkpoint",
                          **overrides: Any) -> PhysioWave | FusionModel:
    """:func:`physiowave.load_model` for a checkpoint already read with :func:`read_checkpoint` (``path`` names it in
    messages)."""
    state_dict = clean_state_dict(extract_state_dict(checkpoint))
    args = model_args(checkpoint)
    if args is not None and "modalities" in args:  # a multi-modal fusion model (its model_config)
        fusion = FusionModel.from_config(args)
        load_state_dict_checked(fusion, state_dict, source=str(path))
        return fusion.eval()
    if args is not None:
        config = {**LEGACY_CONFIG, **{k: v for k, v in args.items() if k in _MODEL_KEYS}}
        head = _head_config(state_dict)
        if not head:
            config["num_classes"] = None  # a pretraining file: no classification head
        elif not config.get("num_classes"):
            config.update(head)  # a head whose flags were not saved: read off its shapes
        if config.get("wavelet_names") is None:
            config.pop("wavelet_names", None)
    else:
        config, assumed = infer_config(state_dict)
        assumed = [a for a in assumed if a not in overrides]
        if assumed:
            warnings.warn(f"{path}: no 'args' in the checkpoint; architecture inferred from shapes, assumed "
                          + ", ".join(f"{a}={config.get(a, 'mean')!r}" for a in assumed), stacklevel=2)
    config.update(overrides)
    if "num_classes" in overrides and not overrides["num_classes"]:  # the encoder alone, e.g. for a fusion branch
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("task_heads.classification.")}
    model = PhysioWave(**config)
    load_state_dict_checked(model, state_dict, source=str(path))
    return model.eval()


def save_checkpoint(obj: Mapping[str, Any], path: str | Path) -> None:
    """``torch.save`` under a temporary name, then an atomic rename: a killed run never leaves a half-written file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(dict(obj), tmp)
    os.replace(tmp, path)


def load_encoder_weights(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor],
                         source: str = "checkpoint") -> dict[str, Any]:
    """Load pretrained weights for fine-tuning → report ``{loaded, total, skipped}``.

    Every tensor outside ``task_heads`` (wavelet front-end, patch embedding, mask token, encoder) must be present
    with the model's shape, or this raises naming the first offender. Head tensors load where they fit (e.g. the
    original reconstruction head) and are skipped otherwise (a new classification head, another decoder).
    """
    own = model.state_dict()
    for key, value in own.items():
        if key.startswith("task_heads."):
            continue
        if key not in state_dict:
            raise ValueError(f"{source}: encoder key {key!r} is missing: the checkpoint is not a compatible PhysioWave "
                             "model")
        if state_dict[key].shape != value.shape:
            raise ValueError(f"{source}: encoder key {key!r} has shape {tuple(state_dict[key].shape)}, "
                             f"the model expects {tuple(value.shape)}: the model flags do not match the checkpoint")
    usable = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)
    skipped = sorted(k for k in own if k not in usable)
    return {"loaded": len(usable), "total": len(own), "skipped": skipped,
            "ignored": sorted(k for k in state_dict if k not in own)}
