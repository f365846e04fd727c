"""The PTB-XL benchmark at 100 Hz end to end (Wagner et al. 2020; the protocol of Strodthoff et al. 2021):

    python -m physiowave.benchmark ptbxl --ptbxl PTBXL_FOLDER --out OUT [--device cpu|cuda] [--jobs 2]

``PTBXL_FOLDER`` is the data set as PhysioNet serves it: ``ptbxl_database.csv``, ``scp_statements.csv`` and
``records100/``. Every stage resumes: run the same command again after a kill and it continues where it stopped
(a finished cell is never run again; a started one continues from its last checkpoint).

1. Check (before any compute): the tables have the columns the protocol reads; every listed 100 Hz record is there,
   at 100 Hz, with 12 signals; every class of a task has a positive record in folds 1-8, 9 and 10.
2. Prepare, per task, with ``ECG/ptbxl_finetune.py``: ``OUT/data/TASK/records`` (whole 10 s records: the training
   file, random 2.5 s crops are drawn from it) and ``OUT/data/TASK/windows`` (sliding 2.5 s windows, hop 1.25 s:
   the validation and test files; a record's probabilities are the mean of its windows'). Signals in mV as stored.
   Records without a label of the task are dropped (listed in ``skipped.csv``), as in the benchmark.
3. Pretrain (no labels) on the training records of folds 1-8 → ``OUT/pretrain/RECIPE`` (best by fold-9 loss).
4. The grid of the main task (superdiagnostic): from scratch, linear probe, fine-tune (same network) and a
   supervised 1-D ResNet (``benchmarks/ptbxl_resnet1d.py``) × label fractions (drawn by patient, the same subsets
   for every method under one seed) × seeds; selection on fold 9 (record macro AUROC), fold 10 only tested.
   Cells run seed by seed (largest fraction first), so an interrupted run has every method at the first seed.
5. The other tasks (``--other_tasks``) at 100 % labels, one seed; the recipe comparison (``--compare``): the same
   network pretrained and fine-tuned with each recipe, probe and fine-tune at 10 % labels, scored on fold 9.
6. Results: ``OUT/results.json`` / ``results.md`` (mean ± sd over seeds, 95 % bootstrap interval over fold-10
   records, wall time per cell, configuration, commit, data fingerprint), ``OUT/predictions/TASK/CELL.csv.gz``
   (fold-10 ``ecg_id`` and the probability of each class, class order in the header) and learning curves.
   ``--publish DIR`` copies them (not the runs) to DIR, e.g. benchmarks/results/ptbxl.
7. Continuing from what was published: ``--pretrained weights/physiowave-ptbxl100-cpu`` starts probe and fine-tuning
   from the released encoder instead of the table recipe's pretraining (with ``--compare`` the folder must state that
   recipe and the budget's pretraining; the other recipes are still pretrained); ``--carry benchmarks/results/ptbxl``
   takes the cells that folder holds finished (same recipe, budget, data and flags) from its predictions instead of
   running them again, and its recipe comparison where this call has not run it.

The CPU configuration (``--device cpu``) finishes the superdiagnostic table in about 9 hours on 2 AVX2 cores;
``--device cuda`` runs the paper-size network (the ``ecg`` preset, 2.5 s inputs) for longer.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..contract import INFO_FILE
from ..fileio import atomic_write_text, write_json
from .carry import carry_cell, ecg_id_of, load_published, mismatch, record_labels
from .runner import (MODES, RECORDS_FILE, RESNET_SCRIPT, ROOT, Cell, cell_state, child_env, command,
                     command_change, floats, ints, progress, run_cells, sha256_of)
from .stats import read_records
from .table import collect, markdown, summarize

__all__ = ["TASKS", "Budget", "BUDGETS", "RECIPES", "check_ptbxl", "fingerprint", "plan_protocol", "main"]

# The PTB-XL benchmark tasks and their class counts on the full database.
TASKS = {"superdiagnostic": 5, "subdiagnostic": 23, "diagnostic": 44, "form": 19, "rhythm": 12, "all": 71}
MAIN_TASK = "superdiagnostic"
RECIPES = ("physiowave", "paper")
_DB, _STATEMENTS = "ptbxl_database.csv", "scp_statements.csv"
_DB_COLUMNS = ("ecg_id", "patient_id", "scp_codes", "strat_fold", "filename_lr")
_SUMMARY = "training_summary.txt"  # written last by the training scripts: a pretraining run is done


@dataclass(frozen=True)
class Budget:
    """What one device runs: the network (PhysioWave size flags), 2.5 s crops, the evaluation hop, and epochs per
    label fraction (fractions between the listed ones take the nearest, on a log scale)."""

    name: str
    model: tuple[str, ...]
    crop: int
    eval_step: int
    batch_size: int
    pretrain_epochs: int
    epochs: dict[float, int]          # from scratch and fine-tuning
    probe_epochs: dict[float, int]
    resnet_epochs: dict[float, int]
    val_every: dict[float, int]
    resnet: tuple[str, ...] = ()

    def at(self, table: dict[float, int], fraction: float) -> int:
        return table[min(table, key=lambda k: abs(math.log(k) - math.log(fraction)))]


BUDGETS = {
    # 0.4 M parameters: base preset shape with D 64, depth 3, 4 heads, 1 × 50 patches (240 tokens for 12 × 250).
    "cpu": Budget("cpu", ("--patch_size", "50", "--embed_dim", "64", "--depth", "3", "--num_heads", "4"),
                  crop=250, eval_step=125, batch_size=64, pretrain_epochs=8,
                  epochs={1.0: 10, 0.1: 20, 0.01: 50}, probe_epochs={1.0: 10, 0.1: 20, 0.01: 50},
                  resnet_epochs={1.0: 10, 0.1: 30, 0.01: 100}, val_every={1.0: 1, 0.1: 5, 0.01: 10}),
    # The published ECG network's shape (ecg preset, 14.4 M parameters) on 2.5 s inputs, 1 × 50 patches.
    "cuda": Budget("cuda", ("--model", "ecg", "--patch_size", "50"), crop=250, eval_step=125, batch_size=64,
                   pretrain_epochs=100, epochs={1.0: 30, 0.1: 60, 0.01: 100},
                   probe_epochs={1.0: 30, 0.1: 60, 0.01: 100}, resnet_epochs={1.0: 30, 0.1: 60, 0.01: 200},
                   val_every={1.0: 1, 0.1: 2, 0.01: 5}),
}


# --------------------------------------------------------------------------------------------------- checks
def _fail(message: str) -> None:
    raise SystemExit(f"error: {message}")


def _read_table(folder: Path) -> list[dict[str, str]]:
    """``ptbxl_database.csv`` rows; one-line errors for a missing file or column."""
    for name in (_DB, _STATEMENTS):
        if not (folder / name).is_file():
            _fail(f"{folder / name}: not found; --ptbxl must be the PTB-XL folder (ptbxl_database.csv, "
                  "scp_statements.csv, records100/)")
    with open(folder / _DB, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _DB_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            _fail(f"{folder / _DB}: missing column(s) {', '.join(missing)}")
        return list(reader)


def _header(path: Path) -> tuple[int, float]:
    """(signals, sampling rate) from the first line of a WFDB header (``name nsig fs[/counter] nsamp ...``)."""
    first = path.read_text(errors="replace").split("\n", 1)[0].split()
    try:
        return int(first[1]), float(first[2].split("/")[0].split("(")[0])
    except (IndexError, ValueError):
        _fail(f"{path}: not a WFDB header (first line {' '.join(first)!r})")
        raise  # unreachable


def check_ptbxl(folder: Path) -> list[dict[str, str]]:
    """The rows of ``ptbxl_database.csv`` once every listed 100 Hz record is found at 100 Hz with 12 signals;
    SystemExit with one line naming the first bad record (and how many there are) otherwise."""
    rows = _read_table(folder)
    missing, wrong = [], []
    for i, row in enumerate(rows, start=2):
        name = row["filename_lr"].strip()
        if not name:
            missing.append(f"line {i} (ecg_id {row['ecg_id']}): empty filename_lr")
            continue
        hea, dat = folder / f"{name}.hea", folder / f"{name}.dat"
        if not hea.is_file() or not dat.is_file():
            missing.append(f"{hea if not hea.is_file() else dat}")
            continue
        nsig, fs = _header(hea)
        if fs != 100 or nsig != 12:
            wrong.append(f"{hea}: {nsig} signals at {fs:g} Hz")
    if missing:
        _fail(f"{missing[0]}: not found ({len(missing)} of the {len(rows)} records listed in {folder / _DB} are "
              "missing); expected records100/ as PhysioNet serves it")
    if wrong:
        _fail(f"{wrong[0]}; expected 12 signals at 100 Hz in records100/ ({len(wrong)} such records: a 500 Hz "
              "record in the 100 Hz tree?)")
    return rows


def fingerprint(folder: Path, rows: list[dict[str, str]], cache: Path | None) -> dict[str, Any]:
    """sha256 of the two tables and of every listed record's header and signal bytes (in ecg_id order), cached in
    ``cache`` (when given) while the files' sizes and modification times are unchanged."""
    files = [folder / _DB, folder / _STATEMENTS] + [folder / f"{r['filename_lr'].strip()}.{ext}"
                                                     for r in rows for ext in ("hea", "dat")]
    listing = "\n".join(f"{p} {p.stat().st_size} {p.stat().st_mtime_ns}" for p in files)
    stamp = hashlib.sha256(listing.encode()).hexdigest()
    if cache is not None and cache.is_file():
        old = json.loads(cache.read_text())
        if old.get("stamp") == stamp:
            return old["fingerprint"]
    tables = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files[:2]}
    records = hashlib.sha256()
    for p in files[2:]:
        records.update(p.read_bytes())
    result = {**tables, "records100": records.hexdigest(), "records": len(rows)}
    if cache is not None:
        write_json(cache, {"stamp": stamp, "fingerprint": result})
    return result


