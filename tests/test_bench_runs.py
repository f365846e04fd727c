"""benchmarks/bench_runs.py: the FLOPs per training window that the FLOP-bound limit of a whole run divides by."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_runs.py"
TINY = dict(in_channels=3, max_level=2, wave_kernel_size=8, wavelet_names=["db4"], patch_size=32, embed_dim=32,
            depth=1, num_heads=4, num_classes=2)


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_runs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_runs"] = module
    spec.loader.exec_module(module)
    return module


def test_step_flops_count_cpu_attention_per_window(bench):
    from physiowave.engine.model_config import build_model

    config = {**build_model(TINY).config}
    two = bench.step_flops({"model_config": config, "max_length": 128}, pretrain=False, batch=2)
    four = bench.step_flops({"model_config": config, "max_length": 128}, pretrain=False, batch=4)
    # a plain FlopCounterMode counts no CPU attention; the front-end's cross-scale and the encoder's attention are
    # counted here, and every count is per window, whatever the batch
    assert two["attention"] > 0 and two["matmul_conv"] > 0
    assert two["total"] == pytest.approx(two["attention"] + two["matmul_conv"])
    assert four["total"] == pytest.approx(two["total"]) and four["attention"] == pytest.approx(two["attention"])
    longer = bench.step_flops({"model_config": config, "max_length": 256}, pretrain=False, batch=2)
    assert longer["attention"] > 2.5 * two["attention"]  # quadratic in length (tokens and time steps)
