"""benchmarks/bench_model.py: counted FLOPs, the GPU peak table, and when ratios against the original are printed."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_model.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_step_flops_counts_matmuls_and_cpu_attention(bench):
    q, k, v = (torch.randn(2, 3, 16, 8) for _ in range(3))
    w = torch.randn(8, 5)
    B, H, N, d = q.shape
    flops = bench.step_flops(lambda: F.scaled_dot_product_attention(q, k, v) @ w)
    assert flops == 4 * B * H * N * N * d + 2 * B * H * N * d * 5


def test_gpu_peaks_match_the_most_specific_name(bench):
    assert bench.bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bench.bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bench.bf16_peak_tflops("NVIDIA H200") == 989.0
    assert bench.bf16_peak_tflops("Tesla T4") is None


def test_ratios_only_for_the_originals_protocol(bench):
    reference = bench.REFERENCE["Intel Xeon, 2 CPUs, AMX"]
    row = dict(preset="emg", mode="train", device="cpu", batch=8, variant="eager", samples_per_s=6.18,
               peak_rss_gib=1.135)
    assert bench.ratios(row, reference) == {"speedup_vs_original": 2.0, "memory_vs_original": 0.5}
    for change in (dict(batch=64), dict(variant="compile"), dict(device="cuda"), dict(mode="pretrain")):
        assert bench.ratios({**row, **change}, reference) == {}
    assert bench.ratios(row, None) == {}


def test_a_step_row_counts_flops_per_sample(bench):
    rows = [bench.run_one("emg", "infer", "fp32", "cpu", steps=1, warmup=0, batch=b) for b in (1, 2)]
    assert rows[0]["gflops_per_step"] > 1
    assert rows[1]["gflops_per_step"] == pytest.approx(2 * rows[0]["gflops_per_step"], rel=1e-3)
    assert rows[1]["achieved_tflops"] == pytest.approx(rows[1]["gflops_per_step"] / 1e3 / rows[1]["median_step_s"],
                                                       rel=0.01)