def _check_classes(data: Path, task: str) -> None:
    """Every class of the task has a positive record in each split (else its AUROC is undefined)."""
    import h5py

    for split, kind in (("train", "records"), ("val", "windows"), ("test", "windows")):
        path = data / kind / f"{split}.h5"
        with h5py.File(path, "r") as f:
            labels = np.asarray(f["label"][:]) > 0.5
            names = [str(n) for n in f.attrs.get("class_names", range(labels.shape[1]))]
        empty = [names[k] for k in range(labels.shape[1]) if not labels[:, k].any()]
        if empty:
            _fail(f"{path}: no positive record of class(es) {', '.join(empty)} in the {split} split of --task {task}; "
                  "every class needs one in folds 1-8, 9 and 10")


# --------------------------------------------------------------------------------------------------- stages
def prepare(ptbxl: Path, out: Path, task: str, budget: Budget, python: str) -> Path:
    """``out/data/TASK/{records,windows}`` by ECG/ptbxl_finetune.py (resumed after a kill; kept once complete)."""
    data = out / "data" / task
    for kind, window, step in (("records", 1000, 1000), ("windows", budget.crop, budget.eval_step)):
        folder = data / kind
        if (folder / INFO_FILE).is_file():
            continue
        cmd = [python, str(ROOT / "ECG" / "ptbxl_finetune.py"), "--input", str(ptbxl), "--output", str(folder),
               "--task", task, "--rate", "100", "--window", str(window), "--step", str(step), "--normalize", "none"]
        if (folder / ".preprocess.partial").exists():
            cmd.append("--resume")
        print(f"preparing {task} {kind}: {' '.join(cmd[1:])}", flush=True)
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            _fail(f"preprocessing {folder} failed (see the lines above); run the same command again to resume")
    _check_classes(data, task)
    return data


