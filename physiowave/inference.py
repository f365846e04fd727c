"""Applying a checkpoint to recordings: what ``physiowave embed``, ``predict`` and ``plot`` share.

Raw records (WFDB ``.hea``/``.dat``, Challenge ``.hea``/``.mat``, CSV) go through the preprocessing pipeline
(:func:`physiowave.preprocess.transform.process_recording`) with the parameters the training data was made with, as
recorded in the checkpoint, then through what evaluation did to each stored sample (centre crop or pad to the
training length, the ``--normalize`` z-score): a record gives exactly the windows that training evaluated.
Preprocessed HDF5 files are read with the training data set class. Values a checkpoint lacks (original release
files) come from flags, else from the preprocessing defaults (:class:`SignalParams`), and are reported as assumed.

No window that holds NaN/inf reaches the model, whatever the input: each is decided alone and reported in
:class:`Skipped` with its record and start. NaN runs up to ``max_nan_gap`` seconds are interpolated, as
preprocessing does; a raw record with a longer run (which preprocessing skips whole) keeps the windows that do
not touch it, computed with the run interpolated so that filters and resampling see finite input.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from tqdm import tqdm

from . import hub
from .checkpoint import model_from_checkpoint, read_checkpoint
from .contract import RECORD_ID, START
from .data.h5 import H5Dataset, fit_length
from .device import pick_device
from .fileio import scalars_of
from .models import FusionModel, PhysioWave
from .preprocess.params import SIGNAL_KEYS, Preparation, SignalParams
from .preprocess.readers import ReadError, read_recording
from .preprocess.signal import SignalError
from .preprocess.transform import nonfinite_reason, process_recording, windows_around_gaps

__all__ = ["TrainedModel", "Unit", "Skipped", "load_trained", "save_trained", "find_inputs", "read_units",
           "run_batches", "run_inputs", "no_usable_input", "group_mean", "probabilities", "RAW_SUFFIXES", "H5_SUFFIXES",
           "OVERRIDES"]

RAW_SUFFIXES = (".hea", ".csv", ".tsv", ".txt")
H5_SUFFIXES = (".h5", ".hdf5")
OVERRIDES = ("fs", "input_fs", "length", *SIGNAL_KEYS)  # what load_trained's overrides may replace
_DEFAULT = SignalParams()




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
    if (args.get("task") == "multilabel" or args.get("task_type") == "multilabel"
            or "hamming_loss" in (ckpt.get("val_metrics") or {})):
        return "multi"
    return "single"


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _preparation(ckpt: Mapping[str, Any], args: Mapping[str, Any], overrides: Mapping[str, Any]
                 ) -> tuple[Preparation, dict[str, str]]:
    """Recorded values (the checkpoint's ``data.preprocessing``), replaced by ``overrides``; what neither gives
    comes from the :class:`SignalParams` defaults and is listed in ``assumed`` (name → what was assumed)."""
    data = ckpt.get("data") or {}
    recorded = dict(data.get("preprocessing") or {})
    params = SignalParams.from_recorded(recorded).replace(**{k: overrides.get(k) for k in SIGNAL_KEYS})
    assumed: dict[str, str] = {}
    fs = overrides.get("fs") if overrides.get("fs") is not None else recorded.get("fs")
    if fs is None:
        assumed["fs"] = "each record's own sampling rate (no resampling)"
    for key in SIGNAL_KEYS:
        if overrides.get(key) is None and key not in recorded:
            default = getattr(_DEFAULT, key)
            assumed[key] = ("every channel of each record, in its order" if key == "channels" and default is None
                            else _shown(default)) + " (the preprocessing default)"
    input_fs = overrides.get("input_fs") if overrides.get("input_fs") is not None else recorded.get("input_fs")
    length = overrides.get("length") or data.get("length") or args.get("max_length") or params.window
    if not (overrides.get("length") or data.get("length")):
        assumed["length"] = f"{length} ({'the training max_length' if args.get('max_length') else 'the window'})"
    standardize = args.get("normalize") is True  # the training --normalize flag (original files: absent)
    try:
        params.check()
        for name, value in (("fs", fs), ("input_fs", input_fs)):
            if value is not None and not 0 < float(value) < float("inf"):
                raise ValueError(f"--{name} {value}: expected a positive rate in Hz")
        if int(length) < 1:
            raise ValueError(f"--length {length}: expected a positive integer")
    except ValueError as err:
        raise ValueError(f"{err} (the value recorded in the checkpoint or given)") from None
    values = {k: getattr(params, k) for k in SIGNAL_KEYS}
    return Preparation(fs=None if fs is None else float(fs), length=int(length), standardize=standardize,
                       input_fs=None if input_fs is None else float(input_fs), **values), assumed


def load_trained(path: str | Path, device: str | None = None, fusion: bool = False, **overrides: Any) -> TrainedModel:
    """Checkpoint → :class:`TrainedModel` on ``device`` (None: CUDA when available). ``overrides`` (None: not
    given): ``fs``, ``input_fs``, ``length`` and the :class:`SignalParams` names (:data:`OVERRIDES`) replace
    recorded values; ``task`` ("single"/"multi") and ``class_names`` replace what the file says or lacks. A
    fusion checkpoint is an error unless ``fusion`` (then ``preparation`` is None: raw records of several
    modalities are not read). ``path`` may also be a model folder (``save_pretrained``, ``physiowave convert``)
    or a Hugging Face Hub repo id: its ``config.json`` input contract is read as a checkpoint's recorded
    preprocessing, class names and thresholds are."""
    unknown = sorted(set(overrides) - {*OVERRIDES, "task", "class_names"})
    if unknown:
        raise TypeError(f"load_trained: unknown override(s) {', '.join(unknown)}; expected {', '.join(OVERRIDES)}")
    if hub.is_pretrained(path):  # a model folder or Hub repo id: its config.json's contract stands for the record
        path = hub.resolve(path)
        config = hub.read_config(path)
        raw: Any = hub.as_checkpoint(config)
        model = hub.model_from_folder(path, config)
    else:
        path = Path(path)
        raw = read_checkpoint(path)
        model = model_from_checkpoint(raw, path)
    if isinstance(model, FusionModel) and not fusion:
        raise ValueError(f"{path}: a multi-modal fusion checkpoint ({', '.join(model.names)}); the physiowave command "
                         "reads one modality: evaluate it with finetune.py (its --eval --resume and --modality "
                         "flags), or load it with physiowave.load_model")
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


def save_trained(trained: TrainedModel, directory: str | Path, *, overwrite: bool = False,
                 training_data: str | None = None, protocol: str | None = None,
                 facts: Mapping[str, Any] | None = None) -> Path:
    """A loaded checkpoint (:func:`physiowave.inference.load_trained`, its preparation resolved with any given
    values) → a folder whose contract is that preparation, and whose training facts are the checkpoint's, plus
    ``facts`` (e.g. the recipe and a fingerprint of the training data) under ``training``."""
    ckpt, model = trained.checkpoint, trained.model
    data = ckpt.get("data") or {}
    if "pretrained_folder" in ckpt:  # a folder read back: keep its training facts
        training = dict(ckpt["pretrained_folder"].get("training") or {})
    else:
        epoch = ckpt.get("epoch")
        validation = scalars_of(ckpt.get("val_metrics") or (ckpt.get("metrics") or {}).get("val") or {}) or {
            k[4:]: v for k, v in ckpt.items() if k.startswith("val_") and isinstance(v, (int, float))}
        training = {
            "source": Path(trained.path).name,
            "source_written_by": f"physiowave {ckpt['physiowave_version']}" if ckpt.get("physiowave_version")
            else "the original PhysioWave release (or another tool)",
            "epochs_completed": None if epoch is None else int(epoch) + 1, "global_step": ckpt.get("global_step"),
            "best": ckpt.get("best"), "validation": validation or None,
            "data": {k: data[k] for k in ("train_files", "val_files", "test_files", "train_samples", "channels",
                                          "length", "label_kind", "class_counts", "pretrained", "val_split",
                                          "label_fraction") if k in data} or None,
            "args": trained.args or None,
        }
    if training_data:
        training["training_data"] = training_data
    if protocol:
        training["protocol"] = protocol
    training.update(facts or {})
    training = {k: v for k, v in training.items() if v is not None}
    prep = trained.preparation.as_dict() if trained.preparation is not None else None
    config = hub.build_config(model, input=prep, task=trained.task, class_names=trained.class_names,
                          thresholds=trained.thresholds, training=training, assumed=trained.assumed,
                          modalities=data.get("modalities"))
    if "pretrained_folder" in ckpt:
        config["assumed"] = {**(ckpt["pretrained_folder"].get("assumed") or {}), **config["assumed"]}
    return hub.write_folder(model, config, directory, overwrite=overwrite)


# --------------------------------------------------------------------------------------------------- inputs
@dataclass
class Unit:
    """Model-ready windows of one record (or a block of an HDF5 file): ``windows`` float32 ``[n, C, L]``,
    ``starts`` ``[n]`` (samples at the model rate), per-window ``labels`` when the HDF5 file has them."""
    record: str
    windows: np.ndarray
    starts: np.ndarray
    labels: np.ndarray | None = None


@dataclass
class Skipped:
    """What was not used: ``records`` (record, reason): unreadable, unusable, or with no usable window; ``windows``
    (record, start, reason): a window holding NaN/inf, never given to the model."""
    records: list[tuple[str, str]] = field(default_factory=list)
    windows: list[tuple[str, int, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.records or self.windows)

    def summary(self, shown: int = 5) -> str:
        """One line for the command's last message: ``"1 record skipped; 2 windows skipped: r1@2048 has NaN,
        r1@3072 has NaN"`` (the first ``shown`` windows named), or ``"0 skipped"``."""
        if not self:
            return "0 skipped"
        parts = []
        if self.records:
            n = len(self.records)
            parts.append(f"{n} record{'s' if n != 1 else ''} skipped")
        if self.windows:
            n = len(self.windows)
            named = ", ".join(f"{r}@{s} {why}" for r, s, why in self.windows[:shown])
            more = f", ... ({n - shown} more)" if n > shown else ""
            parts.append(f"{n} window{'s' if n != 1 else ''} skipped: {named}{more}")
        return "; ".join(parts)


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






def _raw_unit(path: Path, record: str, prep: Preparation, channels: int) -> tuple[Unit, list[str | None]]:
    """The windows of one raw record and, per window, why it cannot be used (None: usable)."""
    rec = read_recording(path, prep.input_fs)
    params = prep.signal_args()
    try:
        windows, starts, _ = process_recording(rec, params)
        reasons: list[str | None] | None = None
    except SignalError:
        if np.isfinite(rec.signal).all():
            raise
        windows, starts, _, reasons = windows_around_gaps(rec, params)
    if windows.shape[1] != channels:
        raise ValueError(f"{path}: {windows.shape[1]} channels after selection, the model takes {channels}: "
                         "pass --channels with the model's channels in order")
    x = fit_length(windows, prep.length, prep.standardize)
    found = [nonfinite_reason(w) for w in x]  # e.g. overflow in filtering; NaN in the cropped part
    reasons = [r or f for r, f in zip(reasons or found, found)]
    return Unit(record, x, starts), reasons


def _h5_units(path: Path, prep: Preparation, channels: int, block: int = 256
              ) -> Iterator[tuple[Unit, list[str | None]]]:
    ds = H5Dataset(str(path), labels="auto", max_length=prep.length, normalize=prep.standardize)
    try:
        if ds.num_channels != channels:
            raise ValueError(f"{path}: samples have {ds.num_channels} channels, the model takes {channels}")
        with h5py.File(path, "r") as f:
            ids = np.asarray(f[RECORD_ID][:]).astype(str) if RECORD_ID in f else None
            starts = np.asarray(f[START][:], dtype=np.int64) if START in f else np.zeros(len(ds), np.int64)
        has_labels = ds.label_kind != "none"
        for lo in range(0, len(ds), block):
            items = [ds[i] for i in range(lo, min(len(ds), lo + block))]
            x = np.stack([(it[0] if has_labels else it).numpy() for it in items])
            labels = np.stack([it[1].numpy() for it in items]) if has_labels else None
            for j in range(len(items)):
                i = lo + j
                record = ids[i] if ids is not None else f"{path.stem}:{i}"
                yield (Unit(record, x[j:j + 1], starts[i:i + 1], None if labels is None else labels[j:j + 1]),
                       [nonfinite_reason(x[j])])
    finally:
        ds.close()


def read_units(inputs: Iterable[tuple[Path, str]], prep: Preparation, channels: int, skipped: Skipped
               ) -> Iterator[Unit]:
    """Units of every input in order, holding only usable windows. A raw record that cannot be used is added to
    ``skipped.records`` (HDF5 problems raise: a file is not a record); a window with NaN/inf (after the
    preprocessing, which interpolates NaN runs up to ``max_nan_gap``) to ``skipped.windows``; once the inputs
    are exhausted, a record none of whose windows was usable to ``skipped.records``."""
    used: dict[str, int] = {}
    broken: dict[str, int] = {}

    def split(unit: Unit, reasons: list[str | None]) -> Unit | None:
        keep = np.array([r is None for r in reasons], bool)
        for s, r in zip(unit.starts[~keep].tolist(), [r for r in reasons if r is not None]):
            skipped.windows.append((unit.record, int(s), r))
        used[unit.record] = used.get(unit.record, 0) + int(keep.sum())
        broken[unit.record] = broken.get(unit.record, 0) + int((~keep).sum())
        if not keep.any():
            return None
        if keep.all():
            return unit
        return Unit(unit.record, unit.windows[keep], unit.starts[keep],
                    None if unit.labels is None else unit.labels[keep])

    for path, record in inputs:
        if path.suffix.lower() in H5_SUFFIXES:
            for unit, reasons in _h5_units(path, prep, channels):
                kept = split(unit, reasons)
                if kept is not None:
                    yield kept
            continue
        try:
            unit, reasons = _raw_unit(path, record, prep, channels)
        except (ReadError, SignalError, OSError, ValueError) as err:
            skipped.records.append((record, " ".join(str(err).split())))
            continue
        kept = split(unit, reasons)
        if kept is not None:
            yield kept
    for record, n in broken.items():
        if n and not used.get(record):
            skipped.records.append((record, f"no usable window: all {n} hold NaN/inf"))


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
        for name, value in out.items():
            if not np.isfinite(value).all():
                record, start = keys[int(np.nonzero(~(np.isfinite(value.reshape(len(keys), -1)).all(axis=1)))[0][0])]
                raise ValueError(f"the model's {name} for record {record} (window at sample {start}) are NaN or inf, "
                                 "from finite input: the model is numerically broken; no output written")
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
               outputs: Callable[[PhysioWave, torch.Tensor], dict[str, torch.Tensor]], skipped: Skipped,
               desc: str = "", progress: bool = True
               ) -> Iterator[tuple[list[tuple[str, int]], dict[str, np.ndarray], np.ndarray | None]]:
    """:func:`run_batches` over the command line's inputs with a progress bar (windows); what cannot be used
    (records, windows with NaN/inf) is added to ``skipped`` and never reaches the model."""
    units = read_units(find_inputs(inputs), trained.preparation, trained.model.in_channels, skipped)
    with tqdm(desc=desc, unit="window", disable=not progress, file=sys.stderr) as bar:
        for batch in run_batches(trained, units, batch_size, outputs):
            bar.update(len(batch[0]))
            bar.set_postfix(skipped=len(skipped.records) + len(skipped.windows), refresh=False)
            yield batch
    if not bar.n:
        raise no_usable_input(skipped)


def no_usable_input(skipped: Skipped) -> ValueError:
    """The one-line error when no window could be used (names the first skipped record and window)."""
    parts = []
    if skipped.records:
        record, why = skipped.records[0]
        parts.append(f"{len(skipped.records)} record(s) skipped, the first {record}: {why}")
    if skipped.windows:
        record, start, why = skipped.windows[0]
        parts.append(f"{len(skipped.windows)} window(s) skipped, the first {record}@{start} {why}")
    return ValueError("no usable input" + (": " + "; ".join(parts) if parts else ""))


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

