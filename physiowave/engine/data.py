"""The data of a run: train/val/test data sets from the flags, and every check on them before training starts.

:func:`open_datasets` opens the files (exact keys, one shape), carves the validation split and the label fraction,
and refuses empty splits; :func:`check_labels` holds every split's labels against the model's classes;
:func:`find_nonfinite_values` scans the files for NaN/inf. Each problem is a one-line :class:`ConfigError`
naming the file or flag.
"""
from __future__ import annotations

import json
import warnings
from typing import Any

import h5py
import numpy as np
from torch.utils.data import Dataset

from ..data import (Augmentation, H5Dataset, MultiModalDataset, find_nonfinite, parse_file_paths)
from ..contract import ATTR_CLASS_NAMES, ATTR_FS, ATTR_PREPROCESSING, GROUP_ID, LABEL_KEYS, RECORD_ID
from ..data.fractions import label_fraction_indices
from ..fileio import file_stamp
from .config import RunConfig
from .errors import ConfigError
from .tasks import Task

__all__ = ["Indexed", "Subset", "open_datasets", "check_labels", "find_nonfinite_values",
           "record_ids_of", "split_indices", "class_names_of", "fit_class_names"]


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


def _record_ids(paths: list[str], key: str = RECORD_ID) -> np.ndarray | None:
    """Per-window ``record_id`` (or another per-window string ``key``) written by physiowave.preprocess (None when
    any file lacks it)."""
    ids = []
    for path in paths:
        with h5py.File(path, "r") as f:
            if key not in f:
                return None
            ids.append(np.asarray(f[key][:]).astype(str))
    return np.concatenate(ids)


def _groups(paths: list[str]) -> tuple[np.ndarray | None, str]:
    """The units a label fraction or a held-out split keeps whole: each window's patient (``group_id``) when every
    file has one, else its recording (``record_id``) → (``[N]`` ids or None, which of the two)."""
    groups = _record_ids(paths, GROUP_ID)
    if groups is not None:
        return groups, GROUP_ID
    groups = _record_ids(paths)
    return groups, RECORD_ID if groups is not None else "sample"


def record_ids_of(ds: Dataset | None) -> np.ndarray | None:
    """The ``record_id`` of every sample of a data set (in its order), or None when its files have none."""
    if ds is None:
        return None
    if isinstance(ds, Subset):
        ids = record_ids_of(ds.dataset)
        return None if ids is None else ids[ds.indices]
    return _record_ids(ds.file_paths)


def class_names_of(paths: list[str]) -> list[str] | None:
    """Class names stored as the ``class_names`` attribute of the first file's root or label dataset, if any."""
    with h5py.File(paths[0], "r") as f:
        for obj in (f, *(f[k] for k in LABEL_KEYS if k in f)):
            names = obj.attrs.get(ATTR_CLASS_NAMES)
            if names is not None:
                return [n.decode() if isinstance(n, bytes) else str(n) for n in np.atleast_1d(names)]
    return None


def fit_class_names(names: list[str] | None, num_classes: int, label_kind: str, where: str
                    ) -> tuple[list[str] | None, str | None]:
    """The stored class ``names`` fitted to a head of ``num_classes`` outputs → (names, a note for the log or None).

    Single-label: ``--num_classes`` larger than the names stored (classes without a training sample) appends
    ``class_K`` for each unnamed class K, and says so. More names than outputs, or a multi-label file whose names
    do not match its label columns, is a ConfigError naming ``where`` (the file)."""
    if names is None or len(names) == num_classes:
        return names, None
    if label_kind == "single" and len(names) < num_classes:
        extra = [f"class_{k}" for k in range(len(names), num_classes)]
        return names + extra, (f"note: {where} names {len(names)} classes and the model has {num_classes}: the "
                               f"others are called {', '.join(extra)}")
    if label_kind == "single":
        raise ConfigError(f"{where}: its class_names attribute names {len(names)} classes, the model has {num_classes} "
                          f"outputs (labels 0..{num_classes - 1}): pass --num_classes {len(names)} if the other "
                          "classes exist, or fix the attribute")
    raise ConfigError(f"{where}: its class_names attribute names {len(names)} classes, the model has {num_classes} "
                      "label columns: fix the attribute (one name per label column)")


