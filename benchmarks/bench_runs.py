"""Whole training runs on this CPU: windows/s, where the time goes, and how far from what the FLOPs allow.

    python benchmarks/bench_runs.py            # the real run, on an otherwise idle machine (~10 min on 2 cores)
    python benchmarks/bench_runs.py --quick    # tiny sizes, ~1 min: only proves the script works

For each configuration, ``pretrain.py`` and then the fine-tuning script (from the pretrained checkpoint) run end to
end in a fresh process, one epoch each, on synthetic data of the configuration's shape (speed does not depend on the
values), with the defaults a user gets (``--recipe physiowave``, fp32, the thread settings of
:mod:`physiowave.threads`) except ``--num_workers`` (0 unless ``--num_workers`` says otherwise):

- ``ptbxl_cpu``: the PTB-XL protocol's CPU network (embed 64, depth 3, 4 heads, patch 50; 12 leads, 2.5 s crops at
  100 Hz of 10 s records, batch 64), as many validation windows as training records, as in the protocol;
- ``small_8x256``: the small network of issue 31 (embed 64, depth 3, 4 heads, patch 32, 8 × 256, batch 32);
- ``ecg`` and ``emg``: the presets (12 × 2048 and 8 × 1024, batch 8), a few batches.

Each run's ``timing.json`` (:mod:`physiowave.engine.timing`) says where its time went. ``process_wall_s`` adds what
comes before the engine starts its clock (interpreter, imports). The FLOP-bound limit is this machine's sustained
2-thread fp32 matmul rate (a 2048³ product, median of 5, measured in the same run) divided by the FLOPs of one
training window's step: ``torch.utils.flop_counter`` over the run's own model and loss (forward and backward;
matrix products, convolutions and attention, whose CPU kernels the counter does not know: ``bench_decoder``'s
``CPU_ATTENTION`` formulas add them). ``step_fraction`` = windows/s of step time ÷ that limit; ``run_fraction``
the same for the whole run (process wall).

Results: a Markdown table on stdout and ``benchmarks/results/runs_cpu.json`` (``--out``), with the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_decoder import CPU_ATTENTION  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from machine import describe  # noqa: E402

__all__ = ["Config", "CONFIGS", "step_flops", "matmul_rate", "main"]


@dataclass(frozen=True)
class Config:
    """One network and data shape, run through pretraining and fine-tuning."""

    name: str
    model: tuple[str, ...]
    channels: int
    stored: int            # stored length of a training record
    crop: int              # --max_length: training crops and validation windows
    batch: int
    train: int             # training records
    val: int               # fine-tuning validation windows
    pretrain_val: int = 0  # pretraining validation records
    classes: int = 5
    multilabel: bool = False
    extra: tuple[str, ...] = field(default=())


CONFIGS = {
    "ptbxl_cpu": Config("ptbxl_cpu", ("--patch_size", "50", "--embed_dim", "64", "--depth", "3", "--num_heads", "4"),
                        12, 1000, 250, 64, train=2048, val=2048, pretrain_val=256, multilabel=True),
    "small_8x256": Config("small_8x256", ("--patch_size", "32", "--embed_dim", "64", "--depth", "3", "--num_heads",
                                          "4"), 8, 256, 256, 32, train=1536, val=256, classes=4),
    "ecg": Config("ecg", ("--model", "ecg"), 12, 2048, 2048, 8, train=48, val=16),
    "emg": Config("emg", ("--model", "emg"), 8, 1024, 1024, 8, train=64, val=16, classes=7),
}


def _quick(c: Config) -> Config:
    small = ("--patch_size", "32", "--embed_dim", "32", "--depth", "1", "--num_heads", "4")
    return replace(c, model=small if c.name in ("ecg", "emg") else c.model, stored=min(c.stored, 512),
                   crop=min(c.crop, 256), train=min(c.train, 64), val=min(c.val, 32), pretrain_val=min(c.pretrain_val,
                                                                                                     16))


# --------------------------------------------------------------------------------------------------- inputs
def write_file(path: Path, n: int, c: Config, length: int, labels: bool, seed: int) -> str:
    """``n`` windows ``[C, length]`` of noise (one per chunk, as preprocessing writes them), with labels."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=rng.standard_normal((n, c.channels, length), dtype=np.float32),
                         chunks=(1, c.channels, length))
        if labels:
            f["label"] = ((rng.random((n, c.classes)) < 0.3).astype(np.float32) if c.multilabel
                          else rng.integers(0, c.classes, n))
    return str(path)


