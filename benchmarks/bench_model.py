"""Throughput and peak memory of the ECG and EMG presets, beside the original's figures for the same kind of machine.

Every configuration runs in a fresh process (so peak memory is its own); the median step time after warm-up gives
samples/s. Results are printed as a Markdown table and written to ``benchmarks/results/<device>.json`` together with
the machine (CPU model and flags or GPU, threads, torch version: ``benchmarks/machine.py``).

    python benchmarks/bench_model.py                          # CPU, and CUDA too when present
    python benchmarks/bench_model.py --only emg --modes train infer --precisions fp32

Modes (batch 8 unless ``--batch``; the workers set up the process as the training scripts do: denormals flushed, fused
AdamW):
- ``train``: the original's pretraining step, which the reference figures measure: an original-release model
  (``LEGACY_CONFIG``: MLP reconstruction head on every token, the spectrum as target), frequency-guided masking
  (ECG 0.7, EMG 0.6), masked MSE, backward, gradient clipping at 1.0, AdamW.
- ``train_ckpt``: the same with activation checkpointing (``set_grad_checkpointing``).
- ``infer``: ``encode`` under ``torch.inference_mode``.
- ``pretrain`` / ``pretrain_mlp``: the step ``pretrain.py`` takes for a new model with its defaults (input_norm rms,
  the bands objective, FgM at 0.6, AdamW lr 1e-3 and weight decay 0.05) with ``--decoder transformer`` (the default:
  the encoder sees only the visible tokens) and ``--decoder mlp``.

Every row also holds the FLOPs of one step, counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix
products, convolutions, attention) on an eager step, the achieved TFLOP/s, and on a GPU the host's time to launch a
step (``host_launch_s``: near the step time, the GPU waits for Python), peak GPU memory and, in bf16, the MFU
against the datasheet's dense bf16 peak (:data:`BF16_PEAK_TFLOPS`; a GPU results file also holds the measured rate
of one large matrix product). ``--batch 8 64 256`` runs other batch sizes; ``--variant compile`` wraps the loss (or
``encode``) in ``torch.compile`` and records the first step's time with compilation; ``--variant regional`` compiles
only the repeated regions (each transformer block, the wavelet decomposition: ``PhysioWave.compile_regions``, what
``--compile`` of the training scripts does), which compiles in a fraction of the time; ``--variant cuda_graph``
captures the whole step (forward, backward, clipping, AdamW) in a CUDA graph and replays it, which takes the host's
launch time out of a launch-bound step, and ``regional_graph`` captures the step with compiled regions;
``--profile`` adds the operators that take the most time in one more step. ``benchmarks/gpu_check.sh`` is the run
for a lent GPU.

Ratios are printed only where :data:`REFERENCE` holds the original's figures for this kind of machine
(:func:`machine.kind`), and only for the original's protocol (batch 8, eager): figures from another machine say
nothing about this one.
"""
from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import physiowave  # noqa: E402
from bench_decoder import CPU_ATTENTION  # noqa: E402
from machine import describe, label  # noqa: E402
from physiowave.models.masking import masked_mse_loss  # noqa: E402

# preset → (channels, length, mask ratio, importance ratio) of the original's step; batch 8 throughout.
WORKLOADS = {"ecg": (12, 2048, 0.7, 0.7), "emg": (8, 1024, 0.6, 0.6)}
MODES = ("train", "train_ckpt", "infer", "pretrain", "pretrain_mlp")
VARIANTS = ("eager", "compile", "regional", "cuda_graph", "regional_graph")
BATCH = 8
NEW_MODEL = dict(input_norm="rms", objective="bands")  # what a new model gets (pretrain.py's defaults)