def _pretrain_cell(out: Path, data: Path, recipe: str, budget: Budget, device: str, python: str) -> Cell:
    """Pretraining with ``recipe`` on the training records (labels unused); every recipe gets the same budget: the
    epochs, batch and crops of ``budget`` and a warmup over 10 % of the steps (``--warmup_epochs 0``)."""
    flags = ["--train_files", str(data / "records" / "train.h5"), "--val_files", str(data / "records" / "val.h5"),
             "--recipe", recipe, *budget.model, "--max_length", str(budget.crop), "--batch_size",
             str(budget.batch_size), "--epochs", str(budget.pretrain_epochs), "--warmup_epochs", "0", "--num_workers",
             "0", "--save_every_steps", "50", "--seed", "0", "--device", device]
    return Cell("pretrain", 1.0, 0, out / "pretrain" / recipe, script=[python, str(ROOT / "pretrain.py")], flags=flags,
                done_file=_SUMMARY)


def _cell(mode: str, fraction: float, seed: int, folder: Path, data: Path, budget: Budget, recipe: str, device: str,
          pretrain: Cell | Path | None) -> Cell:
    """One cell of a grid: its files, checkpoint (the run's own pretraining, or a given encoder: a Path), per-fraction
    epochs and flags."""
    files = (data / "records" / "train.h5", data / "windows" / "val.h5", data / "windows" / "test.h5")
    every = ["--val_every", str(budget.at(budget.val_every, fraction)), "--max_length", str(budget.crop),
             "--batch_size", str(budget.batch_size), "--device", device]
    if mode == "resnet":
        flags = ["--epochs", str(budget.at(budget.resnet_epochs, fraction)), *every, *budget.resnet]
        return Cell(mode, fraction, seed, folder, files=files, flags=flags)
    epochs = budget.at(budget.probe_epochs if mode == "probe" else budget.epochs, fraction)
    flags = ["--recipe", recipe, *budget.model, "--epochs", str(epochs), *every, "--num_workers", "0",
             "--select_metric", "record_auroc_macro", "--save_every_steps", "100"]
    if mode not in ("probe", "finetune"):
        return Cell(mode, fraction, seed, folder, files=files, flags=flags)
    if isinstance(pretrain, Path):
        return Cell(mode, fraction, seed, folder, files=files, flags=flags, pretrained=pretrain)
    return Cell(mode, fraction, seed, folder, files=files, flags=flags, pretrained=pretrain.folder / "best_model.pth",
                after=pretrain)


@dataclass
class Plan:
    pretrain: dict[str, Cell]
    grid: list[Cell]                                   # the main task
    others: dict[str, list[Cell]] = field(default_factory=dict)
    compare: dict[str, list[Cell]] = field(default_factory=dict)

    def by_task(self) -> list[tuple[str, list[Cell]]]:
        """(task, its cells): the main grid first, then the other tasks'."""
        return [(MAIN_TASK, self.grid), *self.others.items()]

    def ordered(self, recipe: str) -> list[Cell]:
        """Execution order: the table recipe's pretraining, the main grid's first seed (largest label fraction
        first: the headline numbers come first), the other recipes' pretraining and the comparison, the other
        seeds, then the other tasks."""
        seed0 = min(c.seed for c in self.grid)
        first = sorted((c for c in self.grid if c.seed == seed0), key=lambda c: -c.fraction)  # stable within one
        rest = [c for c in self.grid if c not in first]
        extra = [c for cells in self.compare.values() for c in cells if c not in self.grid]
        own = [self.pretrain[recipe]] if recipe in self.pretrain else []
        others = [c for r, c in self.pretrain.items() if r != recipe]
        return [*own, *first, *others, *extra, *rest, *(c for cells in self.others.values() for c in cells)]


