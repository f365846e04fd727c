"""Throughput and peak memory of the PhysioWave presets: training step and inference, fp32 and bf16 autocast.

Every configuration runs in a fresh process (so peak memory is its own); the median step time after
warm-up gives samples/s. Results are printed as a Markdown table and written to
``benchmarks/results/<device>.json``.

    python benchmarks/bench_model.py                 # CPU, and CUDA too when present
    python benchmarks/bench_model.py --only ecg --steps 3

Training step = what pretraining does per batch: frequency-guided masking, masked MSE, backward,
gradient clipping at 1.0, AdamW. Reference figures are the original implementation's on a 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import physiowave  # noqa: E402
from physiowave.models.masking import masked_mse_loss  # noqa: E402

# preset → (channels, length, mask ratio, importance ratio); batch 8 throughout, as in the reference figures.
WORKLOADS = {"ecg": (12, 2048, 0.7, 0.7), "emg": (8, 1024, 0.6, 0.6)}
BATCH = 8
# The original implementation, 2 cores, fp32, batch 8 (issue #3): samples/s and peak RSS in GB.
REFERENCE = {
    "ecg": {"train": 0.17, "infer": 0.61, "rss_gb": 15.7},
    "emg": {"train": 2.2, "infer": 6.8, "rss_gb": 2.3},
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


def run_one(preset: str, mode: str, precision: str, device: str, steps: int, warmup: int) -> dict:
    """One configuration in this process → a result row."""
    torch.manual_seed(0)
    torch.set_flush_denormal(True)  # as the training engine does on CPU
    channels, length, mask_ratio, importance = WORKLOADS[preset]
    model = physiowave.create_model(preset).to(device)
    if mode == "train_ckpt":
        model.set_grad_checkpointing(True)
    x = torch.randn(BATCH, channels, length, device=device)
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=precision == "bf16")
    if mode.startswith("train"):
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.01)

        def step() -> None:
            with autocast:
                pred, target, mask = model.forward_pretrain(x, mask_ratio, "frequency_guided", importance)
                loss = masked_mse_loss(pred, target, mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
    else:
        model.eval()

        def step() -> None:
            with torch.inference_mode(), autocast:
                model.encode(x)

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
    row = dict(preset=preset, mode=mode, precision=precision, device=device, batch=BATCH, input=[channels, length],
               steps=steps, median_step_s=round(median, 4), samples_per_s=round(BATCH / median, 3),
               peak_rss_gb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3))
    if device.startswith("cuda"):
        row["peak_cuda_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 3)
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)
        if precision == "bf16" and peak:
            flops = forward_flops(model, length) * BATCH * (3 if mode.startswith("train") else 1)
            row["mfu_bf16"] = round(flops / median / (peak * 1e12), 4)
    return row


def ratios(row: dict) -> dict:
    """Speed-up and memory ratio against the reference figures (CPU rows only)."""
    if row["device"] != "cpu":
        return {}
    ref = REFERENCE[row["preset"]]
    base = ref["train"] if row["mode"].startswith("train") else ref["infer"]
    out = {"speedup_vs_original": round(row["samples_per_s"] / base, 2)}
    if row["mode"].startswith("train"):
        out["memory_vs_original"] = round(row["peak_rss_gb"] / ref["rss_gb"], 3)
    return out


def markdown(rows: list[dict]) -> str:
    lines = ["| preset | step | precision | device | samples/s | ×original | peak RSS GB | RSS ÷ original | MFU |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['mode']} | {r['precision']} | {r['device']} | {r['samples_per_s']:.2f} | "
                     f"{r.get('speedup_vs_original', '–')} | {r['peak_rss_gb']:.2f} | {r.get('memory_vs_original', '–')} | "
                     f"{r.get('mfu_bf16', '–')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=sorted(WORKLOADS), choices=sorted(WORKLOADS), help="presets to run")
    parser.add_argument("--modes", nargs="*", default=["train", "train_ckpt", "infer"], choices=["train", "train_ckpt", "infer"])
    parser.add_argument("--precisions", nargs="*", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--devices", nargs="*", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_one(**json.loads(args.worker))))
        return
    devices = args.devices or (["cuda"] if torch.cuda.is_available() else []) + ["cpu"]
    for device in devices:
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
                    row.update(ratios(row))
                    rows.append(row)
                    print(f"{preset:4s} {mode:10s} {precision:5s} {device:5s} {row['samples_per_s']:8.3f} samples/s  "
                          f"peak RSS {row['peak_rss_gb']:.2f} GB  {row.get('speedup_vs_original', '')}", flush=True)
        env = dict(torch=torch.__version__, python=platform.python_version(), cpu=platform.processor() or platform.machine(),
                   threads=torch.get_num_threads(), date=time.strftime("%Y-%m-%d"),
                   cuda=torch.cuda.get_device_name() if device.startswith("cuda") else None)
        name = "cpu" if device == "cpu" else torch.cuda.get_device_name().replace(" ", "_")
        out = ROOT / "benchmarks" / "results" / f"{name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"environment": env, "reference": REFERENCE, "results": rows}, indent=1))
        tmp.replace(out)
        print(f"\n{markdown(rows)}\n\nwritten to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
