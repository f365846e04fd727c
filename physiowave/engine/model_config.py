"""The model of a run: one resolver from flags, ``--model`` preset and checkpoint to a configuration, used for a
fresh model, for pretrained weights, for every fusion branch and for a resumed run.

Precedence, for every model setting: a flag given on the command line, else the checkpoint's value, else the
``--model`` preset (``base`` when not given), the ``--recipe``'s model settings (input_norm, objective, decoder) and
the task's defaults, else :class:`PhysioWave`'s own default.
``in_channels`` is the data's. A given flag that contradicts a checkpoint is an error: for pretrained weights on
the settings that fix shapes or the function (:data:`ARCH_FLAGS`), for a resumed run on every model setting.
"""
from __future__ import annotations

import argparse
import inspect
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import (clean_state_dict, extract_state_dict, infer_config, load_encoder_weights,
                          load_state_dict_checked, model_args, read_checkpoint)
from ..models import LEGACY_CONFIG, PRESETS, FusionModel, PhysioWave
from .args import ARCH_FLAGS, MODEL_FLAGS
from .config import RunConfig
from .errors import ConfigError
from .recipes import model_defaults
from .state import check_same_trajectory
from .tasks import Task

__all__ = ["read_model_checkpoint", "resolve_config", "build_model", "build_fusion_model", "load_pretrained",
           "checkpoint_kind", "build_run_model"]


# PhysioWave's own defaults of the settings the flags control (in_channels comes from the data).
_MODEL_DEFAULTS = {k: p.default for k, p in inspect.signature(PhysioWave.__init__).parameters.items()
                   if k in MODEL_FLAGS and k != "in_channels"}


def read_model_checkpoint(path: str, flag: str) -> tuple[dict[str, Any], dict[str, torch.Tensor], Any]:
    """(model configuration stored in a checkpoint, its cleaned state dict, the raw checkpoint); ``flag`` names
    the flag that gave ``path`` in errors. A model folder (``save_pretrained``, ``physiowave convert``) or Hub repo
    id is read as a checkpoint: its ``config.json`` architecture and facts, its safetensors weights."""
    from .. import hub

    if hub.is_pretrained(path):
        try:
            from safetensors.torch import load_file

            folder = hub.resolve(path)
            config = hub.read_config(folder)
            state = clean_state_dict(load_file(str(folder / hub.WEIGHTS), device="cpu"))
        except (FileNotFoundError, ValueError, OSError) as err:
            raise ConfigError(f"{flag} {path}: {err}") from err
        return dict(config["architecture"]), state, hub.as_checkpoint(config)
    try:
        ckpt = read_checkpoint(path)
        state = clean_state_dict(extract_state_dict(ckpt))
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"{flag} {path}: {err}".replace(f": {path}: ", ": ")) from err
    stored = (ckpt.get("model_config") if isinstance(ckpt, dict) else None) or model_args(ckpt)
    if stored is None:
        stored, assumed = infer_config(state)
        stored = {k: v for k, v in stored.items() if k not in assumed or k == "num_heads"}
        warnings.warn(f"{path}: no model settings in the checkpoint; architecture read from its shapes "
                      f"(num_heads={stored['num_heads']} assumed: pass --num_heads if that is wrong)", stacklevel=2)
    if isinstance(stored.get("patch_size"), (list, tuple)):
        stored = {**stored, "patch_size": int(stored["patch_size"][-1])}
    return dict(stored), state, ckpt


def checkpoint_kind(ckpt: Any) -> str | None:
    """The task a training checkpoint was written by ("pretrain", "classification", "multilabel"), if recorded."""
    if not isinstance(ckpt, dict):
        return None
    if ckpt.get("task"):
        return ckpt["task"]
    args = ckpt.get("args")
    args = vars(args) if isinstance(args, argparse.Namespace) else args
    if not isinstance(args, dict) or "task" not in args:
        return None
    return "pretrain" if args["task"] == "pretrain" else args.get("task_type")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def _given(args: RunConfig) -> dict[str, tuple[Any, str]]:
    """Model settings given on the command line → ``{key: (value, how it was given)}``; an explicit ``--model``
    counts as giving its values (in_channels excepted: the data decide it)."""
    given: dict[str, tuple[Any, str]] = {}
    if args.model:
        given = {k: (v, f"--model {args.model}") for k, v in PRESETS[args.model].items() if k != "in_channels"}
    for key in MODEL_FLAGS:
        value = getattr(args, key, None)
        if value is not None:
            given[key] = (value, f"--{key} {' '.join(map(str, value)) if isinstance(value, list) else value}")
    return given