def plan_protocol(out: Path, data: dict[str, Path], cfg: argparse.Namespace) -> Plan:
    """Every run of the protocol (nothing is run here)."""
    budget, recipe = BUDGETS[cfg.device_kind], cfg.recipe
    recipes = [recipe] + ([r for r in RECIPES if r != recipe] if cfg.compare else [])
    pretrain = {r: _pretrain_cell(out, data[MAIN_TASK], r, budget, cfg.device, cfg.python) for r in recipes}
    needed = cfg.compare or any(m in ("probe",
                                      "finetune") for m in cfg.modes + (cfg.other_modes if cfg.other_tasks else []))
    start = cfg.pretrained or pretrain[recipe]  # probe and fine-tune start from a given encoder, else the run's own
    grid = [_cell(m, f, s, out / MAIN_TASK / "runs" / f"{m}_f{f:g}_s{s}", data[MAIN_TASK], budget, recipe, cfg.device,
                  start) for s in cfg.seeds for f in cfg.fractions for m in cfg.modes]
    if cfg.pretrained is not None:  # the given encoder is the table recipe's pretraining: the others still run
        pretrain.pop(recipe)
    plan = Plan(pretrain if needed else {}, grid)  # none when no method starts from it
    for task in cfg.other_tasks:
        plan.others[task] = [_cell(m, 1.0, cfg.seeds[0], out / task / "runs" / f"{m}_f1_s{cfg.seeds[0]}", data[task],
                                   budget, recipe, cfg.device, start) for m in cfg.other_modes]
    if cfg.compare:
        for r in recipes:
            cells = []
            for m in ("probe", "finetune"):
                same = [c for c in grid if r == recipe and c.mode == m and c.fraction == 0.1 and c.seed == cfg.seeds[0]]
                cells.append(same[0] if same else _cell(m, 0.1, cfg.seeds[0],
                                                        out / "recipes" / r / f"{m}_f0.1_s{cfg.seeds[0]}",
                                                        data[MAIN_TASK], budget, r, cfg.device,
                                                        start if r == recipe else pretrain[r]))
            plan.compare[r] = cells
    return plan


# --------------------------------------------------------------------------------------------------- results
def _history(folder: Path) -> list[dict[str, Any]]:
    for name in ("training_history.json", "history.json"):
        try:
            data = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):  # {column: [values per epoch]} → rows
            n = max((len(v) for v in data.values() if isinstance(v, list)), default=0)
            return [{k: v[i] for k, v in data.items() if isinstance(v, list) and i < len(v)} for i in range(n)]
        return list(data)
    return []


def val_curve(folder: Path) -> list[tuple[int, float]]:
    """(epoch, fold-9 record macro AUROC) of every validated epoch of a cell."""
    curve = []
    for i, row in enumerate(_history(folder)):
        v = row.get("val_record_auroc_macro", row.get("val_auroc"))
        if isinstance(v, (int, float)) and math.isfinite(v):
            curve.append((int(row.get("epoch", i + 1)), float(v)))
    return curve


def write_predictions(cell: Cell, data: Path, dest: Path) -> Path | None:
    """A finished cell's fold-10 probabilities as ``ecg_id,CLASS,...`` (sorted by ecg_id), gzip-compressed."""
    import h5py

    npz = cell.folder / RECORDS_FILE
    if not npz.is_file():
        dest.unlink(missing_ok=True)  # from an earlier state of the cell: not what the table now says
        return None
    rec = read_records(npz)
    with h5py.File(data / "windows" / "test.h5", "r") as f:
        names = [str(n) for n in f.attrs["class_names"]]
    ids = np.array([ecg_id_of(r) for r in rec.record_id])
    order = np.argsort(ids)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    # no time stamp or file name in the gzip header: the same probabilities give the same bytes
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz, \
            io.TextIOWrapper(gz, newline="") as f:
        w = csv.writer(f)
        w.writerow(["ecg_id", *names])
        for i in order:
            w.writerow([int(ids[i]), *(f"{p:.9g}" for p in rec.probs[i])])
    os.replace(tmp, dest)
    return dest


def _table(cells: list[Cell], cfg: argparse.Namespace, task: str, modes: Sequence[str], fractions: Sequence[float],
           seeds: Sequence[int]) -> tuple[list[dict[str, Any]], str]:
    ns = argparse.Namespace(modes=list(modes), fractions=list(fractions), seeds=list(seeds), metric="auroc_macro",
                            bootstrap=cfg.bootstrap, bootstrap_seed=0, label_kind="multi",
                            title=f"PTB-XL {task}, 100 Hz (train folds 1-8, select fold 9, test fold 10), record level")
    records = collect(cells, ns)
    summary = summarize(cells, records, ns)
    return summary, markdown(summary, cells, ns)


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _pretrain_info(cell: Cell) -> dict[str, Any]:
    info: dict[str, Any] = {"folder": str(cell.folder), "state": cell_state(cell.folder, _SUMMARY)}
    try:
        info["args"] = json.loads((cell.folder / "args.json").read_text())
    except (OSError, ValueError):
        pass
    summary = cell.folder / _SUMMARY
    if summary.is_file():
        info["summary"] = summary.read_text()
    return info


def draw_curves(curves: dict[str, list[tuple[int, float]]], path: Path, title: str) -> Path:
    """Fold-9 record macro AUROC against epoch, one line per cell."""
    from matplotlib.figure import Figure

    from ..figures import PALETTE, save_figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for i, (name, pts) in enumerate(sorted(curves.items())):
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, color=PALETTE[i % len(PALETTE)],
                    label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("fold-9 record macro AUROC")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)