def preprocessing_of(path: str) -> dict[str, Any] | None:
    """How ``physiowave.preprocess`` made a file: its flags (``input_fs``: the rate given for CSV input) plus the
    output rate ``fs``; None for files written by other tools."""
    with h5py.File(path, "r") as f:
        text = f.attrs.get(ATTR_PREPROCESSING)
        if text is None:
            return None
        params = json.loads(text)
        if "fs" in params:  # the folder source's --fs: the rate of its CSV input
            params["input_fs"] = params.pop("fs")
        if ATTR_FS in f.attrs:
            params["fs"] = float(f.attrs[ATTR_FS])
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


def _open(paths: list[str], args: RunConfig, task: Task, train: bool) -> H5Dataset | MultiModalDataset:
    """One split's files as a data set (training: random crops and augmentation)."""
    augment = Augmentation() if train and args.use_augmentation else None
    modalities = args.modalities
    if modalities:
        return MultiModalDataset(paths, modalities, data_key=args.data_key, label_key=args.label_key,
                                 labels=task.label_kind, seed=args.seed, normalize=args.normalize, augment=augment)
    return H5Dataset(paths, data_key=args.data_key, label_key=args.label_key, labels=task.label_kind,
                     max_length=args.max_length, seed=args.seed, normalize=args.normalize, random_crop=train,
                     augment=augment)


MAX_PADDED_LENGTH = 65_536  # --max_length beyond the stored samples zero-pads them, up to this many samples


def _split_flags(task: Task) -> dict[str, str]:
    pretrain = task.label_kind == "none"
    return {"train": "--train_files" if pretrain else "--train_file",
            "val": "--val_files" if pretrain else "--val_file", "test": "--test_file"}


def open_datasets(args: RunConfig, task: Task) -> dict[str, Any]:
    """Train/val/test data sets of a run → dict with ``train``, ``val``, ``test`` (Dataset or None), ``info`` and
    ``record_ids`` (``{"val", "test"}``: each sample's record, None without labels or without ``record_id``).

    ``--eval`` may go without training files: the validation files then give the shape the model sees, the
    checkpoint gives the classes (``train`` is None, ``info`` has no class counts).

    Raises ConfigError (naming the file or flag) for a missing file or key, a shape that differs between splits,
    an empty split (also one left empty by ``--val_split_ratio`` or ``--label_fraction``), or a bad ``--num_classes``.
    """
    flags = _split_flags(task)
    paths = {split: parse_file_paths(getattr(args, f"{split}_files")) for split in ("train", "val", "test")}
    evaluating = args.eval
    if not paths["train"] and not (evaluating and paths["val"]):
        raise ConfigError(f"{flags['train']}: no file given")
    try:
        sets = {split: _open(files, args, task, split == "train") if files else None for split, files in paths.items()}
    except (FileNotFoundError, KeyError, OSError, ValueError) as err:
        raise ConfigError(str(err).strip("'\"")) from err
    train = sets["train"]
    ref, ref_split = (train, "training") if train is not None else (sets["val"], "validation")  # fixes the shape
    _warn_shared_files(paths, flags)
    info: dict[str, Any] = {"train_files": paths["train"], "val_files": paths["val"], "test_files": paths["test"],
                            "label_kind": ref.label_kind, **_shape_info(ref)}
    if args.max_length and not args.modalities and args.max_length > max(MAX_PADDED_LENGTH, info["stored_length"]):
        raise ConfigError(f"--max_length {args.max_length}: expected "
                          f"1..{max(MAX_PADDED_LENGTH, info['stored_length'])} (the {ref_split} samples of "
                          f"{ref.file_paths[0]} are {info['stored_length']} long; "
                          "longer lengths only add zero padding)")
    for split in ("val", "test"):
        ds = sets[split]
        # the model sees channels × length after --max_length: longer stored training records (random crops) and
        # shorter evaluation windows agree when both come out at that length
        if ds is not None and ds is not ref and _model_shape(ds) != _model_shape(ref):
            raise ConfigError(f"{ds.file_paths[0]}: {split} samples are {_describe(ds)}, {ref_split} samples "
                              f"{_describe(ref)} (channels × length"
                              + ("" if args.modalities else " after --max_length") + ")")
    if args.modalities:
        info["modalities"] = {m.name: {"source": m.source, "checkpoint": m.checkpoint, "channels": c, "length": t,
                                       "flagged_absent": train.absent_counts[m.name]}
                              for m, (c, t) in zip(args.modalities, ref.shapes.values())}
    if train is None:  # --eval without training files: the checkpoint's head fixes the classes
        return _evaluation_datasets(sets, info, task)
    train_set, val, labels = _training_subsets(args, task, sets, info)
    for split, ds in (("train", train_set), ("val", val), ("test", sets["test"])):
        if ds is not None and len(ds) == 0:
            raise ConfigError(_empty_split(split, flags, paths, info, args))
    if task.label_kind != "none":
        info.update(_label_info(args, train, labels))
    info["preprocessing"] = preprocessing_of(paths["train"][0])
    info["train_samples"] = len(train_set)
    info["train_file_stamps"] = [file_stamp(p) for p in paths["train"]]  # a resume refuses other training data
    labelled = task.label_kind != "none"
    records = {split: record_ids_of(ds) if labelled else None for split, ds in (("val", val), ("test", sets["test"]))}
    return {"train": train_set, "val": val, "test": sets["test"], "info": info, "record_ids": records}


