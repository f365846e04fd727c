"""A protocol runner: scratch / linear probe / fine-tuning x label fractions x seeds, one table with bootstrap
intervals over test records, for putting PhysioWave beside published results.

    python -m physiowave.benchmark --train train.h5 --val val.h5 --test test.h5 --pretrained ecg.pth \\
        --modes scratch,probe,finetune --fractions 0.01,0.1,1 --seeds 0,1,2 --out DIR [--metric auroc_macro] \\
        [--jobs N] [--bootstrap 1000] [--dry_run] [-- FLAGS FOR EVERY RUN]
    python -m physiowave.benchmark ptbxl --ptbxl PTBXL_FOLDER --out DIR   (the PTB-XL protocol end to end:
                                                                              physiowave/ptbxl_protocol.py)

Every cell is a run of the training scripts as a subprocess: ``finetune.py`` when the training file's labels are
``[N]`` class indices, ``finetune_multilabel.py`` when they are multi-hot ``[N, K]``; ``scratch`` = no
``--pretrained_path``, ``probe`` = ``--pretrained_path P --freeze_encoder``, ``finetune`` = ``--pretrained_path P``;
each with ``--train_file --val_file --test_file --label_fraction F --seed S --output_dir DIR/runs/<mode>_f<F>_s<S>``
and the flags after ``--``. The script's output (appended over attempts) is ``run.log`` in that folder.

Resuming: run the same command again. A cell whose folder holds ``test_results.json`` is finished and not run
again (unless the run predates its ``test_records.npz`` although its engine writes one: then it is re-evaluated);
a cell with any other run file (killed, failed) is continued with ``--resume auto`` (the engine continues from the
folder's latest checkpoint, or starts afresh when none was written). Children die with the runner (Linux), so a
killed runner leaves no orphan writing into a folder. ``DIR/protocol.json`` records the files, checkpoint and
flags; a later call with other ones is refused (use another ``--out``).

Outputs in ``--out``: ``results.json`` (protocol, every run, every cell), ``results.md`` (the table) and
``results.png`` (metric vs label fraction, log x, one line per mode, error bars = sd over seeds).

Statistics (``--metric``, default ``auroc_macro``):
* a run's score is computed from its ``test_records.npz`` (per-record probabilities: window probabilities
  averaged per record): ``auroc_macro`` = mean over classes with both positives and negatives of the per-class
  ROC AUC (multi-label: per label; single-label: one-vs-rest), ``acc`` = accuracy of the most probable class
  (single-label). Without that file the engine's ``test_results.json`` gives the number (its ``record`` sub-dict
  if present, else the window-level value, marked as such) and there is no interval. Other ``--metric`` names
  are read from ``test_results.json`` the same way (no interval).
* a cell's mean ± sd is over the seeds that finished (sd with ddof 1; none for one seed).
* the 95 % interval is a percentile bootstrap over test records of the seed-mean score: each of B resamples
  (``--bootstrap``, default 1000) draws R records with replacement, the same records for every seed (all seeds
  are tested on the same file); the metric is computed on each seed's predictions of those records and averaged
  over seeds; the interval is the 2.5th and 97.5th percentiles of the B averages. The resamples come from
  ``--bootstrap_seed`` (default 0), so every cell and seed sees the same ones. A resample where the metric is
  undefined (no class with both positives and negatives) is dropped and counted. It measures the uncertainty
  due to the finite test set; the sd measures the spread over training seeds.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .contract import LABEL_KEYS
from .fileio import FolderBusyError, atomic_write_text, folder_lock, write_json

__all__ = ["MODES", "BOOTSTRAP_METRICS", "Records", "label_kind", "metric_value", "bootstrap", "read_records",
           "Cell", "plan", "cell_state", "command", "run_cells", "collect", "summarize", "markdown", "draw",
           "parse_args", "main"]

ROOT = Path(__file__).resolve().parents[1]
MODES = {"scratch": "from scratch", "probe": "pretrained + linear probe", "finetune": "pretrained + fine-tuning",
         "resnet": "supervised 1-D ResNet (baseline)"}
# The baseline of the "resnet" mode: a script of the checkout (benchmarks/), not part of the package.
RESNET_SCRIPT = ROOT / "benchmarks" / "ptbxl_resnet1d.py"
BOOTSTRAP_METRICS = ("auroc_macro", "acc")
RESULTS_FILE, RECORDS_FILE, LOG_FILE = "test_results.json", "test_records.npz", "run.log"
INPUTS_FILE = "inputs.json"  # the fingerprint of a cell's input files, taken when it first starts
_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
WALL_FILE = "wall.json"  # the runner's record of a cell's seconds, summed over its attempts
PROTOCOL_FILE = "protocol.json"
# A run's files (physiowave/engine/outputs.py): any of them means a run used the folder.
_RUN_FILES = ("args.json", "training_history.json", "best_model.pth", "latest_model.pth", "val_results.json",
              "training_summary.txt")
# Flags the runner sets itself: given after ``--`` they would contradict the grid.
_OWN_FLAGS = ("--train_file", "--val_file", "--test_file", "--label_fraction", "--seed", "--output_dir",
              "--pretrained_path", "--freeze_encoder", "--resume", "--overwrite", "--eval")
# Names of the metric in the engine's test_results.json, per task, where they differ from ours.
_ENGINE_KEYS = {("auroc_macro", "single"): "auroc"}
_SCRIPTS = {"single": ("finetune.py", "finetune"), "multi": ("finetune_multilabel.py", "multilabel")}


# --------------------------------------------------------------------------------------------------- metrics
def label_kind(path: str | Path, label_key: str | None = None) -> str:
    """"single" when the file's labels are ``[N]`` class indices, "multi" when they are multi-hot ``[N, K]``."""
    import h5py

    with h5py.File(path, "r") as f:
        key = label_key or next((k for k in LABEL_KEYS if k in f), None)
        if key is None or key not in f:
            raise ValueError(f"{path}: no label dataset ({label_key or ', '.join(LABEL_KEYS)})")
        ndim = f[key].ndim
    if ndim not in (1, 2):
        raise ValueError(f"{path}: labels '{key}' have {ndim} dimensions; expected [N] or [N, K]")
    return "single" if ndim == 1 else "multi"