def _state(c: Cell) -> str:
    """A cell's state: "done" when carried from a published folder, else its folder's."""
    return "done" if "carried" in c.result else cell_state(c.folder)


def _best_val(c: Cell) -> float | None:
    """A cell's best fold-9 record macro AUROC: from its curve here, or the published one when carried."""
    carried = c.result.get("carried")
    return carried["best_val"] if carried else max((v for _, v in val_curve(c.folder)), default=None)


def _run_entry(task: str, c: Cell) -> dict[str, Any]:
    """A cell's line of results.json's ``runs``: run here, or carried from a published folder."""
    carried = c.result.get("carried")
    entry = {"task": task, "name": c.name, "mode": c.mode, "fraction": c.fraction, "seed": c.seed,
             "state": _state(c), "wall_s": c.result.get("wall_s"),
             "value": c.result.get("value"), "ci": c.result.get("ci"), "best_val_record_auroc_macro": _best_val(c),
             "command": carried["command"] if carried else c.result.get("command")}
    if carried:
        entry["carried_from"] = carried["from"]
    return entry


def _carried_predictions(cell: Cell, dest: Path) -> Path | None:
    """A carried cell's published predictions, copied to ``dest`` (None for a cell run here)."""
    carried = cell.result.get("carried")
    if carried is None:
        return None
    if carried["predictions"].resolve() != dest.resolve():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(carried["predictions"], dest.with_name(dest.name + ".tmp"))
        os.replace(dest.with_name(dest.name + ".tmp"), dest)
    return dest


def _carry_expected(cfg: argparse.Namespace, fp: dict[str, Any]) -> dict[str, Any]:
    """What a published folder's results.json must record for its cells to be carried into this call."""
    return {"recipe": cfg.recipe, "budget": asdict(BUDGETS[cfg.device_kind]), "data_fingerprint": fp}


def merge_comparison(here: dict[str, dict[str, dict[str, Any]]], published: dict[str, dict[str, dict[str, Any]]],
                     source: str) -> dict[str, dict[str, dict[str, Any]]]:
    """The recipe comparison's fold-9 entries ``{recipe: {mode: entry}}``: this call's, and for a cell that is not
    done here (or not in this call) the published entry when it is done there, marked ``carried_from``."""
    merged = {r: {m: {**e, "carried_from": e.get("carried_from", source)} for m, e in modes.items()
                  if e.get("state") == "done" and e.get("val_record_auroc_macro") is not None}
              for r, modes in published.items()}
    for r, modes in here.items():
        for m, e in modes.items():
            if e["state"] == "done" or m not in merged.get(r, {}):
                merged.setdefault(r, {})[m] = e
    return {r: modes for r, modes in merged.items() if modes}


def comparison_winner(compare: dict[str, dict[str, dict[str, Any]]]) -> str | None:
    """The recipe with the best mean fold-9 score over probe and fine-tuning, once every recipe has both."""
    scores = {r: [v.get(m, {}).get("val_record_auroc_macro") for m in ("probe", "finetune")]
              for r, v in compare.items()}
    if len(scores) < 2 or any(x is None for v in scores.values() for x in v):
        return None
    return max(scores, key=lambda r: float(np.mean(scores[r])))


def carry_cells(plan: Plan, data: dict[str, Path], cfg: argparse.Namespace, ns: argparse.Namespace,
                fp: dict[str, Any]) -> list[str]:
    """Carry every cell of the grid and the other tasks that this --out has not finished from ``cfg.published``
    (its ``result["carried"]``), when it ran the same recipe and budget on the same data → one line per cell that
    could not be carried (or one line for all), saying why."""
    if why := mismatch(cfg.published, _carry_expected(cfg, fp)):
        return [why]
    notes = []
    for task, cells in plan.by_task():
        test = data[task] / "windows" / "test.h5"
        if not test.is_file():
            notes.append(f"{task}: {test} is not prepared yet (a run prepares it first), nothing carried")
            continue
        try:
            truth = record_labels(test)  # read once per task: every cell of it is scored against these labels
        except (OSError, ValueError) as err:
            notes.append(f"{task}: {err}, nothing carried")
            continue
        for c in cells:
            if cell_state(c.folder) != "done" and (why := carry_cell(c, task, command(c, ns, "new"), cfg.published,
                                                                      truth)):
                notes.append(why)
    return notes


