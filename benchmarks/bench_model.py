"""Throughput and peak memory of the ECG and EMG presets, beside the original's figures for the same kind of machine.

Every configuration runs in a fresh process (so peak memory is its own); the median step time after warm-up gives
samples/s. Results are printed as a Markdown table and written to ``benchmarks/results/<device>.json`` together with
the machine (CPU model and flags or GPU, threads, torch version: ``benchmarks/machine.py``).

    python benchmarks/bench_model.py                          # CPU, and CUDA too when present
    python benchmarks/bench_model.py --only emg --modes train infer --precisions fp32

Modes (batch 8; the workers set up the process as the training scripts do: denormals flushed, fused AdamW):
- ``train``: the original's pretraining step, which the reference figures measure: an original-release model
  (``LEGACY_CONFIG``: MLP reconstruction head on every token, the spectrum as target), frequency-guided masking
  (ECG 0.7, EMG 0.6), masked MSE, backward, gradient clipping at 1.0, AdamW.
- ``train_ckpt``: the same with activation checkpointing (``set_grad_checkpointing``).
- ``infer``: ``encode`` under ``torch.inference_mode``.
- ``pretrain`` / ``pretrain_mlp``: the step ``pretrain.py`` takes for a new model with its defaults (input_norm rms,
  the bands objective, FgM at 0.6, AdamW lr 1e-3 and weight decay 0.05) with ``--decoder transformer`` (the default:
  the encoder sees only the visible tokens) and ``--decoder mlp``.

Ratios are printed only where :data:`REFERENCE` holds the original's figures for this kind of machine
(:func:`machine.kind`): figures from another machine say nothing about this one.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import physiowave  # noqa: E402
from machine import describe, kind, label  # noqa: E402
from physiowave.models.masking import masked_mse_loss  # noqa: E402

# preset → (channels, length, mask ratio, importance ratio) of the original's step; batch 8 throughout.
WORKLOADS = {"ecg": (12, 2048, 0.7, 0.7), "emg": (8, 1024, 0.6, 0.6)}
MODES = ("train", "train_ckpt", "infer", "pretrain", "pretrain_mlp")
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
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def forward_flops(model: physiowave.PhysioWave, length: int) -> float:
    """Matmul FLOPs of one sample's forward pass (encoder, patch embedding, heads, cross-scale attention)."""
    cfg = model.config
    D, depth, C, L, P = cfg["embed_dim"], cfg["depth"], cfg["in_channels"], cfg["max_level"], model.patch_size
    N = model.num_tokens(length)
    hidden = int(D * cfg["mlp_ratio"])
    encoder = depth * (2 * N * (4 * D * D + 2 * D * hidden) + 4 * N * N * D)
    E, T = 2 * C, length
    ffn = L * 16 * T * E * E  # fc1 E→4E and fc2 4E→E at every level
    # Cross-scale attention at level ≥ 1: q and out projections, k/v projections of level·T keys, scores and A·V.
    attention = sum(4 * T * E * E + 4 * level * T * E * E + 4 * T * level * T * E for level in range(1, L))
    embed_and_head = 2 * N * P * D + 2 * N * (D * D + D * P)
    return float(encoder + ffn + attention + embed_and_head)


