"""Does self-supervised pretraining help on real sEMG? Gesture recognition on the Myo armband data.

    python benchmarks/bench_ssl.py                  # the real run (long: 3 seeds x 7 trainings on 2 CPU cores)
    python benchmarks/bench_ssl.py --quick          # 1 epoch, 2 + 2 subjects, 1 seed, < 2 min: proves it works
    python benchmarks/bench_ssl.py --jobs 2 --device cuda --tag my-recipe --finetune_args "--lr 3e-4"

Data: ``../shared/data/myo_armband_pretraining/`` beside the checkout (``--data``), 22 subjects, 7 gestures x
4 cycles, 28 files ``<Subject>/training0/classe_<i>.dat`` (int16 little-endian, 8 channels interleaved, ~1000
samples at 200 Hz; gesture = i % 7, cycle = i // 7). GPL-3: read at run time, never copied into the repository;
the HDF5 files below live in a temporary work dir.

Protocol
--------
* Subjects in natural order (Female0..Female9, Male0..Male11). Pretraining: Female0-4 and Male0-6 (12);
  evaluation: Female5-9 and Male7-11 (10); ``--pretrain_subjects`` / ``--eval_subjects`` override.
* Windows of 256 samples (1.28 s), values exactly as stored (the int8 range as float32: no scaling, no
  normalisation). Pretraining: step 64 over all 28 files of each pretraining subject, no labels
  (``pretrain.h5``). Evaluation, per evaluation subject: cycles 0 and 1 → ``train.h5``, cycle 2 → ``val.h5``,
  cycle 3 → ``test.h5``, step 128. One 7-class classifier over all evaluation subjects (subject-mixed).
  ``record_id`` = ``"<subject>/<file index>"`` (one recording), so label-fraction sampling keeps whole recordings.
* Label fractions 1.0 and 0.25 of the training recordings (``--label_fraction`` of finetune.py: per gesture,
  round(F x recordings), whole recordings, drawn with the seed, so every method sees the same subset for a
  seed), seeds 0, 1, 2 (``--seeds``). Validation and test sets are always complete.
* Methods:
    1. ``lda``: Hudgins time-domain features per channel (MAV, WL, ZC, SSC; ZC/SSC count only changes of at
       least 1 % of the window's per-channel standard deviation: with the integer-valued Myo data that means
       any non-zero change) + sklearn LinearDiscriminantAnalysis (default svd solver), trained on exactly the
       training windows finetune.py would use (``label_fraction_indices`` with the same record ids and seed);
       deterministic, so at fraction 1.0 its sd over seeds is 0.
    2. ``scratch``: ``finetune.py`` from random initialisation.
    3. ``probe``: ``pretrain.py`` once per seed on ``pretrain.h5``, then ``finetune.py --pretrained_path
       <best_model.pth, else latest_checkpoint.pth> --freeze_encoder`` (a linear probe).
    4. ``finetune``: ``finetune.py --pretrained_path <same checkpoint>`` (full fine-tuning).
  Every script runs as a subprocess with ``--device`` (default cpu), ``--num_workers 0``, ``--seed S`` and the
  architecture flags (default ``--max_level 2 --wave_kernel_size 16 --wavelet_names sym4 db6 --patch_size 32
  --embed_dim 64 --depth 3 --num_heads 4``; ``--arch`` replaces them), fine-tuning with ``--val_file val.h5
  --test_file test.h5`` (and ``--epochs E_ft`` only when given: by default finetune.py's own 30), pretraining
  with ``--epochs E_pt`` (30; pretrain.py's default 100 would not fit an hour on 2 CPU cores). No other
  training flag is passed: the benchmark measures the scripts' DEFAULT recipes. ``--pretrain_args`` /
  ``--finetune_args`` / ``--probe_args`` (shell-quoted strings) append
  flags to those runs for a recipe sweep; ``--tag`` names the run. The best model on validation loss (the
  scripts' default) is evaluated on ``test.h5``; its ``test_results.json`` gives accuracy, balanced accuracy
  and macro F1.
* ``--jobs N`` runs N subprocesses at a time (a seed's pretraining finishes before its probe and fine-tuning
  runs start); children get ``OMP_NUM_THREADS`` = max(1, cores // N) unless it is already set.

Output: ``benchmarks/results/ssl_myo.json`` (``--out``; with ``--quick`` in the system temp dir) with the
protocol (subjects, windows per split, class counts), the exact command, log tail and metrics of every run,
mean ± sd (ddof 1) per method x fraction, wall time per stage, and the machine; a Markdown table on stdout and
in a ``.md`` beside the JSON. One progress line per finished run.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import describe  # noqa: E402  (imports torch only when called)
from physiowave.fileio import atomic_write_text, write_json  # noqa: E402  (no torch import)

__all__ = ["DEFAULT_PRETRAIN_SUBJECTS", "DEFAULT_EVAL_SUBJECTS", "read_recording", "sliding_windows", "build_files",
           "hudgins_features", "lda_run", "Job", "plan_jobs", "run_jobs", "summarize", "markdown", "main"]

DATA_DIR = ROOT.parent / "shared" / "data" / "myo_armband_pretraining"
DEFAULT_PRETRAIN_SUBJECTS = [f"Female{i}" for i in range(5)] + [f"Male{i}" for i in range(7)]
DEFAULT_EVAL_SUBJECTS = [f"Female{i}" for i in range(5, 10)] + [f"Male{i}" for i in range(7, 12)]
GESTURES = ["neutral", "radial deviation", "wrist flexion", "ulnar deviation", "wrist extension", "hand close",
            "hand open"]
CHANNELS, FILES, FS = 8, 28, 200.0
WINDOW, PRETRAIN_STEP, EVAL_STEP = 256, 64, 128
SPLIT_OF_CYCLE = {0: "train", 1: "train", 2: "val", 3: "test"}
FRACTIONS = (1.0, 0.25)
METHODS = {"lda": "features + LDA", "scratch": "from scratch", "probe": "pretrained + linear probe",
           "finetune": "pretrained + fine-tuning"}
DEFAULT_ARCH = ("--max_level 2 --wave_kernel_size 16 --wavelet_names sym4 db6 --patch_size 32 --embed_dim 64 "
                "--depth 3 --num_heads 4")
METRICS = ("acc", "balanced_acc", "macro_f1")
ZC_SSC_THRESHOLD = 0.01  # x the window's per-channel std
CHECKPOINT = "<pretraining checkpoint>"  # placeholder in a planned command


# --------------------------------------------------------------------------------------------------- data
def natural_key(name: str) -> tuple:
    """Sort key that orders Male2 before Male10."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def read_recording(path: Path) -> np.ndarray:
    """One ``.dat`` file → float32 ``[8, T]``, the stored values."""
    return np.fromfile(path, "<i2").reshape(-1, CHANNELS).T.astype(np.float32)