def report(plan: Plan, data: dict[str, Path], cfg: argparse.Namespace, fp: dict[str, Any],
           wall: float) -> dict[str, Any]:
    """results.json / results.md, predictions and learning curves in ``cfg.out``."""
    out = cfg.out
    budget = BUDGETS[cfg.device_kind]
    summary, table = _table(plan.grid, cfg, MAIN_TASK, cfg.modes, cfg.fractions, cfg.seeds)
    preds = []
    for task, cells in plan.by_task():
        for c in cells:
            dest = out / "predictions" / task / f"{c.name}.csv.gz"
            if (p := _carried_predictions(c, dest) or write_predictions(c, data[task], dest)) is not None:
                preds.append(str(p.relative_to(out)))
    others = {}
    for task, cells in plan.others.items():
        s, t = _table(cells, cfg, task, cfg.other_modes, [1.0], cfg.seeds[:1])
        others[task] = {"cells": s, "markdown": t}
    here = {r: {c.mode: {"val_record_auroc_macro": _best_val(c), "folder": str(c.folder), "state": _state(c)}
                for c in cells} for r, cells in plan.compare.items()}
    carry_ok = cfg.published is not None and mismatch(cfg.published, _carry_expected(cfg, fp)) is None
    pub, source = (cfg.published.results, str(cfg.published.folder)) if carry_ok else ({}, "")
    compare = merge_comparison(here, (pub.get("recipe_comparison") or {}).get("fold9") or {}, source)
    winner = comparison_winner(compare)
    pretraining = {r: _pretrain_info(c) for r, c in plan.pretrain.items()}
    for r, info in (pub.get("pretraining") or {}).items():
        if r not in pretraining and r in compare:  # the pretraining the carried comparison entries started from
            pretraining[r] = {**info, "carried_from": info.get("carried_from", source)}
    published_curves = cfg.published.results.get("learning_curves", {}) if cfg.published else {}
    curves = {c.name: published_curves.get(c.name, []) if "carried" in c.result else val_curve(c.folder)
              for c in plan.grid if c.seed == cfg.seeds[0]}
    if any(curves.values()):
        draw_curves(curves, out / "learning_curves.png",
                    f"PTB-XL {MAIN_TASK}, seed {cfg.seeds[0]}: validation per epoch")
    runs = [_run_entry(task, c) for task, cells in plan.by_task() for c in cells]
    result = {
        "protocol": {"data": "PTB-XL 1.0 (Wagner et al. 2020, CC BY 4.0), 100 Hz records, 12 leads, mV as stored",
                     "split": "strat_fold 1-8 train (and pretraining, no labels), 9 validation (every choice), "
                              "10 test", "task": MAIN_TASK, "metric": "record-level macro AUROC on fold 10",
                     "evaluation": f"sliding {budget.crop}-sample windows, hop {budget.eval_step}, probabilities "
                                   "averaged per record", "training_crops": f"random {budget.crop}-sample crops",
                     "fractions": cfg.fractions, "fraction_unit": "patients (group_id), stratified by label set",
                     "seeds": cfg.seeds, "modes": cfg.modes, "interval": "95 % percentile bootstrap over fold-10 "
                     f"records of the seed-mean score, {cfg.bootstrap} resamples"},
        "device": cfg.device, "budget": asdict(budget), "recipe": cfg.recipe, "commit": _commit(),
        "data_fingerprint": fp, "pretraining": pretraining,
        "pretrained_given": None if cfg.pretrained is None else {"path": str(cfg.pretrained),
                                                                 "sha256": sha256_of(cfg.pretrained)},
        "carried": None if cfg.published is None else {
            "from": str(cfg.published.folder), "commit": cfg.published.results.get("commit"),
            "data_fingerprint": cfg.published.results.get("data_fingerprint"),
            "pretraining": cfg.published.results.get("pretraining"),
            "cells": [f"{r['task']}/{r['name']}" for r in runs if r.get("carried_from")]},
        "cells": summary, "other_tasks": others, "recipe_comparison": {"fold9": compare, "winner": winner},
        "learning_curves": curves, "runs": runs, "predictions": preds, "wall_s_this_call": wall}
    write_json(out / "results.json", result)
    lines = [table, *(f"\n{o['markdown']}" for o in others.values())]
    if compare:
        lines.append(f"\n## Recipes (fold-9 record macro AUROC, 10 % labels, seed {cfg.seeds[0]})\n\n"
                     "| recipe | probe | fine-tune |\n|---|---:|---:|")
        for r, v in compare.items():
            fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
            lines.append(f"| {r} | {fmt(v.get('probe', {}).get('val_record_auroc_macro'))} | "
                         f"{fmt(v.get('finetune', {}).get('val_record_auroc_macro'))} |")
        lines.append(f"\nwinner on fold 9: {winner or 'not decided yet'}")
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
    return result


