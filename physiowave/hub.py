"""Shareable model folders: ``physiowave.save_pretrained`` / ``physiowave.from_pretrained`` (all the folder I/O).

A folder (local, or a Hugging Face Hub repository fetched into the hub client's cache) holds::

    model.safetensors   the state dict (safetensors: tensors only, nothing is unpickled)
    config.json         the architecture (``model.config``), the input contract, the task and training facts
    README.md           a model card written from the same facts

``config.json`` keys: ``format`` ("physiowave"), ``format_version``, ``physiowave_version``, ``model_type``
("PhysioWave" or "FusionModel"), ``architecture`` (the constructor's keywords), ``input`` (how raw recordings
become model input: ``fs`` in Hz, ``num_channels``, ``channels`` (names/indices in order, null: every channel of
a record in its order), ``length``, ``window``, ``step``, the preprocessing ``normalize``/``norm_scope``,
``bandpass``, ``notch``, ``max_nan_gap``, ``tail``, ``min_real``, ``input_fs`` (CSV rate), ``standardize`` (training's
per-sample z-score) and the model's own ``input_norm``; null for a fusion model, whose ``modalities`` lists each
branch's channels and length), ``task`` ("single", "multi" or null), ``class_names``, ``thresholds``, ``assumed``
(contract values no source recorded: name → what was assumed) and ``training`` (source file, epochs, validation
metrics, data, flags, and free-text ``training_data``/``protocol``).

We do not use ``PyTorchModelHubMixin``: its ``config.json`` is the constructor's keywords alone, and the contract
is most of what a user of the folder needs. The layout is the hub's usual one, so the folder can be uploaded as is
(``huggingface_hub.upload_folder``).
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .models import FusionModel, PhysioWave

__all__ = ["WEIGHTS", "CONFIG", "CARD", "FORMAT", "FORMAT_VERSION", "save_pretrained",
           "load_pretrained", "resolve", "read_config", "model_from_folder", "build_config", "write_folder",
           "check_target", "is_pretrained", "looks_like_repo_id", "model_card", "as_checkpoint"]

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CARD = "README.md"
FORMAT = "physiowave"
FORMAT_VERSION = 1
_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".tar", ".h5", ".hdf5", ".safetensors", ".json")
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_TASKS = {"single": "single-label classification", "multi": "multi-label classification"}


# ------------------------------------------------------------------------------------------------ finding a folder
def looks_like_repo_id(source: str | Path) -> bool:
    """``ORG/NAME`` that is not an existing path nor a checkpoint file name: a Hugging Face Hub repository id."""
    text = str(source)
    return (not Path(text).exists() and _REPO_ID.fullmatch(text) is not None
            and not text.lower().endswith(_CHECKPOINT_SUFFIXES))


def is_pretrained(source: str | Path) -> bool:
    """Whether ``source`` names a model folder (any existing folder: one without config.json is an error later)
    or a Hub repo id, rather than a checkpoint file."""
    return Path(source).is_dir() or looks_like_repo_id(source)


def resolve(source: str | Path, *, revision: str | None = None, cache_dir: str | Path | None = None,
            token: str | bool | None = None, local_files_only: bool = False) -> Path:
    """The local folder of ``source``: a folder as is, a Hub repo id through ``snapshot_download`` (the hub client's
    cache; ``HF_HUB_OFFLINE=1`` or ``local_files_only`` read the cache alone). One-line errors."""
    path = Path(source)
    if path.is_dir():
        if not (path / CONFIG).is_file():
            raise ValueError(f"{path}: not a PhysioWave model folder (no {CONFIG}); expected a folder written by "
                             "save_pretrained or `physiowave convert`, or a .pth checkpoint")
        return path
    if path.exists():
        raise ValueError(f"{path}: a file, expected a model folder or a Hugging Face Hub repo id")
    if not looks_like_repo_id(source):
        raise FileNotFoundError(f"no such checkpoint, model folder or Hugging Face Hub repo id: {source}")
    from huggingface_hub import snapshot_download

    from . import __version__
    try:
        folder = snapshot_download(str(source), revision=revision, cache_dir=cache_dir, token=token,
                                   local_files_only=local_files_only, allow_patterns=[CONFIG, WEIGHTS, CARD],
                                   library_name="physiowave", library_version=__version__)
    except Exception as err:  # offline without a cached copy, unknown repo, network errors
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{source}: no such local file or folder, and the Hugging Face Hub gave no model: "
                         f"{type(err).__name__}: {reason}") from err
    return resolve(folder)


def read_config(folder: str | Path) -> dict[str, Any]:
    """``config.json`` of a model folder, checked to be ours."""
    path = Path(folder) / CONFIG
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot be read as JSON: {err}") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT or "architecture" not in config:
        raise ValueError(f"{path}: not a PhysioWave model config (expected \"format\": "
                         f"\"{FORMAT}\" and \"architecture\")")
    _check_field_types(config, path)
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {config['format_version']} is newer than this physiowave reads "
                         f"({FORMAT_VERSION}): upgrade physiowave")
    return config


_NUMBER_INPUTS = ("fs", "window", "step", "length", "max_nan_gap", "min_real", "input_fs", "num_channels")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_field_types(config: Mapping[str, Any], path: Path) -> None:
    """One-line ValueError naming the field of ``config.json`` whose value has the wrong type (the architecture's
    fields are checked, with their bounds, when the model is built)."""
    def bad(field: str, value: Any, expected: str) -> ValueError:
        return ValueError(f"{path}: field {field} is {value!r}; expected {expected}")

    for field in ("architecture", "input"):
        if not isinstance(config.get(field) or {}, dict):
            raise bad(field, config[field], "an object")
    for key in _NUMBER_INPUTS:
        value = (config.get("input") or {}).get(key)
        if value is not None and not _is_number(value):
            raise bad(f"input.{key}", value, "a number")
    thresholds, names = config.get("thresholds"), config.get("class_names")
    if thresholds is not None and not (isinstance(thresholds, list) and all(map(_is_number, thresholds))):
        raise bad("thresholds", thresholds, "a list of numbers")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise bad("class_names", names, "a list of strings")


# ------------------------------------------------------------------------------------------------------ loading
def load_pretrained(source: str | Path, *, expect: type | None = None, revision: str | None = None,
                    cache_dir: str | Path | None = None, token: str | bool | None = None,
                    local_files_only: bool = False, **overrides: Any) -> PhysioWave | FusionModel:
    """A model folder or Hub repo id → the model in eval mode (on the CPU). ``expect``: the class it must be
    (e.g. ``expect=PhysioWave`` refuses a fusion folder). ``overrides`` replace architecture values of a
    PhysioWave; ``num_classes=None`` leaves out the classification head, as ``load_model`` does."""
    folder = resolve(source, revision=revision, cache_dir=cache_dir, token=token, local_files_only=local_files_only)
    return model_from_folder(folder, read_config(folder), expect, overrides)


def model_from_folder(folder: Path, config: Mapping[str, Any], expect: type | None = None,
           overrides: Mapping[str, Any] | None = None) -> PhysioWave | FusionModel:
    from safetensors.torch import load_file

    from .checkpoint import load_state_dict_checked
    overrides = dict(overrides or {})
    kind = config.get("model_type", "PhysioWave")
    if kind not in ("PhysioWave", "FusionModel"):
        raise ValueError(f"{folder / CONFIG}: unknown model_type {kind!r}")
    cls = FusionModel if kind == "FusionModel" else PhysioWave
    if expect is not None and not issubclass(cls, expect):
        raise ValueError(f"{folder}: holds a {kind}, not a {expect.__name__}: load it with "
                         "physiowave.from_pretrained or physiowave.load_model")
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{folder}: no {WEIGHTS}")
    state = load_file(str(weights), device="cpu")
    if cls is FusionModel:
        if overrides:
            raise ValueError(f"{folder}: architecture overrides ({', '.join(overrides)}) do not apply to a FusionModel")
        model: PhysioWave | FusionModel = FusionModel.from_config(config["architecture"])
    else:
        model = PhysioWave(**{**config["architecture"], **overrides})
        if "num_classes" in overrides and not overrides["num_classes"]:
            state = {k: v for k, v in state.items() if not k.startswith("task_heads.classification.")}
    load_state_dict_checked(model, state, source=str(weights))
    return model.eval()


def as_checkpoint(config: Mapping[str, Any]) -> dict[str, Any]:
    """The folder's facts in the layout of our checkpoints (``data.preprocessing``, ``thresholds``, ``args``...),
    so that :func:`physiowave.inference.load_trained` reads its contract as it reads a checkpoint's record."""
    inp = dict(config.get("input") or {})
    training = dict(config.get("training") or {})
    keys = ("fs", "input_fs", "channels", "bandpass", "notch", "max_nan_gap", "normalize", "norm_scope", "window",
            "step", "tail", "min_real")
    data = dict(training.get("data") or {})
    data.update(preprocessing={k: inp[k] for k in keys if k in inp}, label_kind=config.get("task"),
                class_names=config.get("class_names"))
    if inp.get("length"):
        data["length"] = inp["length"]
    epochs = training.get("epochs_completed")
    return {"args": {**(training.get("args") or {}), "normalize": bool(inp.get("standardize"))}, "data": data,
            "thresholds": config.get("thresholds"), "physiowave_version": config.get("physiowave_version"),
            "epoch": None if epochs is None else int(epochs) - 1, "global_step": training.get("global_step"),
            "best": training.get("best"), "val_metrics": training.get("validation") or {},
            "model_config": config.get("architecture"), "pretrained_folder": config}