def sliding_windows(x: np.ndarray, step: int, length: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """``[C, T]`` → (windows ``[n, C, length]``, start samples ``[n]``); n = 0 when T < length."""
    starts = np.arange(0, x.shape[1] - length + 1, step)
    if not len(starts):
        return np.empty((0, x.shape[0], length), np.float32), starts
    return np.stack([x[:, s:s + length] for s in starts]), starts


def write_h5(path: Path, data: np.ndarray, record_ids: list[str], starts: np.ndarray,
             labels: np.ndarray | None = None) -> None:
    """An HDF5 file as physiowave.preprocess writes it: ``data`` float32, ``label`` int64, ``record_id`` (variable
    strings), ``start``; gesture names in the ``class_names`` attribute."""
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=data.astype(np.float32))
        f.create_dataset("record_id", data=np.asarray(record_ids, dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("start", data=starts.astype(np.int64))
        if labels is not None:
            f.create_dataset("label", data=labels.astype(np.int64))
            f.attrs["class_names"] = GESTURES
        f.attrs["fs"] = FS


def build_files(data_dir: Path, pretrain_subjects: list[str], eval_subjects: list[str], work: Path) -> dict[str, Any]:
    """Write ``pretrain.h5``, ``train.h5``, ``val.h5``, ``test.h5`` into ``work`` → windows and class counts per
    split."""
    parts: dict[str, dict[str, list]] = {s: {"data": [], "ids": [], "starts": [], "labels": []}
                                         for s in ("pretrain", "train", "val", "test")}
    jobs = [(subject, "pretrain", PRETRAIN_STEP) for subject in pretrain_subjects]
    jobs += [(subject, None, EVAL_STEP) for subject in eval_subjects]
    short = []
    for subject, split, step in jobs:
        for i in range(FILES):
            w, starts = sliding_windows(read_recording(data_dir / subject / "training0" / f"classe_{i}.dat"), step)
            if not len(w):
                short.append(f"{subject}/{i}")
                continue
            part = parts[split or SPLIT_OF_CYCLE[i // 7]]
            part["data"].append(w)
            part["ids"] += [f"{subject}/{i}"] * len(w)
            part["starts"].append(starts)
            part["labels"].append(np.full(len(w), i % 7))
    counts: dict[str, Any] = {}
    for split, part in parts.items():
        labels = np.concatenate(part["labels"]) if split != "pretrain" else None
        write_h5(work / f"{split}.h5", np.concatenate(part["data"]), part["ids"], np.concatenate(part["starts"]),
                 labels)
        counts[split] = {"windows": int(sum(len(d) for d in part["data"])), "recordings": len(set(part["ids"]))}
        if labels is not None:
            counts[split]["class_counts"] = np.bincount(labels, minlength=len(GESTURES)).tolist()
    counts["recordings_shorter_than_a_window"] = short
    return counts


# --------------------------------------------------------------------------------------------------- classical baseline
def hudgins_features(x: np.ndarray, threshold: float = ZC_SSC_THRESHOLD) -> np.ndarray:
    """``[N, C, T]`` → ``[N, 4C]``: per channel MAV, WL, ZC, SSC (Hudgins et al. 1993). ZC counts sign changes
    whose step |x[t] − x[t+1]| is at least ``threshold`` x the window's channel std; SSC counts slope sign
    changes with at least one neighbouring step that large."""
    thr = threshold * x.std(-1, keepdims=True)
    d = np.diff(x, axis=-1)
    mav = np.abs(x).mean(-1)
    wl = np.abs(d).sum(-1)
    zc = ((x[..., :-1] * x[..., 1:] < 0) & (np.abs(d) >= thr)).sum(-1)
    big = (np.abs(d[..., :-1]) >= thr) | (np.abs(d[..., 1:]) >= thr)
    ssc = ((d[..., :-1] * d[..., 1:] < 0) & big).sum(-1)
    return np.concatenate([mav, wl, zc, ssc], axis=1).astype(np.float64)


def _read_split(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import h5py

    with h5py.File(path, "r") as f:
        return f["data"][:], f["label"][:]


def lda_run(work: Path, fraction: float, seed: int) -> dict[str, Any]:
    """Features + LDA on the training windows finetune.py keeps at ``--label_fraction fraction --seed seed``
    (same record ids, same selection function), tested on test.h5 → metrics and the subset's size."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    from physiowave.data.fractions import label_fraction_indices
    from physiowave.engine.data import _record_ids  # the reader finetune.py groups records with

    t0 = time.perf_counter()
    x, y = _read_split(work / "train.h5")
    groups = _record_ids([str(work / "train.h5")])
    keep = label_fraction_indices(y, fraction, seed, groups)
    x_test, y_test = _read_split(work / "test.h5")
    lda = LinearDiscriminantAnalysis().fit(hudgins_features(x[keep]), y[keep])
    pred = lda.predict(hudgins_features(x_test))
    return {"acc": float(accuracy_score(y_test, pred)), "balanced_acc": float(balanced_accuracy_score(y_test, pred)),
            "macro_f1": float(f1_score(y_test, pred, average="macro", zero_division=0)),
            "train_samples": int(len(keep)), "train_records": int(len(np.unique(groups[keep]))),
            "class_counts": np.bincount(y[keep], minlength=len(GESTURES)).tolist(), "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------------------------------- script runs
@dataclass
class Job:
    """One subprocess: a pretraining (``method`` "pretrain", ``fraction`` None) or a fine-tuning run."""

    name: str
    method: str
    seed: int
    fraction: float | None
    cmd: list[str]
    out_dir: Path
    after: str | None = None      # name of the pretraining job this run loads
    result: dict[str, Any] = field(default_factory=dict)


def _checkpoint(pretrain_dir: Path) -> Path:
    """The pretraining checkpoint a fine-tuning run loads: best_model.pth, else latest_checkpoint.pth."""
    best = pretrain_dir / "best_model.pth"
    return best if best.is_file() else pretrain_dir / "latest_checkpoint.pth"


def plan_jobs(cfg: argparse.Namespace, work: Path) -> list[Job]:
    """Every script run, pretraining first (it gates the probe and fine-tuning runs of its seed)."""
    arch = shlex.split(cfg.arch)
    common = ["--device", cfg.device, "--num_workers", "0"]
    runs = work / "runs"
    jobs = [Job(f"pretrain_s{s}", "pretrain", s, None,
                [sys.executable, str(ROOT / "pretrain.py"), "--train_files", str(work / "pretrain.h5"),
                 "--epochs", str(cfg.pretrain_epochs), "--seed", str(s), *common, *arch,
                 "--output_dir", str(runs / f"pretrain_s{s}"), *shlex.split(cfg.pretrain_args)],
                runs / f"pretrain_s{s}") for s in cfg.seeds]
    for method in ("scratch", "probe", "finetune"):
        for s in cfg.seeds:
            for fraction in FRACTIONS:
                name = f"{method}_f{fraction:g}_s{s}"
                cmd = [sys.executable, str(ROOT / "finetune.py"), "--train_file", str(work / "train.h5"), "--val_file",
                       str(work / "val.h5"), "--test_file", str(work / "test.h5"), "--label_fraction", f"{fraction:g}",
                       *(["--epochs", str(cfg.finetune_epochs)] if cfg.finetune_epochs else []), "--seed", str(s),
                       *common, *arch, "--output_dir", str(runs / name)]
                after = None
                if method != "scratch":
                    after = f"pretrain_s{s}"
                    cmd += ["--pretrained_path", CHECKPOINT]  # resolved once the pretraining has run
                    cmd += ["--freeze_encoder", *shlex.split(cfg.probe_args)] if method == "probe" \
                        else shlex.split(cfg.finetune_args)
                else:
                    cmd += shlex.split(cfg.finetune_args)
                jobs.append(Job(name, method, s, fraction, cmd, runs / name, after))
    return jobs


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _outcome(job: Job) -> dict[str, Any]:
    """Metrics a finished run left in its output dir."""
    history = _read_json(job.out_dir / "training_history.json")
    if job.method == "pretrain":
        ckpt = _checkpoint(job.out_dir)
        bands = sorted(k for k in history if k.startswith("train_band_rms_"))  # the front-end's scale: a collapse shows
        return {"train_loss_first": history["train_loss"][0], "train_loss_last": history["train_loss"][-1],
                "band_rms_first": [history[k][0] for k in bands], "band_rms_last": [history[k][-1] for k in bands],
                "checkpoint": ckpt.name, "epoch_time_s": history["epoch_time"]}
    test = _read_json(job.out_dir / "test_results.json")
    data = _read_json(job.out_dir / "args.json")["data"]
    out = {k: test[k] for k in METRICS if k in test}
    out.update(train_samples=data["train_samples"], class_counts=data["class_counts"],
               label_fraction=data.get("label_fraction"),
               val_loss_last=(history.get("val_loss") or [None])[-1], epoch_time_s=history["epoch_time"])
    return out


def execute(job: Job, env: dict[str, str]) -> dict[str, Any]:
    """Run ``job`` (its output in ``out_dir/run.log``) → command, seconds, exit status, metrics or the log's tail."""
    job.out_dir.mkdir(parents=True, exist_ok=True)
    log = job.out_dir / "run.log"
    t0 = time.perf_counter()
    with log.open("w") as f:
        rc = subprocess.run(job.cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    result: dict[str, Any] = {"name": job.name, "method": job.method, "seed": job.seed, "fraction": job.fraction,
                              "command": shlex.join(job.cmd[1:]), "seconds": time.perf_counter() - t0, "returncode": rc}
    if rc == 0:
        try:
            result.update(_outcome(job))
        except (OSError, KeyError, ValueError) as err:
            result.update(returncode=-1, error=f"outputs unreadable: {err}")
    if result["returncode"] != 0:
        lines = log.read_text(errors="replace").replace("\r", "\n").splitlines()
        result["log_tail"] = [ln for ln in lines if ln.strip()][-15:]
    return result


def run_jobs(jobs: list[Job], n: int, env: dict[str, str], on_done: Callable[[Job], None]) -> None:
    """Run ``jobs`` ``n`` at a time, each after the job it depends on; a failed dependency skips its dependents."""
    pending, finished = list(jobs), {}
    running: dict[Future, Job] = {}
    with ThreadPoolExecutor(max_workers=n) as pool:
        while pending or running:
            for job in list(pending):
                if len(running) >= n:
                    break
                if job.after is not None and job.after not in finished:
                    continue
                pending.remove(job)
                if job.after is not None and finished[job.after].result.get("returncode") != 0:
                    job.result = {"name": job.name, "method": job.method, "seed": job.seed, "fraction": job.fraction,
                                  "command": shlex.join(job.cmd[1:]), "returncode": None,
                                  "error": f"skipped: {job.after} failed"}
                    finished[job.name] = job
                    on_done(job)
                    continue
                if job.after is not None:
                    ckpt = str(_checkpoint(finished[job.after].out_dir))
                    job.cmd = [ckpt if c == CHECKPOINT else c for c in job.cmd]
                running[pool.submit(execute, job, env)] = job
            if not running:
                if pending:
                    raise RuntimeError(f"unmet dependencies: {[j.name for j in pending]}")
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                job = running.pop(fut)
                job.result = fut.result()
                finished[job.name] = job
                on_done(job)


# --------------------------------------------------------------------------------------------------- summary
def summarize(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{method: {fraction: {metric: {mean, sd, n, values}}}}`` over the seeds that finished (sd ddof 1)."""
    out: dict[str, dict[str, Any]] = {}
    for method in METHODS:
        out[method] = {}
        for fraction in FRACTIONS:
            rows = [r for r in results
                    if r["method"] == method and r["fraction"] == fraction and r.get("returncode") == 0]
            cell = {}
            for metric in METRICS:
                values = [r[metric] for r in rows if r.get(metric) is not None]
                cell[metric] = {"mean": statistics.fmean(values) if values else None,
                                "sd": statistics.stdev(values) if len(values) > 1 else None,
                                "n": len(values), "values": values}
            out[method][f"{fraction:g}"] = cell
    return out


def _cell(stats: dict[str, Any]) -> str:
    if stats["mean"] is None:
        return "failed"
    sd = f"{100 * stats['sd']:.1f}" if stats["sd"] is not None else "n/a"
    return f"{100 * stats['mean']:.1f} ± {sd}"


def markdown(summary: dict[str, Any], seeds: list[int], tag: str) -> str:
    """Test accuracy and macro F1 (%) per method x label fraction, mean ± sd over seeds."""
    lines = []
    for metric, title in (("acc", "test accuracy"), ("macro_f1", "test macro F1")):
        lines += [f"{title} (%), mean ± sd over seeds {', '.join(map(str, seeds))}" + (f" ({tag})" if tag else ""), "",
                  "| method | " + " | ".join(f"{100 * f:g} % labels" for f in FRACTIONS) + " |",
                  "|---|" + "---|" * len(FRACTIONS)]
        for method, label in METHODS.items():
            lines.append(f"| {label} | "
                         + " | ".join(_cell(summary[method][f"{f:g}"][metric]) for f in FRACTIONS) + " |")
        lines.append("")
    return "\n".join(lines)


def _machine(threads: str, device: str) -> dict[str, Any]:
    def git(*a: str) -> str | None:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    return {**describe(device), "omp_num_threads_children": threads, "load_average": os.getloadavg(),
            "git_commit": git("rev-parse", "HEAD"),
            "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


# --------------------------------------------------------------------------------------------------- main
def _subjects(data_dir: Path, wanted: list[str], flag: str) -> list[str]:
    available = {p.name for p in data_dir.iterdir() if (p / "training0").is_dir()}
    missing = [s for s in wanted if s not in available]
    if missing:
        sys.exit(f"{flag}: no such subject in {data_dir}: {', '.join(missing)}")
    return sorted(wanted, key=natural_key)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA_DIR, help="the Myo pretraining data set folder")
    p.add_argument("--pretrain_subjects", nargs="+", default=DEFAULT_PRETRAIN_SUBJECTS)
    p.add_argument("--eval_subjects", nargs="+", default=DEFAULT_EVAL_SUBJECTS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--pretrain_epochs", "--E_pt", type=int, default=30, help="pretraining epochs E_pt")
    p.add_argument("--finetune_epochs", "--E_ft", type=int, default=None,
                   help="fine-tuning and probing epochs E_ft (default: not passed, finetune.py's default 30)")
    p.add_argument("--arch", default=DEFAULT_ARCH, help="architecture flags of every run (one shell-quoted string)")
    p.add_argument("--pretrain_args", default="",
                   help="extra flags for pretrain.py, one string (write --pretrain_args=\"--flag\" for a single flag)")
    p.add_argument("--finetune_args", default="", help="extra flags for the scratch and fine-tuning runs")
    p.add_argument("--probe_args", default="", help="extra flags for the linear-probe runs")
    p.add_argument("--tag", default="", help="name of this run (recorded in the outputs)")
    p.add_argument("--device", default="cpu", help="--device of every script run")
    p.add_argument("--jobs", type=int, default=1, help="subprocesses at a time")
    p.add_argument("--work_dir", type=Path, default=None,
                   help="where the HDF5 files and run outputs go (kept); default: a temp dir, removed unless --keep")
    p.add_argument("--keep", action="store_true", help="keep the temporary work dir")
    p.add_argument("--out", type=Path, default=None,
                   help="result JSON (default benchmarks/results/ssl_myo.json; with --quick, in the system temp dir)")
    p.add_argument("--quick", action="store_true", help="1 epoch, 2 + 2 subjects, 1 seed: proves the script works")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs must be ≥ 1, got {args.jobs}")
    if args.quick:
        args.pretrain_subjects, args.eval_subjects = args.pretrain_subjects[:2], args.eval_subjects[:2]
        args.seeds, args.pretrain_epochs, args.finetune_epochs = args.seeds[:1], 1, 1
    if args.out is None:
        args.out = (Path(tempfile.gettempdir()) / "bench_ssl_quick.json" if args.quick
                    else ROOT / "benchmarks" / "results" / "ssl_myo.json")
    return args


def _progress(job: Job) -> None:
    r = job.result
    what = f"{job.method:9s} {'' if job.fraction is None else f'{100 * job.fraction:g} %':>6s} seed {job.seed}"
    if r.get("returncode") != 0:
        print(f"{what}  FAILED ({r.get('error') or 'exit ' + str(r['returncode'])}), {r.get('seconds', 0):.0f} s"
              + "".join(f"\n    {ln}" for ln in r.get("log_tail", [])[-5:]), flush=True)
    elif job.method == "pretrain":
        print(f"{what}  loss {r['train_loss_first']:.4f} → {r['train_loss_last']:.4f}  {r['seconds']:.0f} s",
              flush=True)
    else:
        print(f"{what}  acc {r['acc']:.4f}  ({r['train_samples']} windows)  {r['seconds']:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    if not cfg.data.is_dir():
        sys.exit(f"bench_ssl: data folder {cfg.data} not found (the Myo armband pretraining set, see the docstring)")
    pretrain_subjects = _subjects(cfg.data, cfg.pretrain_subjects, "--pretrain_subjects")
    eval_subjects = _subjects(cfg.data, cfg.eval_subjects, "--eval_subjects")
    if overlap := sorted(set(pretrain_subjects) & set(eval_subjects), key=natural_key):
        print(f"warning: subjects both pretrained on and evaluated: {', '.join(overlap)}", flush=True)
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, len(os.sched_getaffinity(0)) // cfg.jobs))
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.2f}: other jobs skew the times" + (
            "" if threads == "1" else f"; {threads} OpenMP threads per run on a busy machine can run many times slower "
            "(OMP_NUM_THREADS=1 avoids that)"), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    t_start = time.perf_counter()
    work = cfg.work_dir or Path(tempfile.mkdtemp(prefix="bench_ssl_"))
    work.mkdir(parents=True, exist_ok=True)
    stages: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        counts = build_files(cfg.data, pretrain_subjects, eval_subjects, work)
        stages["data"] = time.perf_counter() - t0
        sizes = ", ".join(f"{k} {v['windows']} windows" for k, v in counts.items() if isinstance(v, dict))
        print(f"data: {sizes} ({stages['data']:.1f} s) in {work}", flush=True)

        results: list[dict[str, Any]] = []
        t0 = time.perf_counter()
        for seed in cfg.seeds:
            for fraction in FRACTIONS:
                r = {"name": f"lda_f{fraction:g}_s{seed}", "method": "lda", "seed": seed, "fraction": fraction,
                     "returncode": 0, **lda_run(work, fraction, seed)}
                results.append(r)
                print(f"{'lda':9s} {f'{100 * fraction:g} %':>6s} seed {seed}  acc {r['acc']:.4f}  "
                      f"({r['train_samples']} windows)  {r['seconds']:.1f} s", flush=True)
        stages["lda"] = time.perf_counter() - t0

        jobs = plan_jobs(cfg, work)
        t0 = time.perf_counter()
        run_jobs(jobs, cfg.jobs, env, _progress)
        stages["script_runs"] = time.perf_counter() - t0
        results += [j.result for j in jobs]
    finally:
        if cfg.work_dir is None and not cfg.keep:
            shutil.rmtree(work, ignore_errors=True)
    for method in ("pretrain", "scratch", "probe", "finetune"):  # summed run times (overlap when --jobs > 1)
        stages[f"{method}_runs_summed"] = sum(r.get("seconds", 0.0) for r in results if r["method"] == method)
    stages["total"] = time.perf_counter() - t_start

    lda_subsets = {(r["seed"], r["fraction"]): (r["train_samples"], r["class_counts"]) for r in results
                   if r["method"] == "lda"}
    mismatched = [r["name"] for r in results if r["method"] in ("scratch", "probe",
                                                                "finetune") and r.get("returncode") == 0
                  and (r["train_samples"], r["class_counts"]) != lda_subsets[(r["seed"], r["fraction"])]]
    summary = summarize(results)
    record = {
        "tag": cfg.tag, "mode": "quick" if cfg.quick else "full",
        "protocol": {"data": str(cfg.data), "pretrain_subjects": pretrain_subjects, "eval_subjects": eval_subjects,
                     "window": WINDOW, "pretrain_step": PRETRAIN_STEP, "eval_step": EVAL_STEP,
                     "split_of_cycle": SPLIT_OF_CYCLE, "gestures": GESTURES, "fractions": list(FRACTIONS),
                     "seeds": cfg.seeds, "pretrain_epochs": cfg.pretrain_epochs, "finetune_epochs": cfg.finetune_epochs,
                     "arch": cfg.arch, "pretrain_args": cfg.pretrain_args, "finetune_args": cfg.finetune_args,
                     "probe_args": cfg.probe_args, "device": cfg.device, "jobs": cfg.jobs,
                     "zc_ssc_threshold_x_std": ZC_SSC_THRESHOLD, "splits": counts},
        "summary": summary, "runs": results, "subset_mismatch_vs_lda": mismatched,
        "wall_s": stages, "load_average_before": load, "machine": _machine(threads, cfg.device),
    }
    table = markdown(summary, cfg.seeds, cfg.tag)
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(cfg.out, record)  # temporary name, then rename
    atomic_write_text(cfg.out.with_suffix(".md"), table)
    failed = [r["name"] for r in results if r.get("returncode") != 0]
    print(f"\n{table}\ntotal {stages['total']:.0f} s; written to {cfg.out} and {cfg.out.with_suffix('.md')}"
          + (" (quick mode: too little training for the numbers to mean anything)" if cfg.quick else ""))
    if mismatched:
        print(f"warning: training windows differ from the LDA subset in {', '.join(mismatched)}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed or mismatched else 0


if __name__ == "__main__":
    sys.exit(main())
