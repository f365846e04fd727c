"""Training on CPU: can the data loader keep up, what does the script add, does memory grow with the data?

    python benchmarks/bench_train.py              # the real run, on an idle machine (~5 min on 2 cores)
    python benchmarks/bench_train.py --quick      # tiny sizes, < 1 min: only proves the script works

a. Loader vs step. Samples/s of the training input path alone (``H5Dataset`` with random crops, the engine's
   ``TrainSampler`` shuffle and ``Indexed`` wrapper, a DataLoader with batch 16 and 2 workers) over a synthetic
   ECG-shaped file (12×2048 float32, uncompressed, one sample per chunk, in the page cache), against samples/s
   of the pretraining step of (b) taken alone: the model ``pretrain.py`` built (its stored ``model_config``),
   ``pretrain_loss`` with the launcher's masking, backward, clip 1.0, fused AdamW; batch 8, fp32, flush denormals.
   Target: loader ≥ 10× the step.
b. End to end. The real ``pretrain.py`` (plain ``python``, one process, ``--device cpu --num_workers 2``, the
   ECG launcher's ``--model`` and masking flags, batch 8, no accumulation, fp32, 1 epoch, no validation):
   ``train_samples_per_sec`` from its training_history.json against the model-only step of (a), which runs
   after it on the configuration it stored. Overhead = 1 − script / model-only.
c. Memory vs data-set size. ``pretrain.py`` with a small model (embed 64, depth 2, 4 heads, patch 64, max_level 1,
   batch 16, 2 workers, 12×2048) for one epoch over a ~20 MB and a ~200 MB file (200 and 2000 samples).

Every measurement runs in a fresh process. Memory of a ``pretrain.py`` run is measured two ways: the sum of
RSS (and of PSS, which shares pages between the forked workers fairly) over its process tree, polled every
0.2 s from /proc, and ``ru_maxrss`` of RUSAGE_CHILDREN (the largest single process: parent or one worker).
Results: a Markdown table on stdout and ``benchmarks/results/train_cpu.json`` (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from machine import describe  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from procmem import run_polled  # noqa: E402

__all__ = ["Settings", "FULL", "QUICK", "write_ecg_file", "launcher_flags", "measure_loader", "measure_step",
           "measure_script", "main"]

CHANNELS = 12
LAUNCHER = ROOT / "ECG" / "pretrain_ecg.sh"
MASKING_FLAGS = ("mask_ratio", "masking_strategy", "importance_ratio")
POLL_S = 0.2


@dataclass(frozen=True)
class Settings:
    """Sizes of one benchmark run (the two instances below); recorded in the JSON."""

    length: int = 2048                       # stored and cropped length T of the synthetic ECG
    loader_samples: int = 2048               # (a) file size in samples
    loader_epochs: int = 2                   # (a) passes over it (the first batch of each pass is not timed)
    loader_batch: int = 16
    loader_workers: int = 2
    step_batch: int = 8                      # (a, b) batch of the training step
    step_warmup: int = 1
    step_steps: int = 3                      # (a) timed steps (median)
    model_overrides: dict[str, Any] = field(default_factory=dict)  # (a, b) on top of the ecg preset / launcher
    e2e_samples: int = 48                    # (b) one epoch of 6 steps
    rss_samples: tuple[int, int] = (200, 2000)  # (c) ~20 MB and ~200 MB at 12×2048 float32
    rss_batch: int = 16
    # (c) model: max_level 1 keeps the 2000-sample epoch near a minute (level 3 would take ~5 min on 2 cores)
    rss_model: dict[str, Any] = field(default_factory=lambda: dict(embed_dim=64, depth=2, num_heads=4, patch_size=64,
                                                                   max_level=1))


FULL = Settings()
QUICK = Settings(length=512, loader_samples=256, loader_epochs=2, step_warmup=1, step_steps=2,
                 model_overrides=dict(embed_dim=64, depth=1, num_heads=4), e2e_samples=16, rss_samples=(32, 128),
                 rss_model=dict(embed_dim=32, depth=1, num_heads=4, patch_size=64, max_level=1))


# --------------------------------------------------------------------------------------------------- inputs
def write_ecg_file(path: Path, n: int, length: int, seed: int = 0) -> int:
    """Synthetic ECG-shaped file: ``data`` [n, 12, length] float32, uncompressed, chunk = 1 sample → bytes."""
    import h5py
    import numpy as np

    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        dset = f.create_dataset("data", shape=(n, CHANNELS, length), dtype="float32", chunks=(1, CHANNELS, length))
        for start in range(0, n, 256):  # in blocks, so writing a large file needs little memory
            stop = min(n, start + 256)
            dset[start:stop] = rng.standard_normal((stop - start, CHANNELS, length), dtype=np.float32)
    return path.stat().st_size


def launcher_flags(names: tuple[str, ...]) -> list[str]:
    """The ECG pretraining launcher's values of ``names`` as argv (``--flag v ...``), read from its text."""
    text = LAUNCHER.read_text().replace("\\\n", " ")
    line = next(ln for ln in text.splitlines() if " pretrain.py " in ln and not ln.lstrip().startswith("#"))
    argv, keep = [], False
    for tok in shlex.split(line.split(" pretrain.py ", 1)[1]):
        if tok.startswith("--"):
            keep = tok[2:] in names
        if keep:
            argv.append(tok)
    found = {t[2:] for t in argv if t.startswith("--")}
    if found != set(names):
        raise ValueError(f"{LAUNCHER}: expected flags {sorted(set(names) - found)} on its pretrain.py line")
    return argv