def resolve_config(args: RunConfig, task: Task, channels: int, stored: dict[str, Any] | None = None,
                   source: str | None = None, fixed: tuple[str, ...] = ARCH_FLAGS) -> dict[str, Any]:
    """The model configuration (encoder and pretraining head; no classification head) by the module's precedence.
    ``stored``: the configuration of the checkpoint ``source``; ``fixed``: the settings a given flag may not change."""
    given = _given(args)
    defaults = {**_MODEL_DEFAULTS, **task.model_defaults, **model_defaults(args),
                **{k: v for k, v in PRESETS["base"].items() if k != "in_channels"}}
    if stored is not None:
        stored = {**LEGACY_CONFIG, **stored}  # a file from before a setting keeps its original function
        for key, (value, how) in given.items():
            if key in fixed and stored.get(key) is not None and not _same(value, stored[key]):
                raise ConfigError(f"{how} contradicts the checkpoint {source} ({key}={stored[key]}): drop the flag to "
                                  "use the checkpoint's value")
        defaults.update({k: v for k, v in stored.items() if k in MODEL_FLAGS and v is not None})
    config = {**defaults, **{k: v for k, (v, _) in given.items()}}
    config.setdefault("in_channels", channels)
    if config["in_channels"] != channels:
        origin = f" (model from {source})" if "in_channels" not in given and source else ""
        raise ConfigError(f"in_channels {config['in_channels']}{origin}: the training data has {channels} channels")
    return config


def build_model(config: dict[str, Any]) -> PhysioWave | FusionModel:
    """The model a stored or resolved configuration describes (a fusion configuration has ``modalities``)."""
    try:
        return FusionModel.from_config(config) if "modalities" in config else PhysioWave(**{**LEGACY_CONFIG, **config})
    except (ValueError, TypeError) as err:
        raise ConfigError(f"model flags: {err}") from err