# ------------------------------------------------------------------------------------------------------- saving
def _clean(obj: Any) -> Any:
    """JSON-able, with NaN/inf as null (strict JSON readers reject NaN)."""
    from .fileio import to_jsonable
    obj = to_jsonable(obj)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _input_contract(model: PhysioWave, values: Mapping[str, Any]) -> dict[str, Any]:
    from .preprocess.params import Preparation, SignalParams
    defaults = SignalParams().as_dict()
    base = {k: v for k, v in defaults.items() if k != "target_fs"}
    base.update(fs=None, input_fs=None, standardize=False, length=None)
    unknown = sorted(set(values) - set(base))
    if unknown:
        raise TypeError(f"save_pretrained: unknown input contract key(s) {', '.join(unknown)}; expected "
                        f"{', '.join(sorted(base))}")
    inp = {**base, **{k: v for k, v in values.items() if v is not None or k in ("channels", "bandpass", "notch")}}
    inp["length"] = int(inp["length"] or inp["window"])
    if inp["channels"] and len(inp["channels"]) != model.in_channels:
        raise ValueError(f"channels {inp['channels']}: {len(inp['channels'])} names for a model with "
                         f"{model.in_channels} input channels")
    Preparation(**inp)  # the field names are Preparation's
    SignalParams.from_recorded(inp).check()
    return {"fs": None if inp["fs"] is None else float(inp["fs"]), "num_channels": model.in_channels,
            **{k: v for k, v in inp.items() if k != "fs"}, "input_norm": model.config.get("input_norm")}


