"""The grid of a benchmark and its runs: cells (a method at a label fraction with a seed), their state on disk,
their commands (the training scripts as subprocesses), and running them a few at a time, resumably."""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contract import run_files
from ..fileio import FolderBusyError, folder_lock, write_json

__all__ = ["MODES", "Cell", "plan", "cell_state", "command", "script_of", "run_cells", "input_fingerprint",
           "check_inputs", "flags_of", "sha256_of", "command_change", "check_command", "wall_seconds", "floats", "ints",
           "percent", "progress", "child_env"]

ROOT = Path(__file__).resolve().parents[2]
MODES = {"scratch": "from scratch", "probe": "pretrained + linear probe", "finetune": "pretrained + fine-tuning",
         "resnet": "supervised 1-D ResNet (baseline)"}
# The baseline of the "resnet" mode: a script of the checkout (benchmarks/), not part of the package.
RESNET_SCRIPT = ROOT / "benchmarks" / "ptbxl_resnet1d.py"
RESULTS_FILE, RECORDS_FILE, LOG_FILE = "test_results.json", "test_records.npz", "run.log"
INPUTS_FILE = "inputs.json"  # the fingerprint of a cell's input files, taken when it first starts
COMMAND_FILE = "command.json"  # a cell's flags when it first started
_HEADER = "[physiowave.benchmark "  # the line the runner writes into run.log before each attempt
_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
WALL_FILE = "wall.json"  # the runner's record of a cell's seconds, summed over its attempts
# Flags the runner sets itself: given after ``--`` they would contradict the grid.
OWN_FLAGS = ("--train_file", "--val_file", "--test_file", "--label_fraction", "--seed", "--output_dir",
             "--pretrained_path", "--freeze_encoder", "--resume", "--overwrite", "--eval")
_SCRIPTS = {"single": ("finetune.py", "finetune"), "multi": ("finetune_multilabel.py", "multilabel")}


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
    if results.is_file() or run_files(folder) or any(folder.glob("*.pth")):
        return "partial"
    return "new"


def script_of(label_kind: str, python: str) -> list[str]:
    """The script of a task: the checkout's ``finetune*.py``, else the engine entry point it calls."""
    file, task = _SCRIPTS[label_kind]
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
                             else script_of(cfg.label_kind, cfg.python))
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