def load_pretrained(model: PhysioWave, path: str, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Every encoder tensor of ``state`` into ``model`` → ``{path, loaded, total, skipped}``."""
    try:
        report = load_encoder_weights(model, state, source=path)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    return {"path": path, **{k: v for k, v in report.items() if k != "ignored"}}


def _branch_checkpoint(name: str, path: str, channels: int) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(configuration, state dict) of the branch a ``--modality NAME:…:CHECKPOINT`` starts from: a single model,
    or the branch of the same name of a fusion checkpoint."""
    stored, state, _ = read_model_checkpoint(path, f"--modality {name}")
    if "modalities" in stored:
        if name not in stored["modalities"]:
            raise ConfigError(f"--modality {name}: {path} is a fusion checkpoint without a {name!r} branch "
                              f"(it has {', '.join(stored['modalities'])})")
        prefix = f"branches.{name}."
        stored = stored["modalities"][name]
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if stored.get("in_channels") not in (None, channels):
        raise ConfigError(f"--modality {name}: {path} was trained on {stored['in_channels']} channels, the modality "
                          f"has {channels}")
    return stored, state


def build_fusion_model(args: RunConfig, task: Task, info: dict[str, Any]) -> FusionModel:
    """One branch per ``--modality`` (from its checkpoint, with that checkpoint's architecture, or fresh from the
    model flags), fused with the ``--fusion`` settings; ``info["pretrained"]`` records what each branch loaded."""
    branches: dict[str, PhysioWave] = {}
    reports: dict[str, Any] = {}
    # a checkpoint's own
    shapeless = args.replace(model=None, **{k: None for k in ARCH_FLAGS})
    for m in args.modalities:
        channels = info["channels"][m.name]
        if m.checkpoint:
            stored, state = _branch_checkpoint(m.name, m.checkpoint, channels)
            branch = build_model({**resolve_config(shapeless, task, channels, stored, m.checkpoint),
                                  "num_classes": None})
            reports[m.name] = load_pretrained(branch, m.checkpoint, state)
        else:
            branch = build_model({**resolve_config(args, task, channels), "num_classes": None})
        branches[m.name] = branch
    widest = max(b.config["embed_dim"] for b in branches.values())
    head = task.head_config(info["num_classes"], args.fusion_dim or widest)
    if reports:
        info["pretrained"] = reports
    try:
        return FusionModel(branches, fusion=args.fusion or "weighted", fusion_dim=args.fusion_dim, **head)
    except ValueError as err:
        raise ConfigError(f"fusion flags: {err}") from err


def build_run_model(args: RunConfig, task: Task, info: dict[str, Any], resume: dict[str, Any] | None,
                    resume_path: Path | None, log: Callable[[str], None]) -> PhysioWave | FusionModel:
    """The run's model: the resumed checkpoint's, a fusion of branches, or one model (fresh or from
    ``--pretrained_path``), checked against the data (``info``); ``log`` prints what was loaded."""
    if resume is not None:
        stored = resume["model_config"]
        _check_resumed_settings(args, task, info, stored, resume_path)
        if not args.eval:
            check_same_trajectory(args, resume, info, str(resume_path))
        before = (resume.get("args") or {}).get("pretrained_path") or ""
        if args.pretrained_path and Path(args.pretrained_path) != Path(before or "."):
            # --resume auto with --pretrained_path (a retried or requeued job): the run must have started from it
            raise ConfigError(f"--pretrained_path {args.pretrained_path}: the run in {args.output_dir} started from "
                              f"{before or 'no checkpoint'}; resuming it from another one would mix two runs")
        model = build_model(stored)
        try:
            load_state_dict_checked(model, resume["model_state_dict"], source=str(resume_path))
        except ValueError as err:
            raise ConfigError(str(err)) from err
        verb = "evaluating" if args.eval else "resuming from"
        mid_epoch = (f", step {resume['micro_in_epoch']} of epoch {resume['next_epoch'] + 1}"
                     if resume.get("micro_in_epoch") else "")
        log(f"{verb} {resume_path} (saved after epoch {resume.get('epoch', -1) + 1}" + mid_epoch + ")")
    elif info.get("modalities"):
        model = build_fusion_model(args, task, info)
        for name, report in (info.get("pretrained") or {}).items():
            log(f"branch {name}: loaded {report['loaded']}/{report['total']} tensors from {report['path']}")
    else:
        stored = state = None
        if args.freeze_encoder and not args.pretrained_path:
            raise ConfigError("--freeze_encoder trains a head on a frozen encoder: without --pretrained_path the "
                              "encoder is random; pass --pretrained_path CHECKPOINT")
        if args.pretrained_path:
            stored, state, _ = read_model_checkpoint(args.pretrained_path, "--pretrained_path")
        config = resolve_config(args, task, info["channels"], stored, args.pretrained_path or None)
        model = build_model({**config, **task.head_config(info.get("num_classes"), config["embed_dim"])})
        if state is not None:
            info["pretrained"] = load_pretrained(model, args.pretrained_path, state)
            log(f"loaded {info['pretrained']['loaded']}/{info['pretrained']['total']} tensors from "
                      f"{args.pretrained_path} (every encoder tensor; {len(info['pretrained']['skipped'])} head "
                      "tensors newly initialised)")
    if isinstance(model, FusionModel):
        for name, m in info["modalities"].items():
            P, C, T = model.branches[name].patch_size, m["channels"], m["length"]
            pad = f", right-padded to {-(-T // P) * P} (patch size {P})" if T % P else ""
            log(f"modality {name} ({m['source']}): {C} channel{'s' * (C != 1)} × {T} samples{pad}")
    elif info["length"] % model.patch_size or info["length"] < model.patch_size:
        length, P = info["length"], model.patch_size
        raise ConfigError(f"samples are {length} long, not a multiple of the patch size {P}: pass --max_length "
                          f"{max(P, length // P * P)} or {-(-length // P) * P}")
    model.set_grad_checkpointing(args.grad_checkpointing)
    return model


def _check_resumed_settings(args: RunConfig, task: Task, info: dict[str, Any], stored: dict[str, Any],
                            path: Path | None) -> None:
    """A resumed run keeps its model: no model flag may differ, and a fusion run keeps its ``--modality`` names."""
    if "modalities" not in stored:
        resolve_config(args, task, info["channels"], stored, str(path), fixed=MODEL_FLAGS)
        if args.modalities:
            raise ConfigError(f"--resume {path}: the checkpoint is one model; drop the --modality flags")
        return
    given = [m.name for m in args.modalities]
    if list(stored["modalities"]) != given:
        raise ConfigError(f"--resume {path}: the checkpoint needs --modality flags for "
                          f"{', '.join(stored['modalities'])}, got {', '.join(given) or 'none'}")
