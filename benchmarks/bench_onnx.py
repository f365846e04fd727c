"""CPU inference latency per window: ONNX Runtime (the ``physiowave export`` graph) against PyTorch eager.

    python benchmarks/bench_onnx.py            # emg and ecg presets, batch 1 and 8, 2 threads (~2-3 min on 2 cores)
    python benchmarks/bench_onnx.py --quick    # fewer repeats: only proves the script works

Models: ``create_model("emg", num_classes=5, head_hidden_dim=512)`` on 8×1024 windows and
``create_model("ecg", num_classes=5, head_hidden_dim=1024)`` on 12×2048 windows (the published shapes with a
classification head; random weights, which do not change the cost), exported with :func:`physiowave.export.export_onnx`
(dynamo exporter, logits, checked ≤ 1e-4 against PyTorch). Both runtimes use the same thread count (torch
``set_num_threads``, ORT ``intra_op_num_threads``, one inter-op thread) and the same seeded input; after warm-up
runs, each repeat times one call of PyTorch then one of ORT (alternating, so both see the same machine noise).
ms/window = the median call time / batch size. Results: ``benchmarks/results/onnx_cpu.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from physiowave import __version__  # noqa: E402
from physiowave.export import export_onnx  # noqa: E402
from physiowave.models import create_model  # noqa: E402
from machine import describe, label  # noqa: E402

CASES = {"emg": dict(channels=8, length=1024, head_hidden_dim=512),
         "ecg": dict(channels=12, length=2048, head_hidden_dim=1024)}


def bench(name: str, batches: list[int], threads: int, repeats: int, warmup: int, folder: Path) -> list[dict]:
    import onnxruntime as ort

    c = CASES[name]
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, head_hidden_dim=c["head_hidden_dim"]).eval()
    path = folder / f"{name}.onnx"
    report = export_onnx(model, path, c["length"], what="logits")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    rows = []
    for b in batches:
        x = torch.randn(b, c["channels"], c["length"], generator=torch.Generator().manual_seed(1))
        xn = x.numpy()
        with torch.inference_mode():
            for _ in range(warmup):
                model(x)
                session.run(None, {"x": xn})
            t_pt, t_ort = [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                ref = model(x)
                t1 = time.perf_counter()
                got = session.run(None, {"x": xn})[0]
                t2 = time.perf_counter()
                t_pt.append(t1 - t0)
                t_ort.append(t2 - t1)
        diff = float((np.abs(got - ref.numpy()).max(1) / np.abs(ref.numpy()).max(1)).max())
        pt, ox = statistics.median(t_pt) / b * 1e3, statistics.median(t_ort) / b * 1e3
        rows.append({"preset": name, "input": f"{c['channels']}x{c['length']}", "batch": b,
                     "torch_ms_per_window": round(pt, 2), "onnxruntime_ms_per_window": round(ox, 2),
                     "speedup": round(pt / ox, 2), "max_rel_diff": diff, "repeats": repeats,
                     "torch_runs_ms": [round(t * 1e3, 1) for t in t_pt],
                     "ort_runs_ms": [round(t * 1e3, 1) for t in t_ort],
                     "export_check_max_rel_diff": report.max_rel_diff, "opset": report.opset,
                     "onnx_mb": round(path.stat().st_size / 2**20, 1), "export_s": report.seconds})
        print(f"{name} batch {b}: torch {pt:.2f} ms/window, onnxruntime {ox:.2f} ms/window ({pt / ox:.2f}x), "
              f"max rel diff {diff:.1e}", file=sys.stderr)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--presets", nargs="+", default=["emg", "ecg"], choices=sorted(CASES))
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--quick", action="store_true", help="3 repeats, 1 warm-up")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "onnx_cpu.json"))
    args = p.parse_args()
    repeats, warmup = (3, 1) if args.quick else (args.repeats, 5)
    torch.set_num_threads(args.threads)
    import onnx
    import onnxruntime
    import onnxscript

    with tempfile.TemporaryDirectory() as tmp:
        rows = [r for name in args.presets for r in bench(name, args.batches, args.threads, repeats, warmup, Path(tmp))]
    env = {**describe(), "threads": args.threads, "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
           "onnxscript": onnxscript.__version__, "physiowave": __version__, "quick": args.quick,
           "load_average_before": os.getloadavg()[0]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": env, "results": rows}, indent=2) + "\n")
    lines = ["# ONNX Runtime vs PyTorch, CPU inference latency per window", "",
             f"{label(env)}; onnxruntime with the same {args.threads} threads; Python {env['python']}, "
             f"onnxruntime {env['onnxruntime']}, onnx {env['onnx']}, onnxscript "
             f"{env['onnxscript']}; {env['date']}; medians of {repeats} repeats after {warmup} warm-up runs; load "
             f"average before {env['load_average_before']:.2f} (other jobs may share the machine).", "",
             "| preset | input | batch | PyTorch ms/window | ONNX Runtime ms/window | speed-up | max rel diff |",
             "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['preset']} | {r['input']} | {r['batch']} | {r['torch_ms_per_window']} | "
              f"{r['onnxruntime_ms_per_window']} | {r['speedup']} | {r['max_rel_diff']:.1e} |" for r in rows]
    lines += ["", "Models: the presets with a 5-class head (random weights), logits graph from `physiowave.export` "
              "(dynamo exporter, fp32, CPUExecutionProvider, default graph optimisations). max rel diff = "
              "max over windows of max|ORT − torch| / max|torch|."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