# --------------------------------------------------------------------------------------------------- FLOPs
def step_flops(run_args: dict[str, Any], pretrain: bool, batch: int = 8) -> dict[str, float]:
    """FLOPs of one training window's forward + backward for the run whose ``args.json`` is ``run_args``:
    ``{"total", "attention", "matmul_conv"}`` per window, and the model's ``parameters``."""
    import argparse as ap

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from physiowave.engine.model_config import build_model
    from physiowave.engine.tasks import PretrainTask

    config = run_args["model_config"]
    model = build_model(config).train()
    x = torch.randn(batch, config["in_channels"], run_args["max_length"])
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
        if pretrain:
            loss, _ = PretrainTask(ap.Namespace(**run_args)).wrap(model)(x)
        else:
            loss = model(x).float().square().mean()
        loss.backward()
    counts = counter.get_flop_counts()["Global"]
    attention = sum(v for op, v in counts.items() if op in CPU_ATTENTION)
    total = counter.get_total_flops()
    return {"total": total / batch, "attention": attention / batch, "matmul_conv": (total - attention) / batch,
            "parameters": sum(p.numel() for p in model.parameters())}


def matmul_rate(n: int = 2048, rounds: int = 5) -> float:
    """Sustained fp32 matmul FLOP/s of this process's threads: an n³ product, median of ``rounds`` after warm-up."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


# --------------------------------------------------------------------------------------------------- runs
def run_script(script: str, argv: list[str], out: Path) -> dict[str, Any]:
    """``python script argv --output_dir out`` in a fresh process → its timing.json plus the process wall time."""
    cmd = [sys.executable, str(ROOT / script), *argv, "--output_dir", str(out), "--overwrite"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{script} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    timing = json.loads((out / "timing.json").read_text())
    return {"process_wall_s": wall, "timing": timing, "command": " ".join(cmd[1:])}


def measure(c: Config, work: Path, rate: float, workers: int = 0, log: Any = print) -> dict[str, Any]:
    """Pretraining then fine-tuning of ``c`` → both runs' timings, FLOPs per window and fractions of the limit."""
    train = write_file(work / f"{c.name}_train.h5", c.train, c, c.stored, True, 0)
    val = write_file(work / f"{c.name}_val.h5", c.val, c, c.crop, True, 1)
    common = [*c.model, *c.extra, "--max_length", str(c.crop), "--batch_size", str(c.batch), "--epochs", "1",
              "--num_workers", str(workers), "--device", "cpu", "--warmup_epochs", "0"]
    pre_argv = ["--train_files", train, *common]
    if c.pretrain_val:
        pre_argv += ["--val_files", write_file(work / f"{c.name}_preval.h5", c.pretrain_val, c, c.stored, False, 2)]
    out: dict[str, Any] = {}
    runs = (("pretrain", "pretrain.py", pre_argv),
            ("finetune", "finetune_multilabel.py" if c.multilabel else "finetune.py",
             ["--train_file", train, "--val_file", val, *common, "--pretrained_path",
              str(work / f"{c.name}_pretrain" / "best_model.pth")]))
    for kind, script, argv in runs:
        folder = work / f"{c.name}_{kind}"
        r = run_script(script, argv, folder)
        run_args = json.loads((folder / "args.json").read_text())
        flops = step_flops(run_args, pretrain=kind == "pretrain")
        t = r["timing"]
        bound = rate / flops["total"]
        r.update(flops_per_window=flops, flop_bound_windows_per_s=bound,
                 step_windows_per_s=t["train_samples_per_step_s"],
                 run_windows_per_s=t["train_samples"] / r["process_wall_s"],
                 step_fraction=t["train_samples_per_step_s"] / bound,
                 run_fraction=t["train_samples"] / r["process_wall_s"] / bound,
                 parameters=flops.pop("parameters"), script=script)
        out[kind] = r
        log(f"{c.name:12s} {kind:8s} step {r['step_windows_per_s']:8.1f} w/s ({r['step_fraction']:.1%} of "
            f"{bound:.0f}), whole run {r['run_windows_per_s']:7.1f} w/s; "
            f"{flops['total'] / 1e6:.0f} MFLOP/window ({flops['attention'] / flops['total']:.0%} attention)")
    return out