# The original implementation (github.com/ForeverBlue816/PhysioWave), fp32, batch 8, 2 threads, each configuration in
# a fresh process, per kind of machine: samples/s of its training step (the `train` mode above) and of inference
# (forward_features), peak RSS in GiB of the training process. None: no figure of that kind.
REFERENCE = {
    "Intel Xeon, 2 CPUs, AMX": dict(
        source="the original's model code (its public repository; checked against ../shared/compat: max rel. diff "
               "1.3e-6) run beside this project with the same protocol (its own AdamW and masked MSE), 2026-11-27, "
               "Intel(R) Xeon(R) Processor (KVM), 2 CPUs, AVX-512 BF16 + AMX, torch 2.13.0+cpu; ECG: one run "
               "(training step 40.75 s, 15.5 GiB); EMG: median of 4 runs interleaved with ours (step 2.59 s)",
        ecg=dict(train=8 / 40.75, infer=8 / 10.36, rss_gib=15.5),
        emg=dict(train=3.09, infer=7.42, rss_gib=2.27)),
    "AMD EPYC, 2 CPUs, AVX-512 BF16": dict(
        source="issue 19: the original and this project side by side, fp32, 2 threads, batch 8; ECG step 48.4 s, "
               "EMG step 3.5-3.7 s (3.6 used); inference given only as ratios (EMG: ours 15.5 samples/s at "
               "1.76-2.4x, so the original's 6.5-8.8; the upper end is used, which does not flatter us; ECG: none)",
        ecg=dict(train=8 / 48.4, infer=None, rss_gib=15.0),
        emg=dict(train=8 / 3.6, infer=15.5 / 1.76, rss_gib=2.2)),
}
# Dense bf16 tensor-core peak (datasheet, TFLOP/s) by GPU name; the most specific name is tried first.
BF16_PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0, "H200": 989.0, "A100": 312.0}


def step_flops(step) -> int:
    """FLOPs of one call of ``step`` (matmuls, convolutions, attention) counted by ``FlopCounterMode``."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
        step()
    return counter.get_total_flops()


def top_kernels(step, device: str, top: int = 25) -> list[dict]:
    """The operators of one ``step`` that take the most self time on ``device`` (torch.profiler), with call counts."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    attr = "self_device_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, attr), reverse=True)
    total = sum(getattr(e, attr) for e in events)
    return [dict(name=e.key[:80], self_ms=round(getattr(e, attr) / 1e3, 3), share=round(getattr(e, attr) / total, 4),
                 calls=e.count) for e in events[:top]]


def bf16_peak_tflops(gpu: str) -> float | None:
    """Datasheet dense bf16 peak of a GPU by name, None for an unknown one."""
    return next((v for k, v in BF16_PEAK_TFLOPS.items() if k in gpu), None)


def build_step(preset: str, mode: str, precision: str, device: str, batch: int, variant: str = "eager"):
    """One step of a configuration as a function of no arguments. ``variant``: ``eager``, ``compile`` (the loss or
    ``encode`` through ``torch.compile``), ``regional`` (``model.compile_regions()``), ``cuda_graph`` (the whole step
    captured once, then replayed) or ``regional_graph`` (both)."""
    channels, length, mask_ratio, importance = WORKLOADS[preset]
    overrides = {}
    if mode.startswith("pretrain"):
        overrides = dict(NEW_MODEL, decoder="mlp" if mode == "pretrain_mlp" else "transformer")
    model = physiowave.create_model(preset, **overrides).to(device)
    if mode == "train_ckpt":
        model.set_grad_checkpointing(True)
    x = torch.randn(batch, channels, length, device=device)
    if variant.startswith("regional"):
        model.compile_regions()
    graph = variant.endswith("graph")
    # A captured graph cannot use autocast's cache of cast weights (it would replay stale casts).
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=precision == "bf16",
                              cache_enabled=not graph)
    if mode == "infer":
        model.eval()
        encode = torch.compile(model.encode) if variant == "compile" else model.encode

        def step() -> None:
            with torch.inference_mode(), autocast:
                encode(x)
    else:
        model.train()

        def loss_of(x: torch.Tensor) -> torch.Tensor:
            if mode.startswith("pretrain"):
                return model.pretrain_loss(x, 0.6, "frequency_guided", 0.6)[0]
            return masked_mse_loss(*model.forward_pretrain(x, mask_ratio, "frequency_guided", importance))

        loss_fn = torch.compile(loss_of) if variant == "compile" else loss_of
        lr, wd = (1e-3, 0.05) if mode.startswith("pretrain") else (1e-4, 0.01)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=wd, fused=True,
                                capturable=graph)

        def step() -> None:
            with autocast:
                loss = loss_fn(x)
            if not graph:  # a captured step writes fresh gradients (allocated during capture) on every replay
                opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
    if not graph:
        return step
    return capture(step, () if mode == "infer" else list(model.parameters()))


