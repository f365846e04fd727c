"""Building a run's pieces from its flags: data sets, model configuration, pretrained weights, optimizer."""
from __future__ import annotations

import argparse
import json
import math
import warnings
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..checkpoint import clean_state_dict, extract_state_dict, infer_config, load_encoder_weights, model_args, read_checkpoint
from ..data import Augmentation, H5Dataset, Modality, MultiModalDataset, parse_file_paths, parse_modality
from ..data.fractions import label_fraction_indices
from ..models import LEGACY_CONFIG, FusionModel, PhysioWave
from .args import ARCH_FLAGS, MODEL_DEFAULTS

__all__ = ["ConfigError", "Indexed", "Subset", "open_datasets", "modalities_of", "split_indices", "resolve_model_config",
           "head_config", "build_model", "build_fusion_model", "frozen_parameter_names", "decays", "build_optimizer", "class_names_of"]


class ConfigError(ValueError):
    """A flag, file or checkpoint that cannot be used: reported as one line, no traceback."""


class Indexed(Dataset):
    """Items as ``(index, item)``, so evaluation outputs can be gathered across processes in dataset order."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return i, self.dataset[i]


class Subset(Dataset):
    """``dataset`` restricted to ``indices`` (keeps ``set_epoch``)."""

    def __init__(self, dataset: H5Dataset, indices: np.ndarray):
        self.dataset, self.indices = dataset, np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[int(self.indices[i])]

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)


def _record_ids(paths: list[str]) -> np.ndarray | None:
    """Per-window ``record_id`` written by physiowave.preprocess (None when any file lacks it)."""
    ids = []
    for path in paths:
        with h5py.File(path, "r") as f:
            if "record_id" not in f:
                return None
            ids.append(np.asarray(f["record_id"][:]).astype(str))
    return np.concatenate(ids)


def class_names_of(paths: list[str]) -> list[str] | None:
    """Class names stored as the ``class_names`` attribute of the first file's root or label dataset, if any."""
    with h5py.File(paths[0], "r") as f:
        for obj in (f, *(f[k] for k in ("label", "labels") if k in f)):
            names = obj.attrs.get("class_names")
            if names is not None:
                return [n.decode() if isinstance(n, bytes) else str(n) for n in np.atleast_1d(names)]
    return None


def preprocessing_of(path: str) -> dict[str, Any] | None:
    """How ``physiowave.preprocess`` made a file: its flags (``input_fs``: the rate given for CSV input) plus the
    output rate ``fs``; None for files written by other tools."""
    with h5py.File(path, "r") as f:
        text = f.attrs.get("preprocessing")
        if text is None:
            return None
        params = json.loads(text)
        if "fs" in params:  # the folder source's --fs: the rate of its CSV input
            params["input_fs"] = params.pop("fs")
        if "fs" in f.attrs:
            params["fs"] = float(f.attrs["fs"])
    return params