def _onehot(labels: np.ndarray, k: int) -> np.ndarray:
    """``[R, K]`` bool positives: multi-hot labels as given, class indices one-vs-rest."""
    return labels > 0.5 if labels.ndim == 2 else labels[:, None] == np.arange(k)


def metric_value(name: str, probs: np.ndarray, labels: np.ndarray) -> float:
    """``name`` ("auroc_macro" or "acc") of per-record ``probs [R, K]`` against ``labels`` (``[R]`` class
    indices or ``[R, K]`` 0/1), by sklearn; NaN when undefined (no class with both positives and negatives)."""
    from sklearn.metrics import roc_auc_score

    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if name == "acc":
        if labels.ndim != 1:
            raise ValueError("acc is a single-label metric; use auroc_macro for multi-label data")
        return float(np.mean(probs.argmax(1) == labels))
    if name != "auroc_macro":
        raise ValueError(f"unknown bootstrap metric {name!r}: expected one of {', '.join(BOOTSTRAP_METRICS)}")
    onehot = _onehot(labels, probs.shape[1])
    scores = [roc_auc_score(onehot[:, k], probs[:, k]) for k in range(probs.shape[1])
              if 0 < onehot[:, k].sum() < len(onehot)]
    return float(np.mean(scores)) if scores else math.nan


def _fast_metric(name: str, probs: np.ndarray, onehot: np.ndarray) -> float:
    """:func:`metric_value` for the bootstrap's many resamples: the same numbers (tested to 1e-12), AUROC as the
    Mann-Whitney statistic of average ranks (what roc_auc_score computes), all classes at once."""
    if name == "acc":
        return float(np.mean(onehot[np.arange(len(probs)), probs.argmax(1)]))
    from scipy.stats import rankdata

    pos = onehot.sum(0).astype(np.float64)
    neg = len(onehot) - pos
    valid = (pos > 0) & (neg > 0)
    if not valid.any():
        return math.nan
    ranks = rankdata(probs[:, valid], axis=0)
    p, n = pos[valid], neg[valid]
    return float(np.mean(((ranks * onehot[:, valid]).sum(0) - p * (p + 1) / 2) / (p * n)))


def bootstrap(name: str, probs: Sequence[np.ndarray], labels: np.ndarray, n: int = 1000, seed: int = 0,
              level: float = 0.95) -> dict[str, Any]:
    """Percentile bootstrap over records of the seed-mean ``name``: ``probs`` holds one ``[R, K]`` array per seed
    (rows = the same records, in the same order, as ``labels``). Each resample draws R record indices with
    replacement from ``np.random.default_rng(seed)``, the same for every seed; the metric of each seed on them is
    averaged → ``{value (on all records), low, high, n, dropped (resamples where it was undefined)}``."""
    if not len(probs):
        raise ValueError("bootstrap: no predictions")
    labels = np.asarray(labels)
    r = len(labels)
    if any(len(p) != r for p in probs):
        raise ValueError(f"bootstrap: predictions for {[len(p) for p in probs]} records, labels for {r}")
    value = float(np.mean([metric_value(name, p, labels) for p in probs]))
    if name == "acc" and labels.ndim != 1:
        raise ValueError("acc is a single-label metric; use auroc_macro for multi-label data")
    probs = [np.asarray(p, dtype=np.float64) for p in probs]
    onehot = _onehot(labels, probs[0].shape[1])
    rng = np.random.default_rng(seed)
    means = np.empty(n)
    for b in range(n):
        idx = rng.integers(0, r, r)
        means[b] = np.mean([_fast_metric(name, p[idx], onehot[idx]) for p in probs])
    kept = means[~np.isnan(means)]
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(kept, [tail, 100 - tail]) if len(kept) else (math.nan, math.nan)
    return {"value": value, "low": float(low), "high": float(high), "n": n, "dropped": int(n - len(kept))}