PHASE_COLUMNS = ("setup", "data", "step", "eval", "log", "checkpoint", "test", "other")


def markdown(results: dict[str, Any], rate: float) -> str:
    lines = [f"fp32 matmul, this machine's threads: {rate / 1e9:.0f} GFLOP/s", "",
             "| configuration | run | parameters | MFLOP/window (attention) | FLOP-bound windows/s | step windows/s "
             "(share of bound) | whole run windows/s (share) | " + " | ".join(PHASE_COLUMNS) + " | before the engine |",
             "|---|---|---:|---:|---:|---:|---:|" + "---:|" * (len(PHASE_COLUMNS) + 1)]
    for name, runs in results.items():
        for kind, r in runs.items():
            t, f = r["timing"], r["flops_per_window"]
            wall = r["process_wall_s"]
            phases = " | ".join(f"{100 * t[p] / wall:.0f} %" for p in PHASE_COLUMNS)
            lines.append(f"| {name} | {kind} | {r['parameters']:,} | {f['total'] / 1e6:.0f} "
                         f"({f['attention'] / f['total']:.0%}) | {r['flop_bound_windows_per_s']:.0f} | "
                         f"{r['step_windows_per_s']:.1f} ({r['step_fraction']:.1%}) | {r['run_windows_per_s']:.1f} "
                         f"({r['run_fraction']:.1%}) | {phases} | {100 * (wall - t['wall_s']) / wall:.0f} % |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes: proves the script works, measures nothing")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of {', '.join(CONFIGS)}")
    p.add_argument("--num_workers", type=int, default=0,
                   help="DataLoader workers of every run (default 0, as the PTB-XL protocol runs)")
    p.add_argument("--out", type=Path, default=None,
                   help="result file (default benchmarks/results/runs_cpu.json; with --quick, the system temp)")
    args = p.parse_args(argv)
    chosen = [s for s in args.configs.split(",") if s]
    if unknown := [s for s in chosen if s not in CONFIGS]:
        p.error(f"--configs: unknown {', '.join(unknown)}")
    out = args.out or (Path(tempfile.gettempdir()) / "bench_runs_quick.json" if args.quick
                       else ROOT / "benchmarks" / "results" / "runs_cpu.json")
    import torch

    rate = matmul_rate(512 if args.quick else 2048)
    print(f"fp32 matmul: {rate / 1e9:.0f} GFLOP/s on {torch.get_num_threads()} threads", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench_runs_"))
    results: dict[str, Any] = {}
    try:
        for name in chosen:
            c = _quick(CONFIGS[name]) if args.quick else CONFIGS[name]
            results[name] = measure(c, work, rate, args.num_workers)
            results[name]["config"] = asdict(c)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    configs = {k: v.pop("config") for k, v in results.items()}
    table = markdown(results, rate)
    record = {"benchmark": "bench_runs", "quick": args.quick, "num_workers": args.num_workers, "machine": describe(),
              "matmul_fp32_flops_per_s": rate, "configs": configs, "results": results, "markdown": table,
              "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=float) + "\n")
    os.replace(tmp, out)
    print(f"\n{table}\n\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