def _evaluation_datasets(sets: dict[str, Any], info: dict[str, Any], task: Task) -> dict[str, Any]:
    """:func:`open_datasets`' result for ``--eval`` without training files: validation and test sets as given."""
    val, test = sets["val"], sets["test"]
    for split, ds in (("val", val), ("test", test)):
        if ds is not None and len(ds) == 0:
            raise ConfigError(f"{', '.join(ds.file_paths)}: the {split} set has no samples")
    labelled = task.label_kind != "none"
    info.update(class_names=class_names_of(val.file_paths) if labelled else None,
                preprocessing=preprocessing_of(val.file_paths[0]), train_samples=0, train_file_stamps=[])
    records = {split: record_ids_of(ds) if labelled else None for split, ds in (("val", val), ("test", test))}
    return {"train": None, "val": val, "test": test, "info": info, "record_ids": records}


def data_report(info: dict[str, Any]) -> list[str]:
    """What the run trains on, for the log: samples per class, and what ``--label_fraction`` kept."""
    lines = []
    counts = info.get("class_counts")
    if counts is not None:
        names = info.get("class_names") or [str(i) for i in range(len(counts))]
        kind = "positives" if info.get("label_kind") == "multi" else "samples"
        lines.append(f"training {kind} per class: " + ", ".join(f"{n}: {int(c)}" for n, c in zip(names, counts)))
    fraction = info.get("label_fraction")
    if fraction:
        kept = "; ".join(f"{v['kept']} of {v['of']} {unit} ({100 * v['kept'] / max(1, v['of']):.1f} %)"
                         for unit, v in fraction.items()
                         if isinstance(v, dict) and "kept" in v)
        lines.append(f"--label_fraction {fraction['fraction']:g} (drawn by {fraction.get('by', 'sample')}): "
                     f"kept {kept}")
    return lines


def _warn_shared_files(paths: dict[str, list[str]], flags: dict[str, str]) -> None:
    """A file given for two splits (train and val, val and test...) scores the model on what it trained or was
    selected on: said, as a warning naming the file and the flags."""
    from pathlib import Path
    seen: dict[Path, str] = {}
    for split, files in paths.items():
        for file in files:
            key = Path(file).resolve()
            if key in seen and seen[key] != split:
                warnings.warn(f"{file} is given as both {flags[seen[key]]} and {flags[split]}: the {split} scores "
                              "are not held out", stacklevel=2)
            seen.setdefault(key, split)