def capture(step, params: list[torch.nn.Parameter], warmup: int = 3):
    """``step`` captured in a CUDA graph → its replay. Warm-up runs on a side stream first (cuBLAS/cuDNN handles,
    cached tables, the allocator), as ``torch.cuda.graphs`` asks; gradients are unset before capture, so the
    captured backward allocates them in the graph's pool and every replay writes them afresh."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            for p in params:
                p.grad = None
            step()
    torch.cuda.current_stream().wait_stream(side)
    for p in params:
        p.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def run_one(preset: str, mode: str, precision: str, device: str, steps: int, warmup: int, batch: int = BATCH,
            variant: str = "eager", profile: bool = False) -> dict:
    """One configuration in this process → a result row."""
    torch.manual_seed(0)
    if device == "cpu":
        torch.set_flush_denormal(True)  # as the training engine does on CPU
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    graph = variant.endswith("graph")
    start = time.perf_counter()
    step = build_step(preset, mode, precision, device, batch, variant)
    prepare_s = time.perf_counter() - start  # a graph's warm-up and capture (compilation happens in the first step)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times, issued = [], []
    for _ in range(warmup + steps):
        sync()
        start = time.perf_counter()
        step()
        issued.append(time.perf_counter() - start)  # on a GPU: the host's time to launch the step's work
        sync()
        times.append(time.perf_counter() - start)
    median = statistics.median(times[warmup:])
    # before counting: the counter's step holds more
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    peak_cuda = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    # Compiled and captured steps hide their operations from the counter: FLOPs come from an eager step.
    flops = step_flops(step if variant == "eager" else build_step(preset, mode, precision, device, batch))
    channels, length = WORKLOADS[preset][:2]
    row = dict(preset=preset, mode=mode, precision=precision, device=device, batch=batch, input=[channels, length],
               variant=variant, steps=steps, median_step_s=round(median, 4), samples_per_s=round(batch / median, 3),
               peak_rss_gib=round(peak_rss, 3), gflops_per_step=round(flops / 1e9, 2),
               achieved_tflops=round(flops / median / 1e12, 4))
    if variant in ("compile", "regional"):
        row["first_step_s"] = round(times[0], 2)  # compilation included
    if graph:
        row["capture_s"] = round(prepare_s, 2)  # compilation included for regional_graph
    if profile:
        row["profile"] = top_kernels(step, device)
    if device.startswith("cuda"):
        # Close to the step time: the GPU waits for the host (launch-bound); far below: the GPU is the limit.
        row["host_launch_s"] = round(statistics.median(issued[warmup:]), 4)
        row["peak_cuda_gib"] = round(peak_cuda, 3)
        peak = bf16_peak_tflops(torch.cuda.get_device_name())
        if precision == "bf16" and peak:
            row["mfu_bf16"] = round(flops / median / (peak * 1e12), 4)
    return row


def ratios(row: dict, reference: dict | None) -> dict:
    """Speed-up and memory ratio against the original's figures for this machine (its step at batch 8: train/infer)."""
    if (row["device"] != "cpu" or reference is None or row["mode"] not in ("train", "train_ckpt", "infer")
            or row["batch"] != BATCH or row["variant"] != "eager"):
        return {}
    ref = reference[row["preset"]]
    base = ref["train"] if row["mode"].startswith("train") else ref["infer"]
    out = {} if base is None else {"speedup_vs_original": round(row["samples_per_s"] / base, 2)}
    if row["mode"].startswith("train") and ref["rss_gib"]:
        out["memory_vs_original"] = round(row["peak_rss_gib"] / ref["rss_gib"], 3)
    return out


