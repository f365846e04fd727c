"""Cells carried over from an earlier published results folder (``--carry DIR``, e.g. benchmarks/results/ptbxl).

A run's folders are scratch space; what it publishes (``results.json`` and each cell's fold-10 probabilities,
``predictions/TASK/CELL.csv.gz``) is what lasts. A cell that this ``--out`` has not finished is carried from DIR
when DIR's ``results.json`` lists it as done with the same flags as the grid gives it now (the paths of its files
aside) and its predictions cover exactly the test records of the task's test file, in the same class order. Its
score and intervals are then recomputed from those probabilities and the test file's labels, as for a cell run
here; its wall time, command and validation curve are DIR's.
"""
from __future__ import annotations

import csv
import gzip
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..contract import LABEL, RECORD_ID
from .runner import Cell, flags_of
from .stats import Records

__all__ = ["Published", "load_published", "record_labels", "read_predictions", "mismatch", "carry_cell", "ecg_id_of"]

# Flags that name files: they differ between two runs of the same cell in two output folders.
FILE_FLAGS = ("--train_file", "--val_file", "--test_file", "--pretrained_path")


@dataclass
class Published:
    """A published results folder: its ``results.json`` and its runs by (task, cell name)."""

    folder: Path
    results: dict[str, Any]
    runs: dict[tuple[str, str], dict[str, Any]]


def load_published(folder: Path) -> Published:
    """``folder/results.json`` → :class:`Published`; SystemExit with one line when it is missing or unreadable."""
    path = folder / "results.json"
    try:
        results = json.loads(path.read_text())
        runs = {(r["task"], r["name"]): r for r in results["runs"]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SystemExit(f"error: {path}: expected the results.json of a published protocol run ({err})") from None
    return Published(folder, results, runs)


def record_labels(test_file: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A windows file's records → (``record_id [R]`` sorted, ``labels [R, K]``, class names); a record's label is
    its windows' (ValueError when two windows of one record disagree)."""
    import h5py

    with h5py.File(test_file, "r") as f:
        ids = f[RECORD_ID][:].astype(str)
        labels = f[LABEL][:]
        names = [str(n) for n in f.attrs["class_names"]]
    records, first = np.unique(ids, return_index=True)
    out = labels[first]
    if not np.array_equal(labels, out[np.searchsorted(records, ids)]):
        raise ValueError(f"{test_file}: windows of one record carry different labels")
    return records, out, names


def ecg_id_of(record_id: str) -> int:
    """``records100/00000/00008_lr`` → 8."""
    return int(Path(record_id).name.split("_")[0])


def read_predictions(path: Path, record_ids: np.ndarray, labels: np.ndarray, class_names: list[str]) -> Records:
    """``ecg_id,CLASS,...`` probabilities (gzip CSV) → :class:`Records` on ``record_ids`` (``[R]``, sorted) with
    ``labels [R, K]``; ValueError naming the file when its classes or records are not exactly the test file's."""
    with gzip.open(path, "rt", newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0] != ["ecg_id", *class_names]:
        raise ValueError(f"{path}: header {rows[0] if rows else []} is not ecg_id and the classes {class_names}")
    by_id = {ecg_id_of(r): i for i, r in enumerate(record_ids)}
    probs = np.full((len(record_ids), len(class_names)), np.nan)
    for row in rows[1:]:
        i = by_id.get(int(row[0]))
        if i is None or len(row) != len(class_names) + 1:
            raise ValueError(f"{path}: row {row[:2]}... is not a test record with {len(class_names)} probabilities")
        probs[i] = [float(v) for v in row[1:]]
    if len(rows) - 1 != len(record_ids) or np.isnan(probs).any():
        raise ValueError(f"{path}: {len(rows) - 1} rows for the {len(record_ids)} test records")
    return Records(record_ids, probs, labels)


def _file_free(command: str | list[str]) -> dict[str, list[str]]:
    cmd = shlex.split(command) if isinstance(command, str) else list(command)
    return {k: v for k, v in flags_of(cmd).items() if k not in FILE_FLAGS}


def mismatch(published: Published, expected: dict[str, Any]) -> str | None:
    """What of ``expected`` (results.json fields: recipe, budget, data fingerprint...) the published run had
    otherwise, as one line naming the fields; None when it agrees. Together with the cells' flags this says that a
    carried cell is the cell the grid would run now, on the same data."""
    theirs = json.loads(json.dumps({k: published.results.get(k) for k in expected}))
    ours = json.loads(json.dumps(expected))
    if diff := [k for k in ours if theirs[k] != ours[k]]:
        return f"{published.folder / 'results.json'}: other {', '.join(diff)} than this run's; nothing carried"
    return None


def carry_cell(cell: Cell, task: str, command: list[str], published: Published,
               truth: tuple[np.ndarray, np.ndarray, list[str]]) -> str | None:
    """Carry ``cell`` (to run as ``command``) from ``published`` into ``cell.result["carried"]`` (records, wall
    seconds, command, best fold-9 value, source), scored against ``truth`` (:func:`record_labels` of the task's test
    file) → None (carried, or not finished there: nothing to say), or why a cell finished there cannot be
    carried."""
    run = published.runs.get((task, cell.name))
    if run is None or run.get("state") != "done":
        return None
    if run.get("command") and (before := _file_free(run["command"])) != (now := _file_free(command)):
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        return f"{published.folder}: {task}/{cell.name} ran with other {', '.join(changed)}"
    path = published.folder / "predictions" / task / f"{cell.name}.csv.gz"
    try:
        records = read_predictions(path, *truth)
    except (OSError, ValueError) as err:
        return str(err)
    cell.result["carried"] = {"records": records, "wall_s": run.get("wall_s"), "command": run["command"],
                              "best_val": run.get("best_val_record_auroc_macro"), "predictions": path,
                              "from": {"folder": str(published.folder), "commit": published.results.get("commit")}}
    return None