@dataclass
class Records:
    """A run's ``test_records.npz``, rows sorted by ``record_id``."""

    record_id: np.ndarray
    probs: np.ndarray
    labels: np.ndarray
    thresholds: np.ndarray | None = None


def read_records(path: str | Path) -> Records:
    """Read and check ``test_records.npz`` (``record_id [R]``, ``probs [R, K]``, ``labels [R]`` or ``[R, K]``,
    optional ``thresholds [K]``)."""
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in ("record_id", "probs", "labels") if k not in z.files]
        if missing:
            raise ValueError(f"{path}: missing array(s) {', '.join(missing)}")
        ids, probs, labels = z["record_id"].astype(str), z["probs"].astype(np.float64), z["labels"]
        thresholds = z["thresholds"] if "thresholds" in z.files else None
    r = len(ids)
    if probs.ndim != 2 or len(probs) != r or len(labels) != r or labels.ndim not in (1, 2) \
            or (labels.ndim == 2 and labels.shape[1] != probs.shape[1]):
        raise ValueError(f"{path}: shapes record_id {ids.shape}, probs {probs.shape}, labels {labels.shape} do not fit")
    if len(np.unique(ids)) != r:
        raise ValueError(f"{path}: record_id repeats; expected one row per record")
    order = np.argsort(ids, kind="stable")
    return Records(ids[order], probs[order], labels[order], thresholds)


# --------------------------------------------------------------------------------------------------- the grid
@dataclass
class Cell:
    """One run: a mode at a label fraction with a seed. The optional fields override the runner's configuration
    for this cell: its script (``[python, file]``), its files (train, val, test), its checkpoint, its flags, the
    file whose presence means it finished, and a cell that must finish first (e.g. the pretraining it starts from)."""

    mode: str
    fraction: float
    seed: int
    folder: Path
    result: dict[str, Any] = field(default_factory=dict)
    script: list[str] | None = None
    files: tuple[Path, Path, Path] | None = None
    pretrained: Path | None = None
    flags: list[str] | None = None
    done_file: str = RESULTS_FILE
    after: "Cell | None" = None

    @property
    def name(self) -> str:
        return self.folder.name


def plan(out: Path, modes: Sequence[str], fractions: Sequence[float], seeds: Sequence[int],
         resnet_flags: Sequence[str] = ()) -> list[Cell]:
    """Every cell, mode by mode, fraction by fraction, seed by seed (resnet cells with ``resnet_flags``)."""
    return [Cell(m, f, s, out / "runs" / f"{m}_f{f:g}_s{s}", flags=list(resnet_flags) if m == "resnet" else None)
            for m in modes for f in fractions for s in seeds]


def _has_record_metrics(results: Path) -> bool:
    try:
        return "record" in json.loads(results.read_text())
    except (OSError, ValueError):
        return False


def cell_state(folder: Path, done_file: str = RESULTS_FILE) -> str:
    """"done" (``test_results.json`` written, and ``test_records.npz`` too when that engine writes one; or the
    ``done_file`` of another kind of run, e.g. a pretraining's summary), "partial" (a run started there: continue
    it with ``--resume auto``) or "new"."""
    results = folder / done_file
    if results.is_file() and (done_file != RESULTS_FILE or (folder / RECORDS_FILE).is_file()
                              or not _has_record_metrics(results)):
        return "done"
    if results.is_file() or any((folder / n).exists() for n in _RUN_FILES) or any(folder.glob("*.pth")):
        return "partial"
    return "new"


def _script(kind: str, python: str) -> list[str]:
    """The script of a task: the checkout's ``finetune*.py``, else the engine entry point it calls."""
    file, task = _SCRIPTS[kind]
    if (ROOT / file).is_file():
        return [python, str(ROOT / file)]
    return [python, "-c", f"import sys; sys.argv[0] = {file!r}; from physiowave.engine import main; "
                          f"sys.exit(main({task!r}))"]


def command(cell: Cell, cfg: argparse.Namespace, state: str) -> list[str]:
    """The subprocess command of ``cell`` (``--resume auto`` unless its folder is new)."""
    if cell.mode == "pretrain":  # a pretraining cell: its script and flags say everything
        return [*(cell.script or []), *(cell.flags or []), "--output_dir", str(cell.folder),
                *(["--resume", "auto"] if state != "new" else [])]
    script = cell.script or ([cfg.python, str(RESNET_SCRIPT)] if cell.mode == "resnet"
                             else _script(cfg.kind, cfg.python))
    train, val, test = cell.files or (cfg.train, cfg.val, cfg.test)
    cmd = [*script, "--train_file", str(train), "--val_file", str(val), "--test_file", str(test),
           "--label_fraction", f"{cell.fraction:g}", "--seed", str(cell.seed), "--output_dir", str(cell.folder)]
    if cell.mode in ("probe", "finetune"):
        cmd += ["--pretrained_path", str(cell.pretrained or cfg.pretrained)]
        cmd += ["--freeze_encoder"] if cell.mode == "probe" else []
    cmd += list(cfg.extra if cell.flags is None else cell.flags)
    return cmd + (["--resume", "auto"] if state != "new" else [])


