"""Named training recipes (``--recipe``): one table of settings per recipe and script.

``physiowave`` (the default) is the engine's own configuration, the one measured in docs/benchmarks.md: rms input norm,
the ``bands`` objective, the transformer decoder and frequency-guided masking in pretraining, ``bands`` pooling in
fine-tuning, and its optimiser values. Passing it changes nothing; its table lists the values it stands for.

``paper`` is the published configuration of the original release: raw input, the original objective, the MLP
decoder and the original's masking variant; mean pooling; AdamW with betas (0.9, 0.95) in pretraining and the
default (0.9, 0.999) in fine-tuning; warmup-cosine to 0. Its optimisation values are those of the original
launchers when ``--model ecg`` or ``--model emg`` is given, else those of the original scripts' own defaults. With
``--freeze_encoder`` the original trained its whole MLP head on frozen features, so ``paper`` probes with
``--probe mlp`` (keeping ``head_hidden_dim``); a linear probe has no hidden layer and the recipe then sets none.
Left as in the engine: weight decay spares biases, norms, mask token and wavelet taps (the original decayed every
parameter); the original pretrain.py's ``--mask_ratio`` default 0.15, which none of its launchers used, is not
taken (0.6 stays).

Precedence, per setting: a flag given on the command line > the recipe's value > the script's own default. Model
settings (``input_norm``, ``objective``, ``decoder``) are defaults of the model resolver: a checkpoint being
fine-tuned or resumed keeps its own values (:mod:`physiowave.engine.model_config`). The learning rate with
``--freeze_encoder`` and no ``--lr`` is the recipe's ``probe_lr`` (1e-2 in both recipes).
"""
from __future__ import annotations

import argparse
from typing import Any

from .config import RunConfig

__all__ = ["RECIPES", "DEFAULT_RECIPE", "MODEL_KEYS", "recipe_values", "model_defaults", "apply_recipe"]

DEFAULT_RECIPE = "physiowave"
# Recipe keys that are model settings: defaults of the model resolver, never written into the flags.
MODEL_KEYS = ("input_norm", "objective", "decoder")

_PW_FT = dict(input_norm="rms", objective="bands", pooling="bands", batch_size=32, epochs=30, lr=1e-3, probe_lr=1e-2,
              weight_decay=0.05, betas=(0.9, 0.999), scheduler="cosine", min_lr=1e-6, warmup_epochs=0, grad_clip=0.0,
              head_dropout=0.1, label_smoothing=0.1, probe="linear")
_PAPER_FT = dict(input_norm="none", objective="original", pooling="mean", batch_size=16, epochs=30, lr=1e-4,
                 probe_lr=1e-2, weight_decay=1e-3, betas=(0.9, 0.999), scheduler="cosine", min_lr=0.0, warmup_epochs=5,
                 grad_clip=0.0, head_dropout=0.1, probe="mlp")

# RECIPES[recipe][script] = {"*": values for every --model, preset: values that replace them with --model preset}
RECIPES: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "physiowave": {
        "pretrain": {"*": dict(input_norm="rms", objective="bands", decoder="transformer",
                               masking_strategy="frequency_guided", mask_ratio=0.6, importance_ratio=0.6,
                               batch_size=64, epochs=100, lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95),
                               scheduler="cosine", min_lr=0.0, warmup_epochs=0, grad_clip=1.0,
                               grad_accumulation_steps=1)},
        "finetune": {"*": _PW_FT},
        "multilabel": {"*": {**_PW_FT, "threshold": 0.5}},
    },
    "paper": {
        "pretrain": {
            "*": dict(input_norm="none", objective="original", decoder="mlp",
                      masking_strategy="frequency_guided_original", mask_ratio=0.6, importance_ratio=0.6, batch_size=32,
                      epochs=100, lr=1e-4, weight_decay=0.01, betas=(0.9, 0.95), scheduler="cosine", min_lr=0.0,
                      warmup_epochs=10, grad_clip=1.0, grad_accumulation_steps=1),
            "ecg": dict(max_length=2048, batch_size=16, grad_accumulation_steps=2, epochs=20, lr=2e-5,
                        weight_decay=1e-3, warmup_epochs=5, grad_clip=1.0, mask_ratio=0.7, importance_ratio=0.7),
            "emg": dict(batch_size=32, grad_accumulation_steps=2, epochs=30, lr=1e-4, weight_decay=0.01,
                        warmup_epochs=10, grad_clip=1.0, mask_ratio=0.6, importance_ratio=0.6),
        },
        "finetune": {
            "*": {**_PAPER_FT, "label_smoothing": 0.1},
            "ecg": dict(epochs=20, lr=2e-4, weight_decay=1e-3, grad_clip=1.0, batch_size=16, warmup_epochs=5,
                        head_hidden_dim=1024, head_dropout=0.1, label_smoothing=0.1),
            "emg": dict(epochs=5, lr=2e-4, weight_decay=1e-3, grad_clip=1.0, batch_size=32, warmup_epochs=2,
                        head_hidden_dim=512, head_dropout=0.1, label_smoothing=0.1),
        },
        "multilabel": {
            # the original multi-label loss was a plain BCE: its --label_smoothing 0.1 had no effect, hence 0
            "*": {**_PAPER_FT, "threshold": 0.5, "label_smoothing": 0.0},
            "ecg": dict(epochs=10, lr=1e-4, weight_decay=1e-4, grad_clip=1.0, batch_size=16, warmup_epochs=5,
                        threshold=0.3, head_hidden_dim=512, head_dropout=0.2),
        },
    },
}


def recipe_values(name: str, task: str, model: str | None = None) -> dict[str, Any]:
    """Every value recipe ``name`` sets for script ``task`` ("pretrain", "finetune", "multilabel") and ``--model``."""
    table = RECIPES[name][task]
    return {**table["*"], **table.get(model or "", {})}


def model_defaults(args: RunConfig) -> dict[str, Any]:
    """The model settings of the run's recipe (none for a namespace without ``recipe``, e.g. an old checkpoint's)."""
    name = args.recipe
    if not name:
        return {}
    return {k: v for k, v in recipe_values(name, args.task, args.model).items() if k in MODEL_KEYS}


def apply_recipe(args: argparse.Namespace, explicit: set[str]) -> None:
    """Set every flag of ``args`` the recipe has a value for and the command line did not give (``explicit``: the
    destinations given). ``lr`` of a fine-tuning run with ``--freeze_encoder`` is the recipe's ``probe_lr``; the
    probe kind is only set with ``--freeze_encoder``, and a linear probe gets no hidden layer size."""
    values = recipe_values(args.recipe, args.task, args.model)
    probing = getattr(args, "freeze_encoder", False)
    if probing and "lr" not in explicit:
        values["lr"] = values["probe_lr"]
    if not probing:
        values.pop("probe", None)
    probe = args.probe if "probe" in explicit else values.get("probe")
    if (probing and probe == "linear") or "hidden_factor" in explicit:
        values.pop("head_hidden_dim", None)
    for key, value in values.items():
        if key in MODEL_KEYS or key == "probe_lr" or key in explicit or not hasattr(args, key):
            continue
        setattr(args, key, list(value) if isinstance(value, tuple) else value)
