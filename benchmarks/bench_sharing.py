"""Two trainings on the same cores: does each keep about half its speed, or does it collapse?

    python benchmarks/bench_sharing.py            # the real run, on an otherwise idle machine (~8 min on 2 cores)
    python benchmarks/bench_sharing.py --quick    # tiny sizes, < 2 min: only proves the script works

A small fine-tuning (PhysioWave with embed 64, depth 3, 4 heads, patch 32, on 8 × 256 synthetic windows: the size of
the CPU recipes), run through ``finetune.py`` for one epoch, is timed alone and beside a second identical run
started at the same moment, under each thread setting:

- ``default``: what a user gets without setting anything: torch's intra-op threads = the cores, and the engine's
  choice of OpenMP waiting (:mod:`physiowave.threads`: idle threads sleep when other processes were busy at start,
  else GNU OpenMP's own default);
- ``spin``: ``GOMP_SPINCOUNT=300000``, GNU OpenMP's default spinning (an idle thread spins 3·10⁵ times before it
  sleeps), which was the default before :mod:`physiowave.threads`;
- ``passive``: ``OMP_WAIT_POLICY=PASSIVE`` (idle OpenMP threads sleep at once instead of spinning);
- ``spin_10k``: ``GOMP_SPINCOUNT=10000`` (spin 10⁴ times, then sleep);
- ``one_thread``: ``OMP_NUM_THREADS=1`` for each run.

Speed is the run's own ``train_samples_per_sec`` (training_history.json: the epoch's training steps, without
start-up and evaluation). Slowdown = alone / beside; a fair share of 2 cores between 2 runs is 2×. Rounds are
interleaved (alone and beside of every setting in each round), and the median over rounds is reported.
Results: a table on stdout and ``benchmarks/results/sharing_cpu.json`` (``--out``), with the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from machine import describe  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

SETTINGS = {"default": {}, "spin": {"GOMP_SPINCOUNT": "300000"}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
            "spin_10k": {"GOMP_SPINCOUNT": "10000"}, "one_thread": {"OMP_NUM_THREADS": "1"}}
MODEL = ["--patch_size", "32", "--embed_dim", "64", "--depth", "3", "--num_heads", "4", "--max_level", "3"]


def write_data(path: Path, n: int, seed: int) -> str:
    """``n`` windows of 8 × 256 (noise with a class-dependent sine), 4 classes, one window per chunk."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    t = np.arange(256) / 256
    x = rng.standard_normal((n, 8, 256)).astype(np.float32) + np.sin(2 * np.pi * (y[:, None, None] + 2) * t)
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=x.astype(np.float32), chunks=(1, 8, 256))
        f["label"] = y
    return str(path)


def command(train: str, val: str, out: Path, batch: int) -> list[str]:
    return [sys.executable, str(ROOT / "finetune.py"), "--train_file", train, "--val_file", val, "--epochs", "1",
            "--batch_size", str(batch), "--num_workers", "0", "--device", "cpu", "--output_dir", str(out),
            "--overwrite", "--no-check_data", *MODEL]


def env_of(setting: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS")}
    return {**env, **SETTINGS[setting], "PYTHONPATH": str(ROOT)}


def speed(out: Path) -> float:
    history = json.loads((out / "training_history.json").read_text())
    return float(history["train_samples_per_sec"][-1])


def run_together(cmds: list[list[str]], env: dict[str, str]) -> tuple[list[float], int]:
    """Start every command at once, wait for all → (each one's wall seconds, how many chose sleeping threads
    themselves: physiowave.threads' log line); a failure raises with its output."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c in cmds]
    walls, chose = [], 0
    for p in procs:
        output, _ = p.communicate()
        if p.returncode:
            raise RuntimeError(f"{' '.join(p.args)} failed:\n{output[-3000:]}")
        walls.append(time.perf_counter() - t0)
        chose += "OMP_WAIT_POLICY=PASSIVE;" in output
    return walls, chose


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes: proves the script works, measures nothing")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 2; 1 with --quick)")
    p.add_argument("--windows", type=int, default=None, help="training windows (default 1536; 256 with --quick)")
    p.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of {', '.join(SETTINGS)}")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sharing_cpu.json")
    args = p.parse_args(argv)
    chosen = [s for s in args.settings.split(",") if s]
    if unknown := [s for s in chosen if s not in SETTINGS]:
        p.error(f"--settings: unknown {', '.join(unknown)}")
    n, rounds, batch = (args.windows or 256, args.rounds or 1, 32) if args.quick else (args.windows or 1536,
                                                                                         args.rounds or 2, 32)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train, val = write_data(tmp / "train.h5", n, 0), write_data(tmp / "val.h5", 64, 1)
        runs: dict[str, dict[str, list[float]]] = {s: {"alone": [], "beside": [], "alone_wall": [],
                                                       "beside_wall": [], "chose_passive": []} for s in chosen}
        for r in range(rounds):
            for setting in chosen:
                env = env_of(setting)
                out = tmp / f"{setting}_alone"
                walls, chose = run_together([command(train, val, out, batch)], env)
                runs[setting]["alone_wall"] += walls
                runs[setting]["alone"].append(speed(out))
                outs = [tmp / f"{setting}_beside_{i}" for i in range(2)]
                walls, chose_beside = run_together([command(train, val, o, batch) for o in outs], env)
                runs[setting]["beside_wall"] += walls
                runs[setting]["beside"] += [speed(o) for o in outs]
                runs[setting]["chose_passive"].append(f"alone {chose}/1, beside {chose_beside}/2")
                print(f"round {r + 1}/{rounds} {setting:10s} alone {runs[setting]['alone'][-1]:7.1f} windows/s, "
                      f"beside another {statistics.fmean(runs[setting]['beside'][-2:]):7.1f}", flush=True)
    table = {}
    for setting, v in runs.items():
        alone, beside = statistics.median(v["alone"]), statistics.median(v["beside"])
        table[setting] = {"alone_windows_per_s": alone, "beside_windows_per_s": beside,
                          "slowdown": alone / beside, "env": SETTINGS[setting], **v}
    print("\n| setting | alone (windows/s) | beside a second run | slowdown (2.0 = fair share) |")
    print("|---|---:|---:|---:|")
    for setting, t in table.items():
        print(f"| {setting} | {t['alone_windows_per_s']:.1f} | {t['beside_windows_per_s']:.1f} | "
              f"{t['slowdown']:.2f}× |")
    result = {"benchmark": "bench_sharing", "quick": args.quick, "windows": n, "batch_size": batch, "rounds": rounds,
              "model_flags": MODEL, "machine": describe(), "settings": table,
              "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = args.out.with_suffix(".json.tmp")
        tmp_out.write_text(json.dumps(result, indent=1) + "\n")
        os.replace(tmp_out, args.out)
        print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