def build_step(preset: str, mode: str, precision: str, device: str):
    """(model, one step as a function) for a configuration."""
    channels, length, mask_ratio, importance = WORKLOADS[preset]
    overrides = {}
    if mode.startswith("pretrain"):
        overrides = dict(NEW_MODEL, decoder="mlp" if mode == "pretrain_mlp" else "transformer")
    model = physiowave.create_model(preset, **overrides).to(device)
    if mode == "train_ckpt":
        model.set_grad_checkpointing(True)
    x = torch.randn(BATCH, channels, length, device=device)
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=precision == "bf16")
    if mode == "infer":
        model.eval()

        def infer() -> None:
            with torch.inference_mode(), autocast:
                model.encode(x)
        return model, infer
    model.train()
    lr, wd = (1e-3, 0.05) if mode.startswith("pretrain") else (1e-4, 0.01)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=wd, fused=True)

    def train() -> None:
        with autocast:
            if mode.startswith("pretrain"):
                loss, _ = model.pretrain_loss(x, 0.6, "frequency_guided", 0.6)
            else:
                pred, target, mask = model.forward_pretrain(x, mask_ratio, "frequency_guided", importance)
                loss = masked_mse_loss(pred, target, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return model, train


def run_one(preset: str, mode: str, precision: str, device: str, steps: int, warmup: int) -> dict:
    """One configuration in this process → a result row."""
    torch.manual_seed(0)
    if device == "cpu":
        torch.set_flush_denormal(True)  # as the training engine does on CPU
    model, step = build_step(preset, mode, precision, device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times = []
    for i in range(warmup + steps):
        sync()
        start = time.perf_counter()
        step()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    channels, length = WORKLOADS[preset][:2]
    row = dict(preset=preset, mode=mode, precision=precision, device=device, batch=BATCH, input=[channels, length],
               steps=steps, median_step_s=round(median, 4), samples_per_s=round(BATCH / median, 3),
               peak_rss_gib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3))
    if device.startswith("cuda"):
        row["peak_cuda_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)
        if precision == "bf16" and peak and mode in ("train", "infer"):
            flops = forward_flops(model, length) * BATCH * (3 if mode == "train" else 1)
            row["mfu_bf16"] = round(flops / median / (peak * 1e12), 4)
    return row


def ratios(row: dict, reference: dict | None) -> dict:
    """Speed-up and memory ratio against the original's figures for this machine (the original's step: train/infer)."""
    if row["device"] != "cpu" or reference is None or row["mode"] not in ("train", "train_ckpt", "infer"):
        return {}
    ref = reference[row["preset"]]
    base = ref["train"] if row["mode"].startswith("train") else ref["infer"]
    out = {} if base is None else {"speedup_vs_original": round(row["samples_per_s"] / base, 2)}
    if row["mode"].startswith("train") and ref["rss_gib"]:
        out["memory_vs_original"] = round(row["peak_rss_gib"] / ref["rss_gib"], 3)
    return out


def markdown(rows: list[dict]) -> str:
    lines = ["| preset | step | precision | device | samples/s | ×original | peak RSS GiB | RSS ÷ original | MFU |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['mode']} | {r['precision']} | {r['device']} | {r['samples_per_s']:.2f} | "
                     f"{r.get('speedup_vs_original', '–')} | {r['peak_rss_gib']:.2f} | {r.get('memory_vs_original', '–')} | "
                     f"{r.get('mfu_bf16', '–')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=sorted(WORKLOADS), choices=sorted(WORKLOADS), help="presets to run")
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    parser.add_argument("--precisions", nargs="*", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--devices", nargs="*", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--out", type=Path, default=None, help="results file (default benchmarks/results/<device>.json)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_one(**json.loads(args.worker))))
        return
    devices = args.devices or (["cuda"] if torch.cuda.is_available() else []) + ["cpu"]
    for device in devices:
        machine = describe(device)
        reference = REFERENCE.get(kind()) if device == "cpu" else None
        print(f"{label(machine)}; reference figures of the original for this kind ({kind()}): "
              f"{'yes' if reference else 'none, so no ratios'}", flush=True)
        rows = []
        for preset in args.only:
            for mode in args.modes:
                for precision in args.precisions:
                    spec = dict(preset=preset, mode=mode, precision=precision, device=device, steps=args.steps, warmup=args.warmup)
                    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True)
                    if proc.returncode:
                        print(f"{preset} {mode} {precision} {device}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                        continue
                    row = json.loads(proc.stdout.strip().splitlines()[-1])
                    row.update(ratios(row, reference))
                    rows.append(row)
                    print(f"{preset:4s} {mode:12s} {precision:5s} {device:5s} {row['samples_per_s']:8.3f} samples/s  "
                          f"peak RSS {row['peak_rss_gib']:.2f} GiB  {row.get('speedup_vs_original', '')}", flush=True)
        name = "cpu" if device == "cpu" else torch.cuda.get_device_name().replace(" ", "_")
        out = args.out or ROOT / "benchmarks" / "results" / f"{name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"machine": machine, "reference": reference, "results": rows}, indent=1))
        tmp.replace(out)
        print(f"\n{markdown(rows)}\n\nwritten to {out}")


if __name__ == "__main__":
    main()