def _die_with_parent(parent: int) -> Callable[[], None]:
    def hook() -> None:  # runs in the child between fork and exec
        if sys.platform.startswith("linux"):
            import ctypes

            try:
                ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
            except OSError:
                pass
            if os.getppid() != parent:  # the runner died before the prctl
                os._exit(1)
    return hook


def _tail(log: Path, n: int = 8) -> list[str]:
    try:
        lines = log.read_text(errors="replace").replace("\r", "\n").splitlines()
    except OSError:
        return []
    return [ln for ln in lines if ln.strip()][-n:]


def _wall(folder: Path) -> float:
    """The seconds the runner has spent on a cell so far, over all its attempts (0 when none is recorded)."""
    try:
        return float(json.loads((folder / WALL_FILE).read_text())["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        with open(file, "rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


def input_fingerprint(cmd: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The files (and model folders) a cell's command reads → {path: size and mtime, plus a SHA-256 for
    checkpoints}. Scripts and the interpreter are code, not inputs."""
    found: dict[str, dict[str, Any]] = {}
    for arg in dict.fromkeys(cmd[1:]):
        path = Path(arg)
        if arg.endswith(".py") or not (path.is_file() or (path.is_dir() and (path / "config.json").is_file())):
            continue
        stat = path.stat()
        entry: dict[str, Any] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        if path.is_dir() or path.suffix in _CHECKPOINT_SUFFIXES:
            entry = {"sha256": _sha256(path)}  # a checkpoint is compared by content: a copy is the same one
        found[str(path.resolve())] = entry
    return found


def check_inputs(cell: Cell, cmd: Sequence[str]) -> None:
    """SystemExit (one line naming the cell and the file) when an input of a cell that has started before was
    replaced or changed since: its results, or the run it would continue, came from other inputs."""
    recorded = cell.folder / INPUTS_FILE
    if not recorded.is_file():
        return
    before = json.loads(recorded.read_text())
    now = input_fingerprint(cmd)
    for path, stamp in before.items():
        if now.get(path) != stamp:
            what = "is gone" if path not in now else "changed (" + ", ".join(
                k for k in stamp if now[path].get(k) != stamp[k]) + ")"
            raise SystemExit(f"error: {cell.folder}: its input {path} {what} since the cell started; its results "
                             "would mix two inputs: restore the file, or delete the cell's folder to run it again")


def _ready(cell: Cell) -> bool:
    """Whether the cell it starts from (``after``) has finished."""
    return cell.after is None or cell_state(cell.after.folder, cell.after.done_file) == "done"


def run_cells(cells: list[Cell], cfg: argparse.Namespace, env: dict[str, str],
              on_done: Callable[[Cell], None] = lambda c: None) -> None:
    """:func:`_run_cells` while holding the lock of the folder the cells share: a second runner started on the
    same output is refused at once (SystemExit with one line)."""
    with contextlib.ExitStack() as stack:
        if cells:
            common = Path(os.path.commonpath([str(c.folder.parent) for c in cells]))  # never a cell's own folder
            try:
                stack.enter_context(folder_lock(common, "--out"))
            except FolderBusyError as err:
                raise SystemExit(f"error: {err}") from None
        _run_cells(cells, cfg, env, on_done)


def _run_cells(cells: list[Cell], cfg: argparse.Namespace, env: dict[str, str],
               on_done: Callable[[Cell], None] = lambda c: None) -> None:
    """Run the cells that are not done, ``cfg.jobs`` at a time, in order but each only once the cell it starts from
    (``after``) is done, from this (the main) thread; fills ``cell.result`` with ``status`` ("skipped", "finished",
    "failed"), the command, exit status and seconds (this attempt; ``wall.json`` in the folder sums them)."""
    pending: list[Cell] = []
    for cell in cells:
        state = cell_state(cell.folder, cell.done_file)
        cmd = command(cell, cfg, state)
        if state != "new":
            check_inputs(cell, cmd)  # every cell before any runs
        cell.result = {"state_before": state, "command": shlex.join(cmd)}
        if state == "done":
            cell.result["status"] = "skipped"
            on_done(cell)
        else:
            pending.append(cell)
    running: dict[subprocess.Popen, tuple[Cell, float, Any]] = {}

    def _terminate(signum: int, frame: Any) -> None:  # SIGTERM: leave through the finally below, like Ctrl-C
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        while pending or running:
            while len(running) < cfg.jobs and (ready := [c for c in pending if _ready(c)]):
                cell = ready[0]
                pending.remove(cell)
                cmd = command(cell, cfg, cell.result["state_before"])
                cell.folder.mkdir(parents=True, exist_ok=True)
                if cell.result["state_before"] == "new" or not (cell.folder / INPUTS_FILE).is_file():
                    write_json(cell.folder / INPUTS_FILE, input_fingerprint(cmd))
                log = (cell.folder / LOG_FILE).open("a")
                log.write(f"\n[physiowave.benchmark {time.strftime('%Y-%m-%d %H:%M:%S')}] {shlex.join(cmd)}\n")
                log.flush()
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                        preexec_fn=_die_with_parent(os.getpid()))
                running[proc] = (cell, time.perf_counter(), log)
            time.sleep(0.05)
            for proc in [p for p in running if p.poll() is not None]:
                cell, t0, log = running.pop(proc)
                log.close()
                rc = proc.returncode
                done = rc == 0 and (cell.folder / cell.done_file).is_file()
                seconds = time.perf_counter() - t0
                write_json(cell.folder / WALL_FILE, {"seconds": _wall(cell.folder) + seconds})
                cell.result.update(status="finished" if done else "failed", returncode=rc, seconds=seconds)
                if not done:
                    cell.result["log_tail"] = _tail(cell.folder / LOG_FILE)
                    failed_first = {c.folder for c in pending if c.after is cell}
                    for c in [c for c in pending if c.folder in failed_first]:  # what starts from it cannot run
                        pending.remove(c)
                        c.result.update(status="failed", log_tail=[f"not run: {cell.folder} failed"])
                        on_done(c)
                on_done(cell)
            if pending and not running and not any(_ready(c) for c in pending):
                for c in pending:
                    c.result.update(status="failed", log_tail=[f"not run: {c.after.folder if c.after else '?'} "
                                                               "has not finished"])
                    on_done(c)
                pending.clear()
    finally:
        for proc, (cell, t0, _) in running.items():  # Ctrl-C / an error here: stop the children (their folders resume
            proc.kill()                                # later) and count the time they ran
            write_json(cell.folder / WALL_FILE, {"seconds": _wall(cell.folder) + time.perf_counter() - t0})
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------------------------------- results
def known_metrics(kind: str) -> set[str]:
    """The table metrics of a run's results for ``kind`` ("multi" or single-label): the bootstrapped ones and the
    engine's scalar metrics, read off a small example as the engine computes them."""
    from .engine.metrics import classification_metrics, multilabel_metrics
    from .engine.logger import scalars_of
    k = 3
    probs = np.full((k, k), 0.5 / k) + 0.5 * np.eye(k)
    if kind == "multi":
        p = np.clip(probs, 1e-6, 1 - 1e-6)
        scores = multilabel_metrics(np.log(p) - np.log1p(-p), np.eye(k, dtype=np.float32), 0.5, None)
    else:
        scores = classification_metrics(np.log(probs), np.arange(k), None)
    names = set(scalars_of(scores)) | ({"f1_macro_tuned"} if kind == "multi" else set())
    return names | {m for m in BOOTSTRAP_METRICS if kind != "multi" or m != "acc"}


def _engine_value(results: dict[str, Any], metric: str, kind: str) -> tuple[float | None, str]:
    """The metric from ``test_results.json``: its ``record`` sub-dict, else the window-level value."""
    key = _ENGINE_KEYS.get((metric, kind), metric)
    for where, level in ((results.get("record") or {}, "record (engine)"), (results, "window")):
        for k in (metric, key):
            v = where.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return float(v), level
    return None, "missing"


def collect(cells: list[Cell], cfg: argparse.Namespace) -> dict[tuple[str, float, int], Records]:
    """Each finished cell's score into ``cell.result`` (``value``, ``level``, ``records``, a per-run ``ci``)
    → the records read, by (mode, fraction, seed)."""
    records: dict[tuple[str, float, int], Records] = {}
    for cell in cells:
        r = cell.result
        r["wall_s"] = _wall(cell.folder) or None
        results = cell.folder / RESULTS_FILE
        if r.get("status") == "failed" or not results.is_file():
            continue
        try:
            test = json.loads(results.read_text())
        except (OSError, ValueError) as err:
            r.update(status="failed", error=f"{results}: {err}")
            continue
        npz = cell.folder / RECORDS_FILE
        if cfg.metric in BOOTSTRAP_METRICS and npz.is_file():
            try:
                rec = read_records(npz)
                ci = bootstrap(cfg.metric, [rec.probs], rec.labels, cfg.bootstrap, cfg.bootstrap_seed)
            except ValueError as err:
                r.update(status="failed", error=str(err))
                continue
            records[(cell.mode, cell.fraction, cell.seed)] = rec
            r.update(value=ci["value"], level="record", records=len(rec.record_id), ci=[ci["low"], ci["high"]],
                     ci_dropped=ci["dropped"])
        else:
            r["value"], r["level"] = _engine_value(test, cfg.metric, cfg.kind)
            if r["value"] is None:
                r["error"] = f"{results}: no '{cfg.metric}'"
    return records


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample sd (ddof 1; None for fewer than two values)."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def summarize(cells: list[Cell], records: dict[tuple[str, float, int], Records], cfg: argparse.Namespace
              ) -> list[dict[str, Any]]:
    """One entry per (mode, fraction): mean ± sd over the seeds with a value, and the pooled bootstrap interval
    of the seed-mean score when every one of those seeds has per-record predictions of the same records."""
    out = []
    for mode in cfg.modes:
        for fraction in cfg.fractions:
            group = [c for c in cells if c.mode == mode and c.fraction == fraction]
            scored = [c for c in group if c.result.get("value") is not None and not math.isnan(c.result["value"])]
            values = [c.result["value"] for c in scored]
            mean, sd = _mean_sd(values)
            entry: dict[str, Any] = {"mode": mode, "fraction": fraction, "n": len(values),
                                     "seeds": [c.seed for c in scored], "values": values, "mean": mean, "sd": sd,
                                     "levels": sorted({c.result["level"] for c in scored}), "ci": None}
            recs = [records.get((mode, fraction, c.seed)) for c in scored]
            if not scored:
                entry["ci_note"] = "no finished run"
            elif any(r is None for r in recs):
                entry["ci_note"] = f"no {RECORDS_FILE} (the engine does not write it yet)" \
                    if cfg.metric in BOOTSTRAP_METRICS else f"no interval for {cfg.metric}"
            elif any(not np.array_equal(r.record_id, recs[0].record_id) for r in recs):
                entry["ci_note"] = "the seeds' test records differ: no pooled interval"
            else:
                ci = bootstrap(cfg.metric, [r.probs for r in recs], recs[0].labels, cfg.bootstrap, cfg.bootstrap_seed)
                entry.update(ci=[ci["low"], ci["high"]], ci_dropped=ci["dropped"], records=len(recs[0].record_id))
            out.append(entry)
    return out


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _pct(fraction: float) -> str:
    return f"{100 * fraction:g} %"


def markdown(summary: list[dict[str, Any]], cells: list[Cell], cfg: argparse.Namespace) -> str:
    """The table (mode x fraction: mean ± sd over seeds, [95 % bootstrap interval]) and one row per run."""
    by = {(e["mode"], e["fraction"]): e for e in summary}
    window = any("window" in e["levels"] for e in summary)
    lines = [f"# {cfg.title}", "",
             f"Test {cfg.metric}, mean ± sd over seeds ({', '.join(map(str, cfg.seeds))}; n = seeds that finished), "
             f"[95 % percentile bootstrap interval over test records of the seed-mean score, "
             f"{cfg.bootstrap} resamples, seed {cfg.bootstrap_seed}].", "",
             "| method | " + " | ".join(f"{_pct(f)} labels" for f in cfg.fractions) + " |",
             "|---|" + "---:|" * len(cfg.fractions)]
    for mode in cfg.modes:
        row = []
        for f in cfg.fractions:
            e = by[(mode, f)]
            if not e["n"]:
                row.append("—")
                continue
            text = (f"{_fmt(e['mean'])} ± {_fmt(e['sd'])}"
                    + (f" [{_fmt(e['ci'][0])}, {_fmt(e['ci'][1])}]" if e["ci"] else ""))
            text += " (window-level)" if "window" in e["levels"] else ""
            row.append(text + (f" (n = {e['n']})" if e["n"] != len(cfg.seeds) else ""))
        lines.append(f"| {MODES[mode]} | " + " | ".join(row) + " |")
    notes = sorted({e["ci_note"] for e in summary if e.get("ci_note") and e["n"]})
    if window:
        notes.append("window-level: a run without per-record scores; its number is the engine's window-level metric")
    lines += [""] + [f"- {n}" for n in notes] + ([""] if notes else [])
    lines += ["## Runs", "", "| run | status | " + cfg.metric + " | 95 % interval | level | wall seconds |",
              "|---|---|---:|---|---|---:|"]
    for c in cells:
        r = c.result
        ci = f"[{_fmt(r['ci'][0])}, {_fmt(r['ci'][1])}]" if r.get("ci") else ""
        secs = f"{r['wall_s']:.0f}" if r.get("wall_s") else ""
        status = r.get("status") or cell_state(c.folder, c.done_file)  # a report-only call ran nothing: say the state
        lines.append(f"| {c.name} | {status} | {_fmt(r.get('value'))} | {ci} | "
                     f"{r.get('level', '')} | {secs} |")
    return "\n".join(lines) + "\n"


def draw(summary: list[dict[str, Any]], cfg: argparse.Namespace, path: Path) -> Path:
    """``metric`` vs label fraction (log x), one line per mode, error bars = sd over seeds."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullLocator

    from .figures import PALETTE, save_figure

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for i, mode in enumerate(cfg.modes):
        pts = [e for e in summary if e["mode"] == mode and e["mean"] is not None]
        if not pts:
            continue
        dodge = 10 ** (0.015 * (i - (len(cfg.modes) - 1) / 2))  # side by side, so the error bars do not overlap
        ax.errorbar([e["fraction"] * dodge for e in pts], [e["mean"] for e in pts], yerr=[e["sd"] or 0.0 for e in pts],
                    color=PALETTE[i % len(PALETTE)], marker="o", capsize=4, lw=1.5, label=MODES[mode])
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(list(cfg.fractions)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([_pct(f) for f in cfg.fractions])
    ax.set_xlabel("labelled training records")
    ax.set_ylabel(f"test {cfg.metric}")
    ax.set_title(cfg.title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=9, title="error bars: sd over seeds", title_fontsize=8)
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------------- CLI
def _floats(text: str) -> list[float]:
    return [float(t) for t in text.replace(",", " ").split()]


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.replace(",", " ").split()]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m physiowave.benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=Path, required=True, help="training HDF5 file")
    p.add_argument("--val", type=Path, required=True, help="validation HDF5 file (model selection, thresholds)")
    p.add_argument("--test", type=Path, required=True, help="test HDF5 file")
    p.add_argument("--pretrained", type=Path, default=None, help="checkpoint of the probe and finetune modes")
    p.add_argument("--modes", default="scratch,probe,finetune",
                   help="comma-separated, of scratch, probe, finetune, resnet (a supervised 1-D ResNet, multi-label)")
    p.add_argument("--resnet_args", default="", help="flags of the resnet cells (benchmarks/ptbxl_resnet1d.py), "
                                                     "one quoted string; the flags after -- go to the PhysioWave cells")
    p.add_argument("--fractions", default="0.01,0.1,1", help="label fractions in (0, 1], comma-separated")
    p.add_argument("--seeds", default="0,1,2", help="seeds, comma-separated")
    p.add_argument("--out", type=Path, required=True, help="output folder (runs/, results.*, protocol.json)")
    p.add_argument("--metric", default="auroc_macro",
                   help="table metric: auroc_macro or acc (bootstrapped from test_records.npz), or any key of "
                        "test_results.json's record metrics (no interval); default auroc_macro")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--bootstrap_seed", type=int, default=0, help="seed of the resamples (default 0)")
    p.add_argument("--python", default=sys.executable, help="interpreter of the runs (default: this one)")
    p.add_argument("--dry_run", action="store_true", help="print each cell's state and command; run nothing")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The runner's flags; everything after ``--`` goes to every run."""
    argv = list(sys.argv[1:] if argv is None else argv)
    own, extra = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = _parser()
    cfg = p.parse_args(own)
    cfg.extra = extra
    try:
        cfg.modes = [m for m in cfg.modes.replace(",", " ").split()]
        cfg.fractions = _floats(cfg.fractions)
        cfg.seeds = _ints(cfg.seeds)
    except ValueError as err:
        p.error(f"--fractions / --seeds: {err}")
    if unknown := [m for m in cfg.modes if m not in MODES]:
        p.error(f"--modes: unknown {', '.join(unknown)} (expected {', '.join(MODES)})")
    for flag, items in (("--modes", cfg.modes), ("--fractions", cfg.fractions), ("--seeds", cfg.seeds)):
        if not items or len(set(items)) != len(items):
            p.error(f"{flag}: expected distinct values, got {items}")
    if bad := [f for f in cfg.fractions if not 0 < f <= 1]:
        p.error(f"--fractions: {bad} not in (0, 1]")
    cfg.fractions = sorted(cfg.fractions)
    if cfg.jobs < 1 or cfg.bootstrap < 1:
        p.error("--jobs and --bootstrap must be ≥ 1")
    if any(m in ("probe", "finetune") for m in cfg.modes) and cfg.pretrained is None:
        p.error("--modes probe/finetune need --pretrained CHECKPOINT (or pass --modes scratch)")
    for name in ("train", "val", "test", "pretrained"):
        path = getattr(cfg, name)
        if path is not None:
            if not path.is_file():
                p.error(f"--{name}: {path}: no such file")
            setattr(cfg, name, path.resolve())
    if clash := [a for a in extra if a.split("=")[0] in _OWN_FLAGS]:
        p.error(f"flags after --: {', '.join(clash)} are set by the runner per cell; drop them")
    label_key = next((extra[i + 1] for i, a in enumerate(extra[:-1]) if a == "--label_key"), None) or \
        next((a.split("=", 1)[1] for a in extra if a.startswith("--label_key=")), None)
    try:
        cfg.kind = label_kind(cfg.train, label_key)
    except (OSError, ValueError) as err:
        p.error(str(err))
    cfg.title = f"{cfg.test.name} ({'multi' if cfg.kind == 'multi' else 'single'}-label), {cfg.test.parent}"
    if "resnet" in cfg.modes and cfg.kind != "multi":
        p.error(f"--modes resnet: the baseline ({RESNET_SCRIPT.name}) is multi-label; {cfg.train} is single-label")
    if "resnet" in cfg.modes and not RESNET_SCRIPT.is_file():
        p.error(f"--modes resnet: {RESNET_SCRIPT} not found (it ships with the repository, not the package)")
    if cfg.metric == "acc" and cfg.kind == "multi":
        p.error("--metric acc is single-label; the data are multi-label (use auroc_macro)")
    if cfg.metric not in (known := known_metrics(cfg.kind)):
        p.error(f"--metric {cfg.metric}: not a metric of {'multi' if cfg.kind == 'multi' else 'single'}-label runs; "
                f"choose from {', '.join(sorted(known))}")
    cfg.out = cfg.out.resolve()
    return cfg


def _protocol(cfg: argparse.Namespace) -> dict[str, Any]:
    """What a finished run's numbers depend on besides its cell: a later call must agree."""
    return {"train": str(cfg.train), "val": str(cfg.val), "test": str(cfg.test),
            "pretrained": None if cfg.pretrained is None else str(cfg.pretrained), "extra": cfg.extra,
            "resnet_args": cfg.resnet_args, "task": cfg.kind, "script": _script(cfg.kind, "python")[1]}


def _check_protocol(cfg: argparse.Namespace) -> None:
    path = cfg.out / PROTOCOL_FILE
    mine = _protocol(cfg)
    if path.is_file():
        old = json.loads(path.read_text())
        diff = [k for k in ("train", "val", "test", "extra", "task") if old.get(k) != mine[k]]
        diff += ["resnet_args"] if old.get("resnet_args", "") != mine["resnet_args"] else []
        if mine["pretrained"] is not None and old.get("pretrained") not in (None, mine["pretrained"]):
            diff.append("pretrained")
        if diff:
            sys.exit(f"error: {cfg.out} holds runs made with other {', '.join(diff)} ({path}); pass another --out")
        mine["pretrained"] = mine["pretrained"] or old.get("pretrained")
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_json(path, mine)


def _progress(cell: Cell) -> None:
    r = cell.result
    what = f"{cell.mode:8s} {_pct(cell.fraction):>7s} seed {cell.seed}"
    if r["status"] == "skipped":
        print(f"{what}  skipped: finished before", flush=True)
    elif r["status"] == "finished":
        resumed = " (resumed)" if r["state_before"] == "partial" else ""
        print(f"{what}  finished{resumed} in {r['seconds']:.0f} s", flush=True)
    else:
        print(f"{what}  FAILED (exit {r.get('returncode')}) after {r.get('seconds', 0):.0f} s; see "
              f"{cell.folder / LOG_FILE}" + "".join(f"\n    {ln}" for ln in r.get("log_tail", [])[-5:]), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["ptbxl"]:  # the PTB-XL protocol end to end
        from .ptbxl_protocol import main as ptbxl_main

        return ptbxl_main(argv[1:])
    cfg = parse_args(argv)
    cells = plan(cfg.out, cfg.modes, cfg.fractions, cfg.seeds, shlex.split(cfg.resnet_args))
    if cfg.dry_run:
        for c in cells:
            state = cell_state(c.folder)
            print(f"# {c.name}: {state}" + (" (not run again)" if state == "done" else ""))
            print(shlex.join(command(c, cfg, state)))
        return 0
    _check_protocol(cfg)
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, len(os.sched_getaffinity(0)) // cfg.jobs))
    env = {**os.environ, "OMP_NUM_THREADS": threads,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    kind = "multi-label (finetune_multilabel.py)" if cfg.kind == "multi" else "single-label (finetune.py)"
    print(f"{len(cells)} runs, {kind}, into {cfg.out / 'runs'}", flush=True)
    t0 = time.perf_counter()
    run_cells(cells, cfg, env, _progress)
    records = collect(cells, cfg)
    summary = summarize(cells, records, cfg)
    table = markdown(summary, cells, cfg)
    write_json(cfg.out / "results.json", {
        "protocol": {**_protocol(cfg), "title": cfg.title, "modes": cfg.modes, "fractions": cfg.fractions,
                     "seeds": cfg.seeds, "metric": cfg.metric, "bootstrap": cfg.bootstrap,
                     "bootstrap_seed": cfg.bootstrap_seed,
                     "interval": "95 % percentile bootstrap over test records of the seed-mean score (the same "
                                 "resampled records for every seed)"},
        "cells": summary,
        "runs": [{"name": c.name, "mode": c.mode, "fraction": c.fraction, "seed": c.seed, "folder": str(c.folder),
                  **c.result} for c in cells],
        "wall_s": time.perf_counter() - t0})
    atomic_write_text(cfg.out / "results.md", table)
    draw(summary, cfg, cfg.out / "results.png")
    print(f"\n{table}\nwritten: {cfg.out / 'results.md'}, results.json, results.png", flush=True)
    failed = [c.name for c in cells if c.result.get("status") == "failed" or c.result.get("error")]
    if failed:
        print(f"failed: {', '.join(failed)} (run the same command again to retry them)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