def matmul_tflops(device: str, n: int = 8192, repeats: int = 20) -> float:
    """Measured bf16 rate of one large square matrix product on a CUDA device (the ceiling MFU is read against)."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return round(2 * n**3 * repeats / (start.elapsed_time(end) / 1e3) / 1e12, 1)


def markdown(rows: list[dict]) -> str:
    lines = ["| preset | step | precision | device | batch | variant | samples/s | ×original | peak RSS GiB | RSS ÷ "
             "original | peak GPU GiB | GFLOP/step | TFLOP/s | MFU |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['mode']} | {r['precision']} | {r['device']} | {r['batch']} | "
                     f"{r['variant']} | {r['samples_per_s']:.2f} | {r.get('speedup_vs_original', '–')} | "
                     f"{r['peak_rss_gib']:.2f} | {r.get('memory_vs_original', '–')} | {r.get('peak_cuda_gib', '–')} | "
                     f"{r['gflops_per_step']} | {r['achieved_tflops']} | {r.get('mfu_bf16', '–')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=sorted(WORKLOADS), choices=sorted(WORKLOADS),
                        help="presets to run")
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    parser.add_argument("--precisions", nargs="*", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--batch", nargs="*", type=int, default=[BATCH], help="batch sizes (ratios: batch 8 only)")
    parser.add_argument("--variant", default="eager", choices=VARIANTS,
                        help="compile: torch.compile the loss (or encode), recording the first step's time with "
                             "compilation; regional: compile each transformer block and the wavelet decomposition; "
                             "cuda_graph (CUDA only): capture the whole step once and replay it; regional_graph: both")
    parser.add_argument("--profile", action="store_true", help="record the operators that take the most time in one "
                        "more step (torch.profiler) under 'profile' in each row")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=None, help="seconds one configuration may take")
    parser.add_argument("--devices", nargs="*", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--out", type=Path, default=None,
                        help="results file (default benchmarks/results/<device>.json)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_one(**json.loads(args.worker))))
        return
    devices = args.devices or (["cuda"] if torch.cuda.is_available() else []) + ["cpu"]
    if args.variant.endswith("graph") and not all(d.startswith("cuda") for d in devices):
        parser.error(f"--variant {args.variant} captures CUDA work: pass --devices cuda (got {' '.join(devices)})")
    for device in devices:
        machine = describe(device)
        if device.startswith("cuda"):
            machine["bf16_matmul_tflops_measured"] = matmul_tflops(device)
            machine["bf16_peak_tflops_datasheet"] = bf16_peak_tflops(machine["gpu"])
        reference = REFERENCE.get(machine["kind"]) if device == "cpu" else None
        print(f"{label(machine)}; reference figures of the original for this kind ({machine['kind']}): "
              f"{'yes' if reference else 'none, so no ratios'}", flush=True)
        name = "cpu" if device == "cpu" else machine["gpu"].replace(" ", "_")
        out = args.out or ROOT / "benchmarks" / "results" / f"{name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        for preset, mode, precision, batch in itertools.product(args.only, args.modes, args.precisions, args.batch):
            spec = dict(preset=preset, mode=mode, precision=precision, device=device, steps=args.steps,
                        warmup=args.warmup, batch=batch, variant=args.variant, profile=args.profile)
            what = f"{preset} {mode} {precision} {device} batch {batch} {args.variant}"
            try:
                proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True,
                                      text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                print(f"{what}: over --timeout {args.timeout} s", file=sys.stderr)
                continue
            if proc.returncode:
                print(f"{what}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row.update(ratios(row, reference))
            rows.append(row)
            print(f"{what}: {row['samples_per_s']:.3f} samples/s, {row['achieved_tflops']} TFLOP/s, "
                  f"MFU {row.get('mfu_bf16', '–')}, peak RSS {row['peak_rss_gib']:.2f} GiB, "
                  f"×original {row.get('speedup_vs_original', '–')}", flush=True)
            tmp = out.with_suffix(".json.tmp")  # rewritten after every row, so a stopped run keeps what it measured
            tmp.write_text(json.dumps({"machine": machine, "reference": reference, "results": rows}, indent=1))
            tmp.replace(out)
        print(f"\n{markdown(rows)}\n\nwritten to {out}")


if __name__ == "__main__":
    main()