def build_config(model: PhysioWave | FusionModel, *, input: Mapping[str, Any] | None = None, task: str | None = None,
                 class_names: list[str] | None = None, thresholds: Any = None,
                 training: Mapping[str, Any] | None = None, assumed: Mapping[str, str] | None = None,
                 modalities: Mapping[str, Any] | None = None
                 ) -> dict[str, Any]:
    """The ``config.json`` of ``model`` with these facts (checked: class names fit the head, task is known)."""
    from . import __version__
    fusion = isinstance(model, FusionModel)
    k = model.config.get("num_classes")
    if task is not None and task not in _TASKS:
        raise ValueError(f"task {task!r}: expected 'single' or 'multi'")
    if k and task is None:
        task = "single"
    if not k:
        task, class_names, thresholds = None, None, None
    if class_names is not None and len(class_names) != k:
        raise ValueError(f"{len(class_names)} class names for a head with {k} outputs")
    if thresholds is not None:
        thresholds = [float(t) for t in np.asarray(thresholds, dtype=np.float64).reshape(-1)]
        if len(thresholds) != k:
            raise ValueError(f"{len(thresholds)} thresholds for a head with {k} outputs")
    config = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "physiowave_version": __version__,
        "model_type": type(model).__name__, "architecture": model.config,
        "input": None if fusion else _input_contract(model, input or {}),
        "task": task, "class_names": list(map(str, class_names)) if class_names is not None
        else ([f"class_{i}" for i in range(k)] if k else None),
        "thresholds": thresholds, "assumed": dict(assumed or {}), "training": dict(training or {}),
    }
    if fusion:
        config["modalities"] = dict(modalities or {})
    if not fusion and config["input"]["fs"] is None:
        config["assumed"].setdefault("fs", "each record's own sampling rate (no resampling): not given")
    return _clean(config)