# --------------------------------------------------------------------------------------------------- CLI
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m physiowave.benchmark ptbxl", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ptbxl", type=Path, required=True,
                   help="the PTB-XL folder: ptbxl_database.csv, scp_statements.csv, records100/")
    p.add_argument("--out", type=Path, required=True, help="output folder (data/, pretrain/, runs, results)")
    p.add_argument("--device", default="cpu", help="cpu (the CPU configuration) or cuda[:N] (the paper-size one)")
    p.add_argument("--recipe", choices=RECIPES, default="physiowave",
                   help="the recipe of the table (default physiowave)")
    p.add_argument("--modes", default="scratch,probe,finetune,resnet", help="methods of the main table")
    p.add_argument("--fractions", default="0.01,0.1,1", help="label fractions of the main table")
    p.add_argument("--seeds", default="0,1,2", help="seeds of the main table (the first one for the other parts)")
    p.add_argument("--other_tasks", default="all,diagnostic,subdiagnostic,form,rhythm",
                   help="the other PTB-XL tasks, at 100 %% labels and the first seed ('' for none)")
    p.add_argument("--other_modes", default="finetune,resnet", help="methods of the other tasks")
    p.add_argument("--compare", action=argparse.BooleanOptionalAction, default=True,
                   help="the recipe comparison: every recipe pretrained, probed and fine-tuned at 10 %% labels")
    p.add_argument("--pretrained", type=Path, default=None,
                   help="start probe and fine-tuning from this encoder (a checkpoint, or a hub-style folder such as "
                        "weights/physiowave-ptbxl100-cpu) instead of pretraining one; with --compare, a folder that "
                        "states the table recipe and this budget, and only the other recipes are pretrained")
    p.add_argument("--carry", type=Path, default=None,
                   help="a published results folder (e.g. benchmarks/results/ptbxl): cells this --out has not "
                        "finished are taken from it when it holds them finished, with the same flags; they do not "
                        "run again, and the results merge both")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (each gets cores / jobs threads; default 2)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--python", default=sys.executable, help="interpreter of the runs")
    p.add_argument("--publish", type=Path, default=None, help="copy results and predictions (not the runs) here")
    p.add_argument("--dry_run", action="store_true", help="check the data and print every command; run nothing")
    p.add_argument("--report", action="store_true",
                   help="write results (and --publish) from the cells finished so far; run nothing (safe while "
                        "another call is running them)")
    cfg = p.parse_args(argv)
    cfg.device_kind = "cuda" if cfg.device.startswith("cuda") else "cpu" if cfg.device == "cpu" else None
    if cfg.device_kind is None:
        p.error(f"--device {cfg.device}: expected cpu or cuda[:N]")
    try:
        cfg.fractions = sorted(floats(cfg.fractions))
        cfg.seeds = ints(cfg.seeds)
    except ValueError as err:
        p.error(f"--fractions / --seeds: {err}")
    cfg.modes = cfg.modes.replace(",", " ").split()
    cfg.other_modes = cfg.other_modes.replace(",", " ").split()
    cfg.other_tasks = [t for t in cfg.other_tasks.replace(",", " ").split() if t != MAIN_TASK]
    for flag, items, allowed in (("--modes", cfg.modes, MODES), ("--other_modes", cfg.other_modes, MODES),
                                 ("--other_tasks", cfg.other_tasks, TASKS)):
        if bad := [m for m in items if m not in allowed]:
            p.error(f"{flag}: unknown {', '.join(bad)} (expected {', '.join(allowed)})")
    if not cfg.modes or not cfg.seeds or not cfg.fractions or any(not 0 < f <= 1 for f in cfg.fractions):
        p.error("--modes, --seeds and --fractions (in (0, 1]) must not be empty")
    if cfg.jobs < 1 or cfg.bootstrap < 1:
        p.error("--jobs and --bootstrap must be ≥ 1")
    if "resnet" in cfg.modes + cfg.other_modes and not RESNET_SCRIPT.is_file():
        p.error(f"resnet: {RESNET_SCRIPT} not found (it ships with the repository, not the package)")
    if cfg.pretrained is not None:
        cfg.pretrained = cfg.pretrained.resolve()
        if not (cfg.pretrained.is_file() or (cfg.pretrained / "config.json").is_file()):
            p.error(f"--pretrained {cfg.pretrained}: expected a checkpoint file or a folder with config.json")
        if cfg.compare and (why := _not_comparable(cfg.pretrained, cfg.recipe, BUDGETS[cfg.device_kind])):
            p.error(f"--pretrained {cfg.pretrained} with --compare: {why}; add --no-compare, or pass a folder that "
                    "this protocol pretrained with --recipe and --device of this call")
    cfg.out = cfg.out.resolve()
    cfg.ptbxl = cfg.ptbxl.resolve()
    cfg.published = None
    if cfg.carry is not None:
        cfg.carry = cfg.carry.resolve()
        try:
            cfg.published = load_published(cfg.carry)
        except SystemExit as err:
            p.error(f"--carry: {str(err.code).removeprefix('error: ')}")
    return cfg


_PRETRAIN_BUDGET = ("model", "crop", "batch_size", "pretrain_epochs")  # what of a budget its pretraining uses


def _not_comparable(pretrained: Path, recipe: str, budget: Budget) -> str | None:
    """Why an encoder given with ``--compare`` cannot stand for ``recipe``'s pretraining in the comparison (its
    folder must state that recipe and this budget's pretraining, as the protocol's released folders do), or None."""
    if not (pretrained / "config.json").is_file():
        return "a checkpoint file does not state the recipe and budget it was pretrained with (expected a folder)"
    from ..hub import read_config  # imports torch: only here, not at start-up

    try:
        training = read_config(pretrained).get("training")
    except ValueError as err:
        return f"its config.json is not a model folder's configuration ({err})"
    training = training if isinstance(training, dict) else {}
    if training.get("recipe") != recipe:
        return f"it was pretrained with recipe {training.get('recipe')}, the table's is {recipe}"
    theirs, ours = training.get("budget") or {}, json.loads(json.dumps(asdict(budget)))
    if diff := [k for k in _PRETRAIN_BUDGET if theirs.get(k) != ours[k]]:
        return f"its pretraining budget differs from {budget.name}'s in {', '.join(diff)}"
    return None


def _settings(cfg: argparse.Namespace) -> dict[str, Any]:
    """What ``--out`` holds runs of: the data, the device kind, the recipe of the table and the budget. A later call
    must agree on the first three and on the windows the data files were cut into (crop, evaluation hop), else
    another --out; the rest of the budget (epochs, network, batch) is checked cell by cell by the runner, so that a
    changed budget reruns only the cells it changes, once their folders are moved away."""
    return {"ptbxl": str(cfg.ptbxl), "device_kind": cfg.device_kind, "recipe": cfg.recipe,
            "budget": asdict(BUDGETS[cfg.device_kind])}