def _empty_split(split: str, flags: dict[str, str], paths: dict[str, list[str]], info: dict[str, Any],
                 args: RunConfig) -> str:
    """Why split ``split`` has no samples, naming the flag and files that made it so."""
    train = f"{flags['train']} {', '.join(paths['train'])}"
    held = info.get("val_split")
    if split == "val" and held:
        return (f"{train}: --val_split_ratio {args.val_split_ratio:g} of its {held['train'] + held['val']} samples "
                "holds out none for validation: pass --val_file or a larger ratio")
    if split == "train" and "label_fraction" in info:
        return f"{train}: --label_fraction {args.label_fraction:g} keeps no training sample: pass a larger fraction"
    if split == "train" and held:
        return (f"{train}: --val_split_ratio {args.val_split_ratio:g} holds out all {held['val']} samples: pass "
                "--val_file or a smaller ratio")
    return f"{flags[split]} {', '.join(paths[split])}: the {split} set has no samples"


def _training_subsets(args: RunConfig, task: Task, sets: dict[str, Any], info: dict[str, Any]
                      ) -> tuple[Dataset, Dataset | None, np.ndarray | None]:
    """(training set after the automatic validation split and ``--label_fraction``, validation set, the labels of
    the training samples kept)."""
    train, val = sets["train"], sets["val"]
    labels, train_set = train.labels_array, train
    fraction = args.label_fraction
    groups, by = None, "sample"
    if task.label_kind != "none" and (val is None or fraction < 1.0):
        groups, by = _groups(info["train_files"])
    if val is None and args.val_split_ratio > 0:
        tr_idx, va_idx = split_indices(len(train), args.val_split_ratio, args.seed, groups)
        info["val_split"] = {"by": by, "train": len(tr_idx), "val": len(va_idx)}
        if groups is None:
            warnings.warn(f"{info['train_files'][0]}: no 'record_id' dataset, "
                          "so the validation split is drawn by sample: overlapping windows of one recording can land "
                          "on both sides; pass --val_file to avoid it", stacklevel=2)
        train_set = Subset(train, tr_idx)
        val = Subset(_open(info["train_files"], args, task, train=False), va_idx)
        labels = labels[tr_idx]
        groups = groups[tr_idx] if groups is not None else None
    if task.label_kind != "none" and fraction < 1.0 and len(train_set):
        train_set, labels, info["label_fraction"] = _label_fraction(train, train_set, labels, groups, fraction,
                                                                    args.seed, by)
    return train_set, val, labels


def _label_info(args: RunConfig, train: H5Dataset | MultiModalDataset, labels: np.ndarray) -> dict[str, Any]:
    """``num_classes`` (the data's, or ``--num_classes`` when larger), ``class_counts`` and ``class_names``."""
    num_classes = train.num_classes
    requested = args.num_classes
    if requested:
        if requested < num_classes:
            raise ConfigError(f"--num_classes {requested}: the training labels go up to {num_classes - 1}")
        num_classes = requested
    _check_label_set(train, gaps_allowed=bool(requested))
    counts = np.bincount(labels, minlength=num_classes) if train.label_kind == "single" else labels.sum(0)
    return {"num_classes": num_classes, "class_counts": counts.astype(np.int64).tolist(),
            "class_names": class_names_of(train.file_paths)}


def _check_label_set(train: H5Dataset | MultiModalDataset, gaps_allowed: bool) -> None:
    """Single-label training data must hold two classes or more, and every class from 0 to the largest label: a
    gap is almost always a typo (a label 99 among 0..4 would build a 100-class head). ``--num_classes`` confirms
    classes that have no training sample."""
    labels = getattr(train, "labels_array", None)
    if train.label_kind != "single" or labels is None or not len(labels):
        return
    where = ", ".join(train.file_paths)
    present = np.unique(labels)
    if len(present) < 2:
        raise ConfigError(f"{where}: every training label is {present[0]}: one class leaves nothing to classify")
    missing = np.setdiff1d(np.arange(present.max() + 1), present)
    if len(missing) and not gaps_allowed:
        shown = ", ".join(map(str, missing[:8])) + (" …" if len(missing) > 8 else "")
        raise ConfigError(f"{where}: labels go up to {present.max()} but classes {shown} ({len(missing)} of "
                          f"{present.max() + 1}) have no training sample: a typo in the labels? Pass --num_classes "
                          f"{present.max() + 1} if those classes are meant to exist")