def _argv(values: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for k, v in values.items():
        out += [f"--{k}", *(map(str, v) if isinstance(v, (list, tuple)) else [str(v)])]
    return out


# --------------------------------------------------------------------------------------------------- measurements
def measure_loader(path: str, length: int, batch: int, workers: int, epochs: int) -> dict[str, Any]:
    """Samples/s of the training input path alone (no model), timed from the second batch of each pass."""
    import torch
    from torch.utils.data import DataLoader

    from physiowave.data import H5Dataset
    from physiowave.engine.samplers import TrainSampler
    from physiowave.engine.data import Indexed

    ds = H5Dataset(path, labels="none", max_length=length, random_crop=True, seed=42)
    sampler = TrainSampler(len(ds), seed=42)
    loader = DataLoader(Indexed(ds), batch_size=batch, sampler=sampler, num_workers=workers)
    samples, seconds, first = 0, 0.0, []
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        for i, (_, x) in enumerate(loader):
            if i == 0:
                first.append(time.perf_counter() - t0)  # worker start-up and first reads
                t0 = time.perf_counter()
                continue
            assert x.shape[1:] == (CHANNELS, length) and x.dtype == torch.float32
            samples += x.shape[0]
        seconds += time.perf_counter() - t0
    return dict(samples_per_s=samples / seconds, timed_samples=samples, first_batch_s=first,
                peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def measure_step(length: int, batch: int, warmup: int, steps: int, run_args: dict[str, Any]) -> dict[str, Any]:
    """Samples/s of the step a ``pretrain.py`` run takes, from its stored ``args.json`` (median over ``steps``), fp32:
    its ``model_config``, and its masking through the engine's own :class:`PretrainTask`."""
    import argparse

    import torch

    from physiowave.engine.model_config import build_model
    from physiowave.engine.tasks import PretrainTask

    torch.manual_seed(0)
    torch.set_flush_denormal(True)  # as the engine does on CPU
    model = build_model(run_args["model_config"]).train()
    task = PretrainTask(argparse.Namespace(**run_args))
    step_loss = task.wrap(model)
    opt = torch.optim.AdamW(model.parameters(), lr=run_args["lr"], betas=task.betas,
                            weight_decay=run_args["weight_decay"], fused=True)
    x = torch.randn(batch, CHANNELS, length)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss, _ = step_loss(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return dict(samples_per_s=batch / median, median_step_s=median, step_s=times, threads=torch.get_num_threads(),
                parameters=sum(p.numel() for p in model.parameters()), config=model.config,
                peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def measure_script(argv: list[str], output_dir: str) -> dict[str, Any]:
    """Run ``python pretrain.py argv`` and poll its process tree's memory → throughput, memory, times."""
    cmd = [sys.executable, str(ROOT / "pretrain.py"), *argv, "--output_dir", output_dir]
    res = run_polled(cmd, POLL_S, cwd=ROOT)
    if res.returncode:
        raise RuntimeError(f"pretrain.py exited {res.returncode}: {shlex.join(cmd)}\n{res.output[-3000:]}")
    history = json.loads((Path(output_dir) / "training_history.json").read_text())
    return dict(train_samples_per_sec=history["train_samples_per_sec"][-1], epoch_time_s=history["epoch_time"][-1],
                wall_s=res.wall_s, tree_peak_rss_mb=res.peak_rss_mb, tree_peak_pss_mb=res.peak_pss_mb,
                max_processes=res.max_processes,
                max_single_process_rss_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                command=shlex.join(cmd[1:]))


WORKERS = {"loader": measure_loader, "step": measure_step, "script": measure_script}


def _fresh(kind: str, **spec: Any) -> dict[str, Any]:
    """Run one measurement in a fresh Python process (its own peak memory, no warm caches)."""
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps({"kind": kind, **spec})],
                          capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{kind} measurement failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------- the run
def run(s: Settings, work: Path, log: Any = print) -> dict[str, Any]:
    """All three parts with settings ``s``, temporary files in ``work`` → the results dict."""
    out: dict[str, Any] = {}
    # b. the real script first: the model-only step of (a) then runs on the configuration it stored
    model_flags = launcher_flags(("model",))  # the launcher names its preset: --model ecg
    masking = launcher_flags(MASKING_FLAGS)
    e2e_file = work / "e2e.h5"
    write_ecg_file(e2e_file, s.e2e_samples, s.length, seed=1)
    argv = ["--train_files", str(e2e_file), *model_flags, *masking, *_argv(s.model_overrides), "--device", "cpu",
            "--num_workers", "2", "--batch_size", str(s.step_batch), "--grad_accumulation_steps", "1", "--grad_clip",
            "1.0", "--max_length", str(s.length), "--epochs", "1", "--warmup_epochs", "0", "--save_freq", "0"]
    script = _fresh("script", argv=argv, output_dir=str(work / "e2e_out"))
    run_args = json.loads((work / "e2e_out" / "args.json").read_text())
    e2e_file.unlink()
    log(f"b. pretrain.py: {script['train_samples_per_sec']:.3f} samples/s, "
        f"tree peak RSS {script['tree_peak_rss_mb']:.0f} MB")

    # a. loader vs step
    loader_file = work / "loader.h5"
    size = write_ecg_file(loader_file, s.loader_samples, s.length)
    loader = _fresh("loader", path=str(loader_file), length=s.length, batch=s.loader_batch, workers=s.loader_workers,
                    epochs=s.loader_epochs)
    loader["file_mb"] = size / 2**20
    loader_file.unlink()
    log(f"a. loader: {loader['samples_per_s']:.1f} samples/s")
    step = _fresh("step", length=s.length, batch=s.step_batch, warmup=s.step_warmup, steps=s.step_steps,
                  run_args=run_args)
    log(f"a. step:   {step['samples_per_s']:.3f} samples/s ({step['median_step_s']:.2f} s per batch of {s.step_batch})")
    out["a_loader_vs_step"] = dict(loader=loader, step=step, ratio=loader["samples_per_s"] / step["samples_per_s"],
                                   target_ratio=10.0)
    out["b_end_to_end"] = dict(script=script, model_config=run_args["model_config"],
                               model_only_same_run=step["samples_per_s"],
                               overhead_vs_same_run=1 - script["train_samples_per_sec"] / step["samples_per_s"])

    # c. memory vs data-set size
    rows = []
    for n in s.rss_samples:
        path = work / f"rss_{n}.h5"
        size = write_ecg_file(path, n, s.length, seed=2)
        argv = ["--train_files", str(path), *_argv(s.rss_model), "--max_length", str(s.length), "--batch_size",
                str(s.rss_batch), "--num_workers", "2", "--device", "cpu", "--epochs", "1", "--save_freq", "0"]
        r = _fresh("script", argv=argv, output_dir=str(work / f"rss_{n}_out"))
        rows.append(dict(samples=n, file_mb=size / 2**20, **r))
        log(f"c. {n} samples ({size / 2**20:.0f} MB): tree peak RSS {r['tree_peak_rss_mb']:.0f} MB, "
            f"PSS {r['tree_peak_pss_mb']:.0f} MB, {r['wall_s']:.0f} s")
        path.unlink()
    small, big = rows
    out["c_rss_vs_data"] = dict(runs=rows, data_ratio=big["file_mb"] / small["file_mb"],
                                rss_ratio=big["tree_peak_rss_mb"] / small["tree_peak_rss_mb"],
                                pss_ratio=big["tree_peak_pss_mb"] / small["tree_peak_pss_mb"],
                                max_single_rss_ratio=(big["max_single_process_rss_mb"]
                                                      / small["max_single_process_rss_mb"]))
    return out


def markdown(r: dict[str, Any]) -> str:
    a, b, c = r["a_loader_vs_step"], r["b_end_to_end"], r["c_rss_vs_data"]
    lines = ["| measurement | value |", "|---|---|",
             f"| a. loader samples/s (batch {r['settings']['loader_batch']}, "
             f"{r['settings']['loader_workers']} workers) | {a['loader']['samples_per_s']:.1f} |",
             f"| a. training step samples/s (batch {r['settings']['step_batch']}, "
             f"fp32) | {a['step']['samples_per_s']:.3f} |",
             f"| a. loader ÷ step (target ≥ {a['target_ratio']:.0f}) | {a['ratio']:.0f}× |",
             f"| b. pretrain.py samples/s | {b['script']['train_samples_per_sec']:.3f} |",
             f"| b. overhead vs the same step alone | {b['overhead_vs_same_run']:.1%} |"]
    lines.append("| b. pretrain.py peak RSS, process tree / largest process (MB) | "
                 f"{b['script']['tree_peak_rss_mb']:.0f} / {b['script']['max_single_process_rss_mb']:.0f} |")
    for run_ in c["runs"]:
        lines.append(f"| c. {run_['file_mb']:.0f} MB file: peak RSS tree / PSS tree / largest process (MB), time | "
                     f"{run_['tree_peak_rss_mb']:.0f} / {run_['tree_peak_pss_mb']:.0f} / "
                     f"{run_['max_single_process_rss_mb']:.0f}, {run_['wall_s']:.0f} s |")
    lines.append(f"| c. data ×{c['data_ratio']:.0f} → RSS ×{c['rss_ratio']:.3f}, PSS ×{c['pss_ratio']:.3f} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (< 1 min): proves the script runs, the numbers mean nothing")
    parser.add_argument("--out", type=Path, default=None,
                        help="result file (default benchmarks/results/train_cpu.json; "
                             "with --quick, in the system temp)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the temporary HDF5 files go (default: system temp)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(WORKERS[spec.pop("kind")](**spec)))
        return 0
    machine = describe()  # imports torch here, as before: outside the timed run
    settings = QUICK if args.quick else FULL
    if args.out is None:
        args.out = (Path(tempfile.gettempdir()) / "bench_train_quick.json" if args.quick
                    else ROOT / "benchmarks" / "results" / "train_cpu.json")
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        print(f"warning: load average {load_before[0]:.2f}: other jobs skew these numbers (and 2 OpenMP threads on a "
              "busy 2-core machine can run many times slower)", flush=True)
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench_train_", dir=args.workdir))
    try:
        results = run(settings, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record = dict(
        machine=dict(machine, load_average_before=load_before, load_average_after=os.getloadavg(),
                     omp_num_threads=os.environ.get("OMP_NUM_THREADS")),
        mode="quick" if args.quick else "full", settings=asdict(settings),
        memory_method=("tree_*: sum over pretrain.py and its DataLoader workers, polled from /proc/<pid>/smaps_rollup "
                       f"every {POLL_S} s; max_single_process_rss_mb: getrusage(RUSAGE_CHILDREN).ru_maxrss of a fresh "
                       "process whose only child is that run"),
        notes=["b: train_samples_per_sec covers the whole epoch, first step and DataLoader start-up included; the "
               "model-only step is a median after warm-up",
               "c: RSS sums count pages shared by the forked workers once per process; PSS sums do not"],
        wall_s=time.perf_counter() - t0, **results)
    record["settings"]["launcher"] = str(LAUNCHER.relative_to(ROOT))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(args.out)
    note = " (quick mode: sizes too small to mean anything)" if args.quick else ""
    print(f"\n{markdown(record)}\n\nwritten to {args.out}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
