"""The HDF5 contract between preprocessing, training and inference: every key, dtype and attribute, defined once.

A split file written by ``physiowave.preprocess`` holds::

    data       float32 [N, C, T]   one window per gzip chunk (random access reads one window)
    label      int64 [N] (class index) or float32 [N, K] (multi-hot); absent for pretraining data
    record_id  UTF-8 string [N]    the recording each window comes from (splits never separate one)
    start      int64 [N]           first sample of the window in the processed recording, at the output rate
    group_id   UTF-8 string [N]    the patient / subject of the window's recording (label fractions and held-out
                                   validation splits are drawn by it when present, else by record_id)

and root attributes ``fs`` (output rate, Hz), ``window``, ``step``, ``normalize``, ``norm_scope``, ``source``,
``preprocessing`` (JSON of the signal parameters), ``class_names`` and ``channel_names`` when known, and
``run_id`` / ``run_info``: the run that wrote the file and the name of its folder's completion marker
(:data:`INFO_FILE`), which lists the run's files and is written last. Files from other tools need only ``data``
(any of :data:`DATA_KEYS`) and optionally labels (any of :data:`LABEL_KEYS`).
"""
from __future__ import annotations

import re
from pathlib import Path

__all__ = ["DATA", "LABEL", "RECORD_ID", "START", "GROUP_ID", "DATA_KEYS", "LABEL_KEYS", "ATTR_FS", "ATTR_CLASS_NAMES",
           "ATTR_CHANNEL_NAMES", "ATTR_PREPROCESSING", "ATTR_RUN_ID", "ATTR_RUN_INFO", "INFO_FILE",
           "DATA_DTYPE", "SINGLE_LABEL_DTYPE", "MULTI_LABEL_DTYPE", "START_DTYPE", "check_modality_name",
           "RESULT_FILES", "RUN_FILES", "RUN_GLOBS", "run_files"]

DATA = "data"
LABEL = "label"
RECORD_ID = "record_id"
START = "start"
GROUP_ID = "group_id"

DATA_KEYS = (DATA, "input", "X")              # tried in this order when no data key is given
LABEL_KEYS = (LABEL, "labels", "y", "Y")      # likewise for labels

DATA_DTYPE = "float32"
SINGLE_LABEL_DTYPE = "int64"
MULTI_LABEL_DTYPE = "float32"
START_DTYPE = "int64"

ATTR_FS = "fs"
ATTR_CLASS_NAMES = "class_names"
ATTR_CHANNEL_NAMES = "channel_names"
ATTR_PREPROCESSING = "preprocessing"
ATTR_RUN_ID = "run_id"
ATTR_RUN_INFO = "run_info"

INFO_FILE = "preprocess_info.json"            # the completion marker of a preprocessing output folder


_MODALITY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_modality_name(name: str) -> str:
    """``name`` if it can name a modality: a file key, a flag value and a fusion branch (letters, digits, '_'; not an
    attribute of torch's ModuleDict, which holds the branches), else a one-line ValueError."""
    if not _MODALITY_NAME.fullmatch(name):
        raise ValueError(f"modality name {name!r}: expected letters, digits and '_' (not starting with a digit)")
    from torch import nn  # here, not at the top: preprocessing reads this module without loading torch
    if hasattr(nn.ModuleDict(), name):
        raise ValueError(f"modality name {name!r} is taken by torch's ModuleDict: choose another")
    return name


# The files a training run writes into its --output_dir (the engine, the benchmark runner and `physiowave convert`
# read them by these names). RESULT_FILES describe one finished (or evaluated) run: they never survive into another.
RESULT_FILES = ("test_results.json", "val_results.json", "training_summary.txt", "test_records.npz", "val_records.npz",
                "timing.json")
RUN_FILES = ("args.json", "training_history.json", "best_model.pth", "latest_model.pth", "latest_checkpoint.pth",
              "label_fraction.json", *RESULT_FILES)
RUN_GLOBS = ("checkpoint_epoch_*.pth", "*.pth.tmp", "*.json.tmp")


def run_files(out: Path) -> list[Path]:
    """The files (and the ``tensorboard`` folder) of a run in ``out``."""
    if not out.is_dir():
        return []
    found = [out / n for n in RUN_FILES if (out / n).exists()]
    found += sorted(p for pattern in RUN_GLOBS for p in out.glob(pattern))
    return found + ([out / "tensorboard"] if (out / "tensorboard").is_dir() else [])