def check_labels(data: dict[str, Any], num_classes: int, label_kind: str) -> None:
    """Every split's labels fit a model of ``num_classes`` outputs: class indices below it (single-label), exactly
    that many labels (multi-label); a checkpoint's head fixes it when resuming or evaluating."""
    for split in ("train", "val", "test"):
        ds = data[split]
        base = ds.dataset if isinstance(ds, Subset) else ds
        labels = None if ds is None else base.labels_array
        if labels is None or not len(labels):
            continue
        where = base.file_paths[0] if len(base.file_paths) == 1 else ", ".join(base.file_paths)
        if label_kind == "single" and labels.max() >= num_classes:
            raise ConfigError(f"{where}: {split} labels go up to {labels.max()}, "
                              f"but the model has {num_classes} classes (0..{num_classes - 1})")
        if label_kind == "multi" and labels.shape[1] != num_classes:
            raise ConfigError(f"{where}: {split} samples have {labels.shape[1]} labels each, "
                              f"the model has {num_classes}")


def find_nonfinite_values(data: dict[str, Any], args: RunConfig, progress: bool) -> str | None:
    """The first NaN/inf found in the run's files, as one message naming file, key and sample (None: all finite).
    Each file is read once in blocks; a fusion sample whose modality is entirely NaN is an absent modality, not
    an error."""
    seen: set[tuple[str, str]] = set()
    for split in ("train", "val", "test"):
        ds = data[split]
        ds = ds.dataset if isinstance(ds, Subset) else ds
        if ds is None:
            continue
        fusion = isinstance(ds, MultiModalDataset)
        for path, key in ds.sources:
            if (path, key) in seen:
                continue
            seen.add((path, key))
            groups = ds.channel_groups(path, key) if fusion else None
            found = find_nonfinite(path, key, allow_missing_samples=fusion, channel_groups=groups, progress=progress)
            if found is not None:
                return (f"{path}: '{key}' {found.describe()}; clean the file (physiowave.preprocess writes finite "
                        "windows) or pass --no-check_data to train anyway")
    return None


def _label_fraction(full: Dataset, train_set: Dataset, labels: np.ndarray, groups: np.ndarray | None, fraction: float,
                    seed: int, by: str = RECORD_ID) -> tuple[Subset, np.ndarray, dict[str, Any]]:
    """``train_set`` (``full`` or a Subset of it, with these ``labels`` and ``groups``: patients or records, as
    ``by`` says) cut to ``fraction`` of its groups by :func:`label_fraction_indices` → (subset of ``full``, its
    labels, the ``info`` entry; its ``records`` count the groups)."""
    keep = label_fraction_indices(labels, fraction, seed, groups)
    base = train_set.indices if isinstance(train_set, Subset) else np.arange(len(train_set))
    entry: dict[str, Any] = {"fraction": fraction, "by": by if groups is not None else "sample",
                             "samples": {"kept": len(keep), "of": len(labels)}}
    if groups is not None:
        entry["records"] = {"kept": len(np.unique(groups[keep])), "of": len(np.unique(groups))}
    entry["chosen"] = sorted(np.unique(groups[keep]).tolist()) if groups is not None else [int(i) for i in base[keep]]
    return Subset(full, base[keep]), labels[keep], entry



def _shape_info(ds: H5Dataset | MultiModalDataset) -> dict[str, Any]:
    """``channels``, ``length`` (returned) and ``stored_length``: ints, or ``{modality: int}`` for fusion data."""
    if isinstance(ds, MultiModalDataset):
        shapes = ds.shapes
        return {"channels": {n: c for n, (c, _) in shapes.items()}, "length": {n: t for n, (_, t) in shapes.items()},
                "stored_length": {n: t for n, (_, t) in shapes.items()}}
    return {"channels": ds.num_channels, "length": ds.output_length, "stored_length": ds.length}


def _model_shape(ds: H5Dataset | MultiModalDataset) -> tuple[Any, Any]:
    """(channels, length the model sees): ints, or ``{modality: int}`` for fusion data."""
    info = _shape_info(ds)
    return info["channels"], info["length"]


def _describe(ds: H5Dataset | MultiModalDataset) -> str:
    if isinstance(ds, MultiModalDataset):
        return ", ".join(f"{n} {c}×{t}" for n, (c, t) in ds.shapes.items())
    return f"{ds.num_channels}×{ds.output_length}"