def _check_settings(cfg: argparse.Namespace) -> None:
    path = cfg.out / "protocol.json"
    mine = json.loads(json.dumps(_settings(cfg)))
    if path.is_file():
        old = json.loads(path.read_text())
        diff = [k for k in ("ptbxl", "device_kind", "recipe") if old.get(k) != mine[k]]
        diff += [f"budget {k}" for k in ("crop", "eval_step") if old.get("budget", {}).get(k) != mine["budget"][k]]
        if diff:
            _fail(f"{cfg.out} holds a protocol run with other {', '.join(diff)} ({path}); pass another --out")
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_json(path, mine)


def check_publish(plan: Plan, dest: Path) -> None:
    """Refuse to publish into ``dest`` when it holds finished cells that this call's table leaves out (other tasks,
    modes, fractions or seeds): publishing replaces its results.json and removes their predictions."""
    if not (dest / "results.json").is_file():
        return
    mine = {(task, c.name) for task, cells in plan.by_task() for c in cells}
    held = load_published(dest).runs  # one line naming the file when it is not a published protocol run
    if lost := [f"{task}/{name}" for (task, name), r in held.items() if r.get("state") == "done"
                and (task, name) not in mine]:
        _fail(f"--publish {dest} holds {len(lost)} finished cell(s) this call's table leaves out "
              f"({', '.join(lost[:3])}{', ...' if len(lost) > 3 else ''}); publishing would drop them: pass the "
              "tasks, modes, fractions and seeds that cover them, or publish to another folder")


def publish(out: Path, dest: Path) -> None:
    """Copy results.json, results.md, learning_curves.png and predictions/ to ``dest`` (predictions of cells no
    longer in the table are removed there too)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("results.json", "results.md", "learning_curves.png"):
        if (out / name).is_file():
            shutil.copy2(out / name, dest / name)
    if (out / "predictions").is_dir():
        shutil.copytree(out / "predictions", dest / "predictions", dirs_exist_ok=True)
        for old in (dest / "predictions").rglob("*.csv.gz"):  # a cell no longer in the table
            if not (out / "predictions" / old.relative_to(dest / "predictions")).is_file():
                old.unlink()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cfg = parse_args(argv)
        rows = check_ptbxl(cfg.ptbxl)
        print(f"{cfg.ptbxl}: {len(rows)} records listed, all found at 100 Hz", flush=True)
        if not cfg.dry_run:
            _check_settings(cfg)
        fp = fingerprint(cfg.ptbxl, rows, None if cfg.dry_run else cfg.out / "fingerprint.json") \
            if not cfg.dry_run or cfg.published else {}
        tasks = [MAIN_TASK, *cfg.other_tasks]
        data = {t: cfg.out / "data" / t for t in tasks}
        plan = plan_protocol(cfg.out, data, cfg)
        if cfg.publish is not None:
            check_publish(plan, cfg.publish)
        if not cfg.dry_run and not cfg.report:
            for t in tasks:
                prepare(cfg.ptbxl, cfg.out, t, BUDGETS[cfg.device_kind], cfg.python)
    except SystemExit as err:
        if isinstance(err.code, str):
            print(err.code, file=sys.stderr)
            return 1
        raise
    ns = argparse.Namespace(python=cfg.python, extra=[], label_kind="multi", jobs=cfg.jobs)
    if cfg.published is not None:
        for why in carry_cells(plan, data, cfg, ns, fp):
            print(f"not carried: {why}", flush=True)
    cells = [c for c in plan.ordered(cfg.recipe) if "carried" not in c.result]
    for c in cells:  # the command each cell runs (a run below replaces it with the command of its attempt)
        c.result["command"] = shlex.join(command(c, ns, cell_state(c.folder, c.done_file)))
    if cfg.dry_run:
        for c in cells:
            state = cell_state(c.folder, c.done_file)
            cmd = command(c, ns, state)
            if state != "new" and (change := command_change(c, cmd)):  # a run would refuse it: say so here
                state += f", refused: it ran with other flags ({change}); move its folder away to run it again"
            print(f"# {c.folder.relative_to(cfg.out)}: {state}")
            print(" ".join(cmd))
        return 0
    env = child_env(cfg.jobs)
    if not cfg.report:
        print(f"{len(cells)} runs into {cfg.out}, {cfg.jobs} at a time, {env['OMP_NUM_THREADS']} thread(s) each",
              flush=True)
    t0 = time.perf_counter()
    if not cfg.report:
        run_cells(cells, ns, env, progress, lock=cfg.out)  # one lock for the whole --out, whatever the subset
    result = report(plan, data, cfg, fp, time.perf_counter() - t0)
    print((cfg.out / "results.md").read_text(), flush=True)
    if cfg.publish:
        publish(cfg.out, cfg.publish)
        print(f"published to {cfg.publish}")
    failed = [f"{r['task']}/{r['name']}" for r in result["runs"] if r["state"] != "done"]
    if failed:
        print(f"not finished: {', '.join(failed)} (run the same command again to continue)", file=sys.stderr)
    return 1 if failed else 0
