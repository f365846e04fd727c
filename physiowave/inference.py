"""Applying a checkpoint to recordings: what ``physiowave embed``, ``predict`` and ``plot`` share.

Raw records (WFDB ``.hea``/``.dat``, Challenge ``.hea``/``.mat``, CSV) go through the preprocessing pipeline
(:func:`physiowave.preprocess.core.process_recording`) with the parameters the training data was made with, as
recorded in the checkpoint, then through what evaluation did to each stored sample (centre crop or pad to the
training length, the ``--normalize`` z-score): a record gives exactly the windows that training evaluated.
Preprocessed HDF5 files are read with the training data set class. Values a checkpoint lacks (original release
files) come from flags, else from the preprocessing defaults, and are reported as assumed.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from tqdm import tqdm

from .checkpoint import model_from_checkpoint, read_checkpoint
from .data.h5 import H5Dataset, fit_length
from .engine.distributed import pick_device
from .models import FusionModel, PhysioWave
from .preprocess.cli import build_parser
from .preprocess.core import Source, process_recording
from .preprocess.readers import ReadError, Recording, read_challenge, read_csv, read_wfdb
from .preprocess.signal import SignalError

__all__ = ["Preparation", "TrainedModel", "Unit", "load_trained", "find_inputs", "read_units", "run_batches",
           "run_inputs", "no_usable_input", "group_mean", "probabilities", "RAW_SUFFIXES", "H5_SUFFIXES"]

RAW_SUFFIXES = (".hea", ".csv", ".tsv", ".txt")
H5_SUFFIXES = (".h5", ".hdf5")
_SIGNAL_KEYS = ("channels", "normalize", "norm_scope", "bandpass", "notch", "max_nan_gap", "window", "step", "tail",
                "min_real")


def _preprocessing_defaults() -> dict[str, Any]:
    return {a.dest: a.default for a in build_parser(Source)._actions if a.dest in _SIGNAL_KEYS}


@dataclass
class Preparation:
    """How a raw recording becomes model input: the preprocessing flags, the model rate ``fs`` (None: keep each
    record's own rate), the training input ``length`` and whether training z-scored each sample (``standardize``).
    ``input_fs`` is the rate of CSV files, which carry none."""
    fs: float | None
    window: int
    step: int
    length: int
    channels: list[str] | None = None
    normalize: str = "zscore"
    norm_scope: str = "window"
    bandpass: list[float] | None = None
    notch: float | None = None
    max_nan_gap: float = 0.1
    tail: str = "pad"
    min_real: float = 0.5
    standardize: bool = False
    input_fs: float | None = None

    def signal_args(self) -> argparse.Namespace:
        """The namespace :func:`process_recording` reads."""
        return argparse.Namespace(**{k: getattr(self, k) for k in _SIGNAL_KEYS}, target_fs=self.fs)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainedModel:
    """A checkpoint ready for inference: the model (eval mode, on ``device``), its task and classes, and the
    preparation of raw input with the values that had to be ``assumed`` (name → explanation)."""
    path: Path
    model: PhysioWave | FusionModel
    device: torch.device
    task: str | None                      # "single", "multi" or None (no classification head)
    class_names: list[str] | None
    thresholds: np.ndarray | None         # multi-label decision thresholds [K]
    preparation: Preparation | None       # None for a fusion model
    assumed: dict[str, str] = field(default_factory=dict)
    args: dict[str, Any] = field(default_factory=dict)        # the training flags (a Namespace in old files)
    checkpoint: dict[str, Any] = field(default_factory=dict)  # everything but the tensors

    @property
    def pooling(self) -> str:
        return self.model.config.get("pooling") or "mean"


def _task_of(ckpt: Mapping[str, Any], args: Mapping[str, Any], has_head: bool) -> str | None:
    if not has_head:
        return None
    kind = (ckpt.get("data") or {}).get("label_kind")
    if kind in ("single", "multi"):
        return kind
    if args.get("task") == "multilabel" or args.get("task_type") == "multilabel" or "hamming_loss" in (ckpt.get("val_metrics") or {}):
        return "multi"
    return "single"


def _preparation(ckpt: Mapping[str, Any], args: Mapping[str, Any], overrides: Mapping[str, Any]
                 ) -> tuple[Preparation, dict[str, str]]:
    data = ckpt.get("data") or {}
    recorded = dict(data.get("preprocessing") or {})
    defaults = _preprocessing_defaults()
    assumed: dict[str, str] = {}
    values: dict[str, Any] = {}
    for key in ("fs", "input_fs", *_SIGNAL_KEYS):
        if overrides.get(key) is not None:
            values[key] = overrides[key]
        elif key in recorded:
            values[key] = recorded[key]
        elif key == "fs":
            values[key] = None
            assumed[key] = "each record's own sampling rate (no resampling): pass --fs HZ"
        elif key == "input_fs":
            values[key] = None
        else:
            values[key] = defaults[key]
            assumed[key] = f"{defaults[key]!r} (the preprocessing default): pass --{key}"
    length = overrides.get("length") or data.get("length") or args.get("max_length") or values["window"]
    if not (overrides.get("length") or data.get("length")):
        assumed["length"] = f"{length} ({'the training --max_length' if args.get('max_length') else 'the window'})"
    standardize = args.get("normalize") is True  # the training --normalize flag (original files: absent)
    return Preparation(length=int(length), standardize=standardize, **values), assumed


def load_trained(path: str | Path, device: str | None = None, fusion: bool = False, **overrides: Any) -> TrainedModel:
    """Checkpoint → :class:`TrainedModel` on ``device`` (None: CUDA when available). ``overrides``: ``fs``,
    ``window``, ``step``, ``length``, ``channels``, ``normalize``, ``input_fs``, ... replace recorded values;
    ``task`` ("single"/"multi") and ``class_names`` replace what the file says or lacks. A fusion checkpoint is
    an error unless ``fusion`` (then ``preparation`` is None: raw records of several modalities are not read)."""
    path = Path(path)
    raw = read_checkpoint(path)
    model = model_from_checkpoint(raw, path)
    if isinstance(model, FusionModel) and not fusion:
        raise ValueError(f"{path}: a multi-modal fusion checkpoint ({', '.join(model.names)}); the physiowave command "
                         "reads one modality: evaluate it with finetune.py --eval --resume and its --modality flags, "
                         "or load it with physiowave.load_model")
    dev = pick_device(device)
    ckpt = dict(raw) if isinstance(raw, Mapping) and not all(isinstance(v, torch.Tensor) for v in raw.values()) else {}
    stored = ckpt.get("args") or {}
    args = dict(vars(stored) if isinstance(stored, argparse.Namespace) else stored)
    meta = {k: v for k, v in ckpt.items() if not k.endswith("state_dict") and k not in ("rng",)}
    has_head = isinstance(model, FusionModel) or "classification" in model.task_heads
    task = overrides.pop("task", None) or _task_of(ckpt, args, has_head)
    names = overrides.pop("class_names", None) or (ckpt.get("data") or {}).get("class_names")
    if has_head:
        k = model.config["num_classes"]
        if names is not None and len(names) != k:
            raise ValueError(f"{path}: {len(names)} class names for a head with {k} outputs")
        names = list(names) if names is not None else [f"class_{i}" for i in range(k)]
    thresholds = ckpt.get("thresholds")
    thresholds = np.asarray(thresholds, dtype=np.float64) if thresholds is not None else None
    prep, assumed = (None, {}) if isinstance(model, FusionModel) else _preparation(ckpt, args, overrides)
    return TrainedModel(path, model.to(dev).eval(), dev, task, names if has_head else None, thresholds, prep, assumed,
                        args, meta)


# --------------------------------------------------------------------------------------------------- inputs
@dataclass
class Unit:
    """Model-ready windows of one record (or a block of an HDF5 file): ``windows`` float32 ``[n, C, L]``,
    ``starts`` ``[n]`` (samples at the model rate), per-window ``labels`` when the HDF5 file has them."""
    record: str
    windows: np.ndarray
    starts: np.ndarray
    labels: np.ndarray | None = None


def find_inputs(paths: Iterable[str | Path]) -> list[tuple[Path, str]]:
    """Expand the command line's inputs → (file, record name): WFDB/Challenge headers (also given as the record
    name without ``.hea``), CSV/TSV files and HDF5 files; folders are searched recursively. One-line errors."""
    out: list[tuple[Path, str]] = []
    for arg in map(Path, paths):
        if arg.is_dir():
            found = sorted(p for p in arg.rglob("*") if p.suffix.lower() in RAW_SUFFIXES + H5_SUFFIXES
                           and not p.name.upper().startswith("README"))
            if not found:
                raise FileNotFoundError(f"{arg}: no .hea, .csv, .tsv, .txt, .h5 or .hdf5 files in this folder")
            out += [(p, p.relative_to(arg).with_suffix("").as_posix()) for p in found]
        elif arg.is_file() and arg.suffix.lower() in RAW_SUFFIXES + H5_SUFFIXES:
            out.append((arg, arg.stem))
        elif arg.suffix.lower() in (".mat", ".dat", "") and arg.with_suffix(".hea").is_file():
            out.append((arg.with_suffix(".hea"), arg.stem))
        elif arg.exists():
            raise ValueError(f"{arg}: unsupported input; expected a WFDB/Challenge record (.hea with .dat or .mat), "
                             ".csv/.tsv/.txt (rows = time) or HDF5 (.h5 with 'data' [N, C, T])")
        else:
            raise FileNotFoundError(f"{arg}: no such file, folder or WFDB record")
    return out


def read_recording(path: Path, input_fs: float | None) -> Recording:
    """One raw record: Challenge (.hea + .mat), WFDB (.hea + .dat) or CSV (rate ``input_fs``)."""
    if path.suffix.lower() == ".hea":
        return read_challenge(path) if path.with_suffix(".mat").is_file() else read_wfdb(path)
    if not input_fs:
        raise ValueError(f"{path}: CSV files carry no sampling rate: pass --input_fs HZ")
    return read_csv(path, input_fs)


def _raw_unit(path: Path, record: str, prep: Preparation, channels: int) -> Unit:
    rec = read_recording(path, prep.input_fs)
    windows, starts, _ = process_recording(rec, prep.signal_args())
    if windows.shape[1] != channels:
        raise ValueError(f"{path}: {windows.shape[1]} channels after selection, the model takes {channels}: "
                         "pass --channels with the model's channels in order")
    return Unit(record, fit_length(windows, prep.length, prep.standardize), starts)


def _h5_units(path: Path, prep: Preparation, channels: int, block: int = 256) -> Iterator[Unit]:
    ds = H5Dataset(str(path), labels="auto", max_length=prep.length, normalize=prep.standardize)
    if ds.num_channels != channels:
        raise ValueError(f"{path}: samples have {ds.num_channels} channels, the model takes {channels}")
    with h5py.File(path, "r") as f:
        ids = np.asarray(f["record_id"][:]).astype(str) if "record_id" in f else None
        starts = np.asarray(f["start"][:], dtype=np.int64) if "start" in f else np.zeros(len(ds), np.int64)
    for lo in range(0, len(ds), block):
        items = [ds[i] for i in range(lo, min(len(ds), lo + block))]
        has_labels = ds.label_kind != "none"
        x = np.stack([(it[0] if has_labels else it).numpy() for it in items])
        labels = np.stack([it[1].numpy() for it in items]) if has_labels else None
        for j in range(len(items)):
            i = lo + j
            record = ids[i] if ids is not None else f"{path.stem}:{i}"
            yield Unit(record, x[j:j + 1], starts[i:i + 1], None if labels is None else labels[j:j + 1])
    ds.close()


def read_units(inputs: Iterable[tuple[Path, str]], prep: Preparation, channels: int,
               on_skip: Callable[[str, str], None]) -> Iterator[Unit]:
    """Units of every input in order; a raw record that cannot be used is reported by ``on_skip(record, reason)``
    and skipped (HDF5 problems raise: a file is not a record)."""
    for path, record in inputs:
        if path.suffix.lower() in H5_SUFFIXES:
            yield from _h5_units(path, prep, channels)
            continue
        try:
            yield _raw_unit(path, record, prep, channels)
        except (ReadError, SignalError, OSError, ValueError) as err:
            on_skip(record, " ".join(str(err).split()))


# --------------------------------------------------------------------------------------------------- model
def run_batches(trained: TrainedModel, units: Iterable[Unit], batch_size: int,
                outputs: Callable[[PhysioWave, torch.Tensor], dict[str, torch.Tensor]]
                ) -> Iterator[tuple[list[tuple[str, int]], dict[str, np.ndarray], np.ndarray | None]]:
    """Windows of all units in batches of ``batch_size`` → per batch: ([(record, start)], {name: [b, ...]} from
    ``outputs(model, x [b, C, L])``, labels ``[b, ...]`` or None)."""
    keys: list[tuple[str, int]] = []
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    labelled = True

    def flush() -> tuple[list[tuple[str, int]], dict[str, np.ndarray], np.ndarray | None]:
        x = torch.from_numpy(np.concatenate(xs)).to(trained.device)
        with torch.inference_mode():
            out = {k: v.float().cpu().numpy() for k, v in outputs(trained.model, x).items()}
        return list(keys), out, np.concatenate(ys) if labelled and ys else None

    for unit in units:
        labelled = labelled and unit.labels is not None
        i, n = 0, len(unit.windows)
        while i < n:
            take = min(batch_size - len(keys), n - i)
            xs.append(unit.windows[i:i + take])
            keys.extend((unit.record, int(s)) for s in unit.starts[i:i + take])
            if unit.labels is not None:
                ys.append(unit.labels[i:i + take])
            i += take
            if len(keys) == batch_size:
                yield flush()
                keys, xs, ys = [], [], []
    if keys:
        yield flush()


def run_inputs(trained: TrainedModel, inputs: Iterable[str | Path], batch_size: int,
               outputs: Callable[[PhysioWave, torch.Tensor], dict[str, torch.Tensor]], skipped: list[tuple[str, str]],
               desc: str = "", progress: bool = True
               ) -> Iterator[tuple[list[tuple[str, int]], dict[str, np.ndarray], np.ndarray | None]]:
    """:func:`run_batches` over the command line's inputs with a progress bar (windows); records that cannot be
    used are appended to ``skipped`` as (record, reason)."""
    units = read_units(find_inputs(inputs), trained.preparation, trained.model.in_channels,
                       lambda record, why: skipped.append((record, why)))
    with tqdm(desc=desc, unit="window", disable=not progress, file=sys.stderr) as bar:
        for batch in run_batches(trained, units, batch_size, outputs):
            bar.update(len(batch[0]))
            bar.set_postfix(skipped=len(skipped), refresh=False)
            yield batch
    if not bar.n:
        raise no_usable_input(skipped)


def no_usable_input(skipped: list[tuple[str, str]]) -> ValueError:
    """The one-line error when every input was skipped (names the first record and its reason)."""
    first = f": {len(skipped)} record(s) skipped, the first {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
    return ValueError("no usable input" + first)


def group_mean(ids: np.ndarray, values: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Rows ``values [n, D]`` grouped by ``ids [n]`` → (ids in first-seen order, counts [R], means [R, D])."""
    order = list(dict.fromkeys(ids.tolist()))
    index = {r: i for i, r in enumerate(order)}
    inv = np.array([index[r] for r in ids.tolist()], dtype=np.int64)
    counts = np.bincount(inv, minlength=len(order))
    sums = np.zeros((len(order), values.shape[1]), np.float64)
    np.add.at(sums, inv, values)
    return order, counts, sums / counts[:, None]


def probabilities(logits: np.ndarray, task: str) -> np.ndarray:
    """Logits ``[N, K]`` → softmax (single-label) or sigmoid (multi-label) probabilities."""
    z = torch.from_numpy(logits)
    return (z.softmax(-1) if task == "single" else z.sigmoid()).numpy()