def save_pretrained(model: PhysioWave | FusionModel, directory: str | Path, *, task: str | None = None,
                    class_names: list[str] | None = None, thresholds: Any = None,
                    training: Mapping[str, Any] | None = None, assumed: Mapping[str, str] | None = None,
                    modalities: Mapping[str, Any] | None = None, overwrite: bool = False, **input: Any) -> Path:
    """Write ``model`` as a folder (model.safetensors, config.json, README.md) → the folder.

    ``input`` keywords state the input contract (``fs``, ``channels``, ``window``, ``step``, ``length``,
    ``normalize``, ``norm_scope``, ``bandpass``, ``notch``, ``standardize``...; the rest are the preprocessing
    defaults and are listed in ``assumed``). The folder is written under a temporary name, then renamed; an
    existing non-empty ``directory`` is refused unless ``overwrite``."""
    from .preprocess.params import SignalParams
    assumed = dict(assumed or {})
    if not isinstance(model, FusionModel):
        for key in SignalParams.names():
            if key != "target_fs" and key not in input and key not in assumed:
                assumed[key] = f"{getattr(SignalParams(), key)!r} (the preprocessing default)"
    config = build_config(model, input=input, task=task, class_names=class_names, thresholds=thresholds,
                          training=training, assumed=assumed, modalities=modalities)
    return write_folder(model, config, directory, overwrite=overwrite)