def wall_seconds(folder: Path) -> float:
    """The seconds the runner has spent on a cell so far, over all its attempts (0 when none is recorded)."""
    try:
        return float(json.loads((folder / WALL_FILE).read_text())["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def sha256_of(path: Path) -> str:
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
            entry = {"sha256": sha256_of(path)}  # a checkpoint is compared by content: a copy is the same one
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


def flags_of(cmd: Sequence[str]) -> dict[str, list[str]]:
    """``--flag value ...`` pairs of a command from its first flag on (the interpreter and script are where the
    checkout is, not what the cell runs), without the ones that name the attempt (``--resume``) or the folder."""
    start = next((i for i, t in enumerate(cmd) if t.startswith("--")), len(cmd))
    flags: dict[str, list[str]] = {}
    key = None
    for token in cmd[start:]:
        if token.startswith("--"):
            key = token
            flags[key] = []
        elif key is not None:
            flags[key].append(token)
    return {k: v for k, v in flags.items() if k not in ("--resume", "--output_dir")}


def _recorded_flags(folder: Path) -> dict[str, list[str]] | None:
    """The flags a cell first started with: ``command.json``, else the first command line in its ``run.log``."""
    try:
        return json.loads((folder / COMMAND_FILE).read_text())["flags"]
    except (OSError, ValueError, KeyError):
        pass
    try:
        lines = (folder / LOG_FILE).read_text(errors="replace").splitlines()
    except OSError:
        return None
    first = next((ln for ln in lines if ln.startswith(_HEADER) and "] " in ln), None)
    return None if first is None else flags_of(shlex.split(first.split("] ", 1)[1]))


def command_change(cell: Cell, cmd: Sequence[str]) -> str | None:
    """How the flags a cell first started with differ from ``cmd``'s (``--epochs 3 -> 10; ...``), or None when they
    agree or nothing was recorded (a cell never started, or started before the runner recorded commands)."""
    before, now = _recorded_flags(cell.folder), flags_of(cmd)
    if before is None or before == now:
        return None

    def shown(flags: dict[str, list[str]], key: str) -> str:
        return (" ".join(flags[key]) or "(set)") if key in flags else "(absent)"

    return "; ".join(f"{k} {shown(before, k)} -> {shown(now, k)}"
                     for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k))


def check_command(cell: Cell, cmd: Sequence[str]) -> None:
    """SystemExit (one line naming the cell and the flags) when a cell that has started before ran other flags
    than the grid now gives it (another number of epochs, network, batch...): its results would not be what the
    table says."""
    if change := command_change(cell, cmd):
        raise SystemExit(f"error: {cell.folder}: it ran with other flags than the grid now gives it ({change}); "
                         "move its folder away to run it again with these")


def _ready(cell: Cell) -> bool:
    """Whether the cell it starts from (``after``) has finished."""
    return cell.after is None or cell_state(cell.after.folder, cell.after.done_file) == "done"


def run_cells(cells: list[Cell], cfg: argparse.Namespace, env: dict[str, str],
              on_done: Callable[[Cell], None] = lambda c: None, lock: Path | None = None) -> None:
    """:func:`_run_cells` while holding the lock of ``lock`` (default: the folder the cells share; give the output
    folder when calls may run different subsets of its cells): a second runner started on the same output is
    refused at once (SystemExit with one line)."""
    with contextlib.ExitStack() as stack:
        if cells:
            common = lock or Path(os.path.commonpath([str(c.folder.parent) for c in cells]))  # never a cell's own
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
            check_command(cell, cmd)
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
                if cell.result["state_before"] == "new" or not (cell.folder / COMMAND_FILE).is_file():
                    write_json(cell.folder / COMMAND_FILE, {"flags": flags_of(cmd)})
                log = (cell.folder / LOG_FILE).open("a")
                log.write(f"\n{_HEADER}{time.strftime('%Y-%m-%d %H:%M:%S')}] {shlex.join(cmd)}\n")
                log.flush()
                t0 = time.perf_counter()  # the cell's time includes starting its process
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                        preexec_fn=_die_with_parent(os.getpid()))
                running[proc] = (cell, t0, log)
            time.sleep(0.05)
            for proc in [p for p in running if p.poll() is not None]:
                cell, t0, log = running.pop(proc)
                log.close()
                rc = proc.returncode
                done = rc == 0 and (cell.folder / cell.done_file).is_file()
                seconds = time.perf_counter() - t0
                write_json(cell.folder / WALL_FILE, {"seconds": wall_seconds(cell.folder) + seconds})
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
            write_json(cell.folder / WALL_FILE, {"seconds": wall_seconds(cell.folder) + time.perf_counter() - t0})
        signal.signal(signal.SIGTERM, previous)


def floats(text: str) -> list[float]:
    return [float(t) for t in text.replace(",", " ").split()]


def ints(text: str) -> list[int]:
    return [int(t) for t in text.replace(",", " ").split()]


def percent(fraction: float) -> str:
    return f"{100 * fraction:g} %"


def progress(cell: Cell) -> None:
    r = cell.result
    what = f"{cell.mode:8s} {percent(cell.fraction):>7s} seed {cell.seed}"
    if r["status"] == "skipped":
        print(f"{what}  skipped: finished before", flush=True)
    elif r["status"] == "finished":
        resumed = " (resumed)" if r["state_before"] == "partial" else ""
        print(f"{what}  finished{resumed} in {r['seconds']:.0f} s", flush=True)
    else:
        print(f"{what}  FAILED (exit {r.get('returncode')}) after {r.get('seconds', 0):.0f} s; see "
              f"{cell.folder / LOG_FILE}" + "".join(f"\n    {ln}" for ln in r.get("log_tail", [])[-5:]), flush=True)


def child_env(jobs: int) -> dict[str, str]:
    """The environment of the runs: this checkout importable, and the cores divided among ``jobs`` runs at a time
    (``OMP_NUM_THREADS``, unless set): one thread per core, none spinning on another run's core."""
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, len(os.sched_getaffinity(0)) // jobs))
    return {**os.environ, "OMP_NUM_THREADS": threads,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