def split_indices(n: int, ratio: float, seed: int, groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``ratio`` of the samples → (train, val) indices; whole groups (records) go to one side."""
    rng = np.random.default_rng(seed)
    if groups is None:
        perm = rng.permutation(n)
        k = int(n * ratio)
        return np.sort(perm[k:]), np.sort(perm[:k])
    unique = rng.permutation(np.unique(groups))
    held = set(unique[: max(1, int(round(len(unique) * ratio)))].tolist()) if ratio > 0 else set()
    is_val = np.array([g in held for g in groups])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def _label_mode(args: argparse.Namespace) -> str:
    if args.task == "pretrain":
        return "none"
    return "single" if args.task_type == "classification" else "multi"


def open_datasets(args: argparse.Namespace) -> dict[str, Any]:
    """Train/val/test data sets of a run → dict with ``train``, ``val``, ``test`` (Dataset or None) and ``info``."""
    mode = _label_mode(args)
    common = dict(data_key=args.data_key, label_key=args.label_key, labels=mode, max_length=args.max_length,
                  seed=args.seed, normalize=args.normalize)
    train_paths = parse_file_paths(args.train_files if args.task == "pretrain" else args.train_file)
    val_paths = parse_file_paths(args.val_files if args.task == "pretrain" else args.val_file)
    test_paths = parse_file_paths(getattr(args, "test_file", ""))
    flag = "--train_files" if args.task == "pretrain" else "--train_file"
    if not train_paths:
        raise ConfigError(f"{flag}: no file given")
    augment = Augmentation() if args.use_augmentation else None
    modalities = modalities_of(args)

    def dataset(paths: list[str], train: bool = False) -> H5Dataset | MultiModalDataset:
        aug = augment if train else None
        if modalities:
            return MultiModalDataset(paths, modalities, data_key=args.data_key, label_key=args.label_key, labels=mode,
                                     seed=args.seed, normalize=args.normalize, augment=aug)
        return H5Dataset(paths, random_crop=train, augment=aug, **common)

    try:
        train = dataset(train_paths, train=True)
        val = dataset(val_paths) if val_paths else None
        test = dataset(test_paths) if test_paths else None
    except (FileNotFoundError, KeyError, OSError, ValueError) as err:
        raise ConfigError(str(err).strip("'\"")) from err
    info: dict[str, Any] = {"train_files": train_paths, "val_files": val_paths, "test_files": test_paths,
                            "label_kind": train.label_kind, **_shape_info(train)}
    if modalities:
        info["modalities"] = {m.name: {"source": m.source, "checkpoint": m.checkpoint, "channels": c, "length": t,
                                       "flagged_absent": train.absent_counts[m.name]}
                              for m, (c, t) in zip(modalities, train.shapes.values())}
    for name, ds in (("val", val), ("test", test)):
        if ds is not None and _shape_info(ds) != _shape_info(train):
            raise ConfigError(f"{ds.file_paths[0]}: {name} samples are {_describe(ds)}, training samples {_describe(train)} "
                              "(channels × length" + ("" if modalities else " after --max_length") + ")")
    labels = train.labels_array
    train_set: Dataset = train
    fraction = getattr(args, "label_fraction", 1.0)
    groups = _record_ids(train_paths) if mode != "none" and (val is None or fraction < 1.0) else None
    if args.task == "finetune" and val is None and args.val_split_ratio > 0:
        tr_idx, va_idx = split_indices(len(train), args.val_split_ratio, args.seed, groups)
        info["val_split"] = {"by": "record_id" if groups is not None else "sample", "train": len(tr_idx), "val": len(va_idx)}
        if groups is None:
            warnings.warn(f"{train_paths[0]}: no 'record_id' dataset, so the validation split is drawn by sample: "
                          "overlapping windows of one recording can land on both sides; pass --val_file to avoid it",
                          stacklevel=2)
        train_set = Subset(train, tr_idx)
        val = Subset(dataset(train_paths), va_idx)
        labels = labels[tr_idx]
        groups = groups[tr_idx] if groups is not None else None
    if mode != "none" and fraction < 1.0:
        train_set, labels, info["label_fraction"] = _label_fraction(train, train_set, labels, groups, fraction, args.seed)
    if mode != "none":
        info["num_classes"] = train.num_classes
        info["class_counts"] = (np.bincount(labels, minlength=train.num_classes) if mode == "single"
                                else labels.sum(0)).astype(np.int64).tolist()
        info["class_names"] = class_names_of(train_paths)
    info["preprocessing"] = preprocessing_of(train_paths[0])
    info["train_samples"] = len(train_set)
    return {"train": train_set, "val": val, "test": test, "info": info}


def _label_fraction(full: Dataset, train_set: Dataset, labels: np.ndarray, groups: np.ndarray | None, fraction: float,
                    seed: int) -> tuple[Subset, np.ndarray, dict[str, Any]]:
    """``train_set`` (``full`` or a Subset of it, with these ``labels`` and record ``groups``) cut to ``fraction`` of
    its records by :func:`label_fraction_indices` → (subset of ``full``, its labels, the ``info`` entry)."""
    keep = label_fraction_indices(labels, fraction, seed, groups)
    base = train_set.indices if isinstance(train_set, Subset) else np.arange(len(train_set))
    entry: dict[str, Any] = {"fraction": fraction, "by": "record_id" if groups is not None else "sample",
                             "samples": {"kept": len(keep), "of": len(labels)}}
    if groups is not None:
        entry["records"] = {"kept": len(np.unique(groups[keep])), "of": len(np.unique(groups))}
    return Subset(full, base[keep]), labels[keep], entry


def modalities_of(args: argparse.Namespace) -> list[Modality]:
    """The parsed ``--modality`` specs ([] for a single-modality run)."""
    return [parse_modality(spec) for spec in getattr(args, "modality", None) or []]


def _shape_info(ds: H5Dataset | MultiModalDataset) -> dict[str, Any]:
    """``channels``, ``length`` (returned) and ``stored_length``: ints, or ``{modality: int}`` for fusion data."""
    if isinstance(ds, MultiModalDataset):
        shapes = ds.shapes
        return {"channels": {n: c for n, (c, _) in shapes.items()}, "length": {n: t for n, (_, t) in shapes.items()},
                "stored_length": {n: t for n, (_, t) in shapes.items()}}
    return {"channels": ds.num_channels, "length": ds.output_length, "stored_length": ds.length}


def _describe(ds: H5Dataset | MultiModalDataset) -> str:
    if isinstance(ds, MultiModalDataset):
        return ", ".join(f"{n} {c}×{t}" for n, (c, t) in ds.shapes.items())
    return f"{ds.num_channels}×{ds.output_length}"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def checkpoint_model_config(path: str) -> tuple[dict[str, Any], dict[str, torch.Tensor], Any]:
    """(architecture values stored in a checkpoint, its cleaned state dict, the raw checkpoint)."""
    try:
        ckpt = read_checkpoint(path)
        state = clean_state_dict(extract_state_dict(ckpt))
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(str(err)) from err
    stored = (ckpt.get("model_config") if isinstance(ckpt, dict) else None) or model_args(ckpt)
    if stored is None:
        stored, assumed = infer_config(state)
        stored = {k: v for k, v in stored.items() if k not in assumed or k == "num_heads"}
        warnings.warn(f"{path}: no 'args' in the checkpoint; architecture read from its shapes "
                      f"(num_heads={stored['num_heads']} assumed: pass --num_heads if that is wrong)", stacklevel=2)
    if isinstance(stored.get("patch_size"), (list, tuple)):
        stored = {**stored, "patch_size": int(stored["patch_size"][-1])}
    return dict(stored), state, ckpt


def resolve_model_config(args: argparse.Namespace, data_channels: int, stored: dict[str, Any] | None,
                         source: str | None) -> dict[str, Any]:
    """Encoder flags: explicit flag, else the checkpoint's value, else the script default; in_channels from the data."""
    config: dict[str, Any] = {}
    if stored is not None:
        stored = {**LEGACY_CONFIG, **stored}  # a file from before a setting keeps its original function
    for key, default in MODEL_DEFAULTS[args.task].items():
        flag = getattr(args, key, None)
        if stored is not None and stored.get(key) is not None:
            if flag is not None and key in ARCH_FLAGS and not _same(flag, stored[key]):
                raise ConfigError(f"--{key} {flag} contradicts the checkpoint {source} ({key}={stored[key]}): "
                                  "drop the flag to use the checkpoint's value")
            config[key] = flag if flag is not None else stored[key]
        else:
            config[key] = flag if flag is not None else default
    if config["in_channels"] is None:
        config["in_channels"] = data_channels
    elif config["in_channels"] != data_channels:
        raise ConfigError(f"--in_channels {config['in_channels']}: the training data has {data_channels} channels"
                          + (f" (model from {source})" if stored is not None else ""))
    return config


def head_config(args: argparse.Namespace, num_classes: int, embed_dim: int) -> dict[str, Any]:
    """Classification-head kwargs of PhysioWave from the flags (``--probe linear``: LayerNorm + Linear)."""
    if args.freeze_encoder and (args.probe or "linear") == "linear":
        hidden: Any = []
    elif args.head_hidden_dim:
        hidden = args.head_hidden_dim
    elif getattr(args, "hidden_factor", None):
        hidden = args.hidden_factor * embed_dim
    else:
        hidden = None
    return dict(num_classes=num_classes, head_hidden_dim=hidden, head_dropout=args.head_dropout, pooling=args.pooling)


def build_model(config: dict[str, Any]) -> PhysioWave | FusionModel:
    """The model a stored or resolved configuration describes (a fusion configuration has ``modalities``)."""
    try:
        return FusionModel.from_config(config) if "modalities" in config else PhysioWave(**{**LEGACY_CONFIG, **config})
    except (ValueError, TypeError) as err:
        raise ConfigError(f"model flags: {err}") from err


def load_pretrained(model: PhysioWave, path: str, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    try:
        return load_encoder_weights(model, state, source=path)
    except ValueError as err:
        raise ConfigError(str(err)) from err


def build_fusion_model(args: argparse.Namespace, info: dict[str, Any], num_classes: int) -> FusionModel:
    """One branch per ``--modality`` (from its checkpoint, with that checkpoint's architecture, or fresh from the
    model flags), fused with the ``--fusion`` settings; ``info["pretrained"]`` records what each branch loaded."""
    loaded_flags = argparse.Namespace(**{**vars(args), **{k: None for k in ARCH_FLAGS}})  # a checkpoint fixes its shape
    branches: dict[str, PhysioWave] = {}
    reports: dict[str, Any] = {}
    for m in modalities_of(args):
        channels = info["channels"][m.name]
        stored = state = None
        if m.checkpoint:
            stored, state, _ = checkpoint_model_config(m.checkpoint)
            if "modalities" in stored:  # a fusion checkpoint: its branch of the same name
                if m.name not in stored["modalities"]:
                    raise ConfigError(f"--modality {m.name}: {m.checkpoint} is a fusion checkpoint without a "
                                      f"{m.name!r} branch (it has {', '.join(stored['modalities'])})")
                prefix = f"branches.{m.name}."
                stored = stored["modalities"][m.name]
                state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if stored.get("in_channels") not in (None, channels):
                raise ConfigError(f"--modality {m.name}: {m.checkpoint} was trained on {stored['in_channels']} channels, "
                                  f"the modality has {channels}")
        config = resolve_model_config(loaded_flags if m.checkpoint else args, channels, stored, m.checkpoint)
        branch = build_model({**config, "num_classes": None})
        if m.checkpoint:
            report = load_pretrained(branch, m.checkpoint, state)
            reports[m.name] = {"path": m.checkpoint, **{k: v for k, v in report.items() if k != "ignored"}}
        branches[m.name] = branch
    widest = max(b.config["embed_dim"] for b in branches.values())
    head = head_config(args, num_classes, args.fusion_dim or widest)
    if reports:
        info["pretrained"] = reports
    try:
        return FusionModel(branches, fusion=args.fusion or "weighted", fusion_dim=args.fusion_dim, **head)
    except ValueError as err:
        raise ConfigError(f"fusion flags: {err}") from err


def frozen_parameter_names(model: PhysioWave | FusionModel, task: str) -> list[str]:
    """Parameters that get no gradient in this task; frozen so DDP needs no ``find_unused_parameters``."""
    if isinstance(model, FusionModel):
        return sorted(f"branches.{name}.{p}" for name, branch in model.branches.items()
                      for p in frozen_parameter_names(branch, task))
    names = set(model.unused_parameter_names())
    for n, _ in model.named_parameters():
        if task != "pretrain" and (n.startswith("task_heads.pretrain.") or n == "mask_token"):
            names.add(n)  # the reconstruction head is kept (original keys) but unused when fine-tuning
        if task == "pretrain" and n == "mask_token" and model.config.get("decoder") == "transformer":
            names.add(n)  # MAE-style: the encoder never sees mask tokens
    return sorted(names)


def decays(name: str, param: nn.Parameter) -> bool:
    """Whether AdamW's weight decay applies: weight matrices yes; biases, norms, scales, mask tokens and the wavelet
    filter taps no (decay would pull the wavelet bands and the normalisations toward zero)."""
    return param.ndim >= 2 and "wavelet_filters" not in name and "mask_token" not in name


def build_optimizer(named_params: list[tuple[str, nn.Parameter]], args: argparse.Namespace,
                    modality_logits: nn.Parameter | None = None) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (pretraining betas 0.9/0.95, as the original), ``--weight_decay`` on the
    parameters :func:`decays` says, none on the rest. A fusion model's modality logits get their own group:
    ``--fusion_lr``, no weight decay (which would pull them to uniform)."""
    betas = (0.9, 0.95) if args.task == "pretrain" else (0.9, 0.999)
    special = modality_logits if modality_logits is not None and modality_logits.requires_grad else None
    rest = [(n, p) for n, p in named_params if p is not special]
    groups = [{"params": [p for n, p in rest if decays(n, p)]},
              {"params": [p for n, p in rest if not decays(n, p)], "weight_decay": 0.0}]
    if special is not None:
        groups.append({"params": [special], "lr": args.fusion_lr, "weight_decay": 0.0})
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=args.lr, weight_decay=args.weight_decay, betas=betas)


def output_paths(args: argparse.Namespace) -> dict[str, Path]:
    out = Path(args.output_dir)
    latest = "latest_checkpoint.pth" if args.task == "pretrain" else "latest_model.pth"
    return {"dir": out, "latest": out / latest, "best": out / "best_model.pth"}