def check_target(directory: str | Path, overwrite: bool = False) -> Path:
    """Refuse a ``directory`` that is a file, or a non-empty folder unless ``overwrite`` (one-line errors)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory}: exists and is not a folder")
    if directory.is_dir() and any(directory.iterdir()) and not overwrite:
        raise ValueError(f"{directory}: the folder exists and is not empty (pass --overwrite / overwrite=True to "
                         "replace it)")
    return directory


def write_folder(model: torch.nn.Module, config: Mapping[str, Any], directory: str | Path,
                 overwrite: bool = False) -> Path:
    """model.safetensors, config.json and README.md into a temporary sibling folder, then renamed to ``directory``."""
    from safetensors.torch import save_file
    directory = check_target(directory, overwrite)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt", "physiowave_model_type": type(model).__name__})
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, allow_nan=False) + "\n")
        (tmp / CARD).write_text(model_card(config, sum(v.numel() for v in model.parameters())))
        old = None
        if directory.is_dir():
            if any(directory.iterdir()):
                old = directory.with_name(f".{directory.name}.old-{uuid.uuid4().hex[:8]}")
                os.replace(directory, old)
            else:
                directory.rmdir()
        os.replace(tmp, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return directory


# --------------------------------------------------------------------------------------------------- model card
def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) if value else "—"
    return f"{value:g}" if isinstance(value, float) else str(value)


def model_card(config: Mapping[str, Any], n_params: int | None = None) -> str:
    """README.md of a folder, from its config: what the model takes, gives, and how it was trained."""
    arch, inp, training = config["architecture"], config.get("input"), config.get("training") or {}
    fusion = config["model_type"] == "FusionModel"
    tags = ["physiowave", "biosignals", "time-series", "pytorch", "safetensors"]
    lines = ["---", "library_name: physiowave", "tags:", *[f"- {t}" for t in tags], "---", "",
             f"# PhysioWave {'fusion ' if fusion else ''}model", "",
             "A PhysioWave wavelet-transformer (arXiv 2506.10351)"
             + (f" with {n_params:,} parameters" if n_params else "") + ", written by physiowave "
             f"{config.get('physiowave_version')}. `config.json` holds every fact below in machine-readable form.", "",
             "## Use", "", "```python", "import physiowave",
             f"model = physiowave.from_pretrained(\"THIS_FOLDER_OR_REPO_ID\")  # {config['model_type']}, eval mode",
             "```", ""]
    if not fusion:
        lines += ["```bash",
                  "physiowave predict THIS_FOLDER_OR_REPO_ID records/ -o predictions.csv  # applies the input contract",
                  "physiowave embed THIS_FOLDER_OR_REPO_ID records/ -o embeddings.h5", "```", ""]
    if inp:
        lines += ["## Input contract", "",
                  "Raw records are prepared as the training data was (`physiowave predict/embed` do this):", "",
                  "| | |", "|---|---|",
                  f"| sampling rate | {_fmt(inp['fs'])} Hz (records are resampled to it) |" if inp["fs"] is not None
                  else "| sampling rate | not known: each record's own rate is used |",
                  f"| channels | {inp['num_channels']}: "
                  + (_fmt(inp["channels"]) + " (in this order)" if inp.get("channels")
                     else "every channel of a record, in its order")
                  + " |",
                  f"| window / step | {inp['window']} / {inp['step']} samples; model input length {inp['length']} |",
                  f"| preprocessing normalisation | {inp['normalize']} over each {inp['norm_scope']} |",
                  f"| filters | band-pass {_fmt(inp['bandpass']) + ' Hz' if inp.get('bandpass') else 'none'}, "
                  f"notch {_fmt(inp['notch']) + ' Hz' if inp.get('notch') else 'none'} |",
                  f"| per-sample z-score at training | {'yes' if inp.get('standardize') else 'no'} |",
                  f"| model input normalisation | {inp.get('input_norm')} |", ""]
    elif fusion and config.get("modalities"):
        lines += ["## Input", "", "One tensor per modality:", ""]
        lines += [f"- `{n}`: {_fmt(m.get('channels'))} channels × {_fmt(m.get('length'))} samples"
                  for n, m in config["modalities"].items()] + [""]
    if config.get("assumed"):
        lines += ["Not recorded by the source and assumed when this folder was written:", ""]
        lines += [f"- `{k}`: {v}" for k, v in config["assumed"].items()] + [""]
    lines += ["## Output", ""]
    if config.get("task"):
        lines.append(f"{_TASKS[config['task']]} into {len(config['class_names'])} classes: "
                     + ", ".join(f"`{c}`" for c in config["class_names"]) + ".")
        if config.get("thresholds") is not None:
            lines.append("Decision thresholds (tuned on validation data): "
                         + ", ".join(f"{c} {t:.3f}" for c, t in zip(config["class_names"], config["thresholds"])) + ".")
    else:
        lines.append("No classification head: encoder embeddings (`model.encode`, `model.features`) "
                     "and reconstruction.")
    lines += ["", "## Training", ""]
    facts = {"source checkpoint": training.get("source"), "written by": training.get("source_written_by"),
             "training data": training.get("training_data"), "protocol": training.get("protocol"),
             "epochs": training.get("epochs_completed")}
    data = training.get("data") or {}
    if data.get("train_files"):
        facts["training files"] = ", ".join(Path(f).name for f in data["train_files"])
    if data.get("train_samples"):
        facts["training samples"] = data["train_samples"]
    if data.get("pretrained"):
        facts["initialised from"] = data["pretrained"] if isinstance(data["pretrained"],
                                                                     str) else json.dumps(data["pretrained"])
    if training.get("validation"):
        facts["validation"] = ", ".join(f"{k} {v:.4g}" for k, v in training["validation"].items()
                                        if isinstance(v, (int, float)))
    shown = [f"- {k}: {v}" for k, v in facts.items() if v not in (None, "", [])]
    lines += shown or ["Not recorded."]
    lines += ["", "## Architecture", "", "```json", json.dumps(arch, indent=1), "```", ""]
    return "\n".join(lines)
