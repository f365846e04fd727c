"""Attention implementations at the shapes the presets run, so the one the model uses is picked by measurement.

For every attention call of the ECG and EMG presets (batch 8): the encoder (all tokens, and the visible tokens of
MAE pretraining) and the cross-scale attention of the wavelet front-end (T queries over the inputs of 1 or 2
earlier levels, head dim 4-6), it times forward (inference mode) and forward + backward of

- ``flash``: ``F.scaled_dot_product_attention`` with PyTorch's default choice (the fused flash kernel on CPU),
- ``math``: the same call restricted to the unfused math backend,
- ``explicit``: softmax(q kᵀ·scale) v with batched matrix products, the whole score matrix stored,

and the head layout (q, k, v as strided views of the projection output vs contiguous ``[B, H, N, d]`` copies).
Medians of 5 runs after 2 warm-ups. Results: a Markdown table and ``benchmarks/results/attention_<device>.json``.

    python benchmarks/bench_attention.py            # ~3 min on 2 CPU cores
    python benchmarks/bench_attention.py --quick    # the EMG shapes only
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import describe, label  # noqa: E402

# name → (batch, heads, queries, keys, head dim)
SHAPES = {
    "emg encoder (512 tokens)": (8, 8, 512, 512, 32),
    "emg MAE encoder (205 visible)": (8, 8, 205, 205, 32),
    "emg cross-scale level 1": (8, 4, 1024, 1024, 4),
    "emg cross-scale level 2": (8, 4, 1024, 2048, 4),
    "ecg encoder (1536 tokens)": (8, 12, 1536, 1536, 32),
    "ecg MAE encoder (461 visible)": (8, 12, 461, 461, 32),
    "ecg cross-scale level 1": (8, 4, 2048, 2048, 6),
    "ecg cross-scale level 2": (8, 4, 2048, 4096, 6),
}


def explicit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ / √d) v, ``[B, H, N, d]`` each, the ``[B, H, N, S]`` scores stored."""
    return ((q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)).softmax(-1) @ v


def math_backend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v)


IMPLEMENTATIONS = {"flash": F.scaled_dot_product_attention, "math": math_backend, "explicit": explicit}


def median_ms(fn, repeats: int = 5, warmup: int = 2) -> float:
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        fn()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1e3, 2)


def measure(shape: tuple[int, ...], device: str) -> dict:
    """Milliseconds per implementation and layout for one shape."""
    B, H, N, S, d = shape
    q, k, v = (torch.randn(B, H, n, d, device=device) for n in (N, S, S))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    row = {}
    for name, fn in IMPLEMENTATIONS.items():
        def infer(fn=fn) -> None:
            with torch.inference_mode():
                fn(q, k, v)
            sync()

        def train(fn=fn) -> None:
            qq, kk, vv = (t.detach().requires_grad_() for t in (q, k, v))
            out = fn(qq, kk, vv)
            out.backward(torch.ones_like(out))
            sync()
        row[f"{name}_infer_ms"], row[f"{name}_train_ms"] = median_ms(infer), median_ms(train)
    # Head layout: views into one [B, N, 3, H, d] projection output (what the encoder passes) vs contiguous copies.
    if N == S:
        packed = torch.randn(B, N, 3, H, d, device=device)
        for layout in ("strided", "contiguous"):
            def step(layout=layout) -> None:
                x = packed.clone().requires_grad_()
                views = [t.transpose(1, 2) for t in x.unbind(2)]
                if layout == "contiguous":
                    views = [t.contiguous() for t in views]
                out = F.scaled_dot_product_attention(*views)
                out.backward(torch.ones_like(out))
                sync()
            row[f"layout_{layout}_train_ms"] = median_ms(step)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="EMG shapes only")
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/results/attention_<device>.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.device == "cpu":
        torch.set_flush_denormal(True)
    shapes = {k: v for k, v in SHAPES.items() if not args.quick or k.startswith("emg")}
    rows = []
    for name, shape in shapes.items():
        row = dict(shape=name, B_H_N_S_d=list(shape), **measure(shape, args.device))
        best = min(IMPLEMENTATIONS, key=lambda impl: row[f"{impl}_train_ms"])
        row["fastest_train"] = best
        rows.append(row)
        print(f"{name:32s} train ms: "
              + "  ".join(f"{impl} {row[f'{impl}_train_ms']:8.1f}" for impl in IMPLEMENTATIONS), flush=True)
    machine = describe(args.device)
    lines = [f"{label(machine)}; milliseconds, median of 5", "",
             "| call | B, H, N, S, d | flash infer / train | math infer / train | explicit infer / train | views / "
             "contiguous (train) |", "|---|---|---|---|---|---|"]
    for r in rows:
        layout = (f"{r['layout_strided_train_ms']} / {r['layout_contiguous_train_ms']}"
                  if "layout_strided_train_ms" in r else "–")
        lines.append(f"| {r['shape']} | {', '.join(map(str, r['B_H_N_S_d']))} | {r['flash_infer_ms']} / "
                     f"{r['flash_train_ms']} | {r['math_infer_ms']} / {r['math_train_ms']} | {r['explicit_infer_ms']} "
                     f"/ {r['explicit_train_ms']} | {layout} |")
    out = args.out or ROOT / "benchmarks" / "results" / f"attention_{args.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"machine": machine, "results": rows}, indent=1) + "\n")
    tmp.replace(out)
    print("\n" + "\n".join(lines) + f"\n\nwritten to {out}")


if __name__ == "__main__":
    main()
