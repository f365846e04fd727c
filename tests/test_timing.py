"""Where a run's time goes: the engine's phase clock and the ``timing.json`` every training run writes."""
from __future__ import annotations

import json
import time

import h5py
import numpy as np
import pytest

from physiowave.engine.main import main
from physiowave.engine.timing import PHASES, PhaseClock

TINY = ["--max_level", "2", "--wave_kernel_size", "8", "--wavelet_names", "db4", "--patch_size", "32", "--embed_dim",
        "32", "--depth", "1", "--num_heads", "4", "--num_workers", "0", "--device", "cpu"]


def test_phase_clock_sums_phases_and_leaves_the_rest_as_other():
    clock = PhaseClock()
    with clock.phase("eval"):
        time.sleep(0.05)
    clock.add("step", 0.5)
    time.sleep(0.02)
    clock.train_samples = 100
    r = clock.report()
    assert 0.05 <= r["eval"] < 0.5 and r["step"] == 0.5
    assert r["train_samples_per_step_s"] == pytest.approx(200.0)
    # the added 0.5 s never ran, so the phases exceed the wall time and nothing is left over
    assert r["other"] == 0.0 and r["train_samples_per_wall_s"] == pytest.approx(100 / r["wall_s"])
    with pytest.raises(KeyError, match="unknown phase"):
        clock.add("forward", 1.0)


def test_a_phase_inside_another_counts_once_as_the_inner_phase():
    clock = PhaseClock()
    mark = clock.mark()
    with clock.phase("data"):
        time.sleep(0.03)
        with clock.phase("features"):
            time.sleep(0.1)
    clock.add_since("setup", mark)
    r = clock.report()
    assert r["features"] >= 0.1 and 0.03 <= r["data"] < 0.1
    assert r["setup"] < 0.02  # everything since the mark was timed by the phases
    assert sum(r[p] for p in PHASES) <= r["wall_s"] + 1e-6


def _files(tmp_path):
    rng = np.random.default_rng(0)
    files = {}
    for name, n in (("train", 40), ("val", 16), ("test", 16)):
        with h5py.File(tmp_path / f"{name}.h5", "w") as f:
            f["data"] = rng.standard_normal((n, 4, 256)).astype(np.float32)
            f["label"] = rng.integers(0, 3, n)
        files[name] = str(tmp_path / f"{name}.h5")
    return files


def test_a_run_writes_where_its_time_went(tmp_path):
    files = _files(tmp_path)
    out = tmp_path / "run"
    assert main("finetune", ["--train_file", files["train"], "--val_file", files["val"], "--test_file",
                             files["test"], "--epochs", "2", "--batch_size", "8", "--output_dir", str(out),
                             *TINY]) == 0
    timing = json.loads((out / "timing.json").read_text())
    assert set(PHASES) <= set(timing)
    assert timing["train_samples"] == 2 * 40  # both epochs, every training window once
    for phase in ("setup", "step", "eval", "checkpoint", "test"):
        assert timing[phase] > 0, phase
    assert sum(timing[p] for p in PHASES) <= timing["wall_s"] + 1e-6
    assert timing["train_samples_per_step_s"] == pytest.approx(80 / timing["step"])
    history = json.loads((out / "training_history.json").read_text())
    assert len(history["time_step"]) == 2 and sum(history["time_step"]) == pytest.approx(timing["step"])
    assert sum(history["time_eval"]) == pytest.approx(timing["eval"])
    assert all(history["epoch_time"][i] >= history["time_step"][i] + history["time_eval"][i] for i in range(2))


def test_a_probe_times_its_feature_passes_as_features(tmp_path):
    files = _files(tmp_path)
    encoder, out = tmp_path / "encoder", tmp_path / "probe"
    assert main("finetune", ["--train_file", files["train"], "--epochs", "1", "--batch_size", "8",
                             "--output_dir", str(encoder), *TINY]) == 0
    assert main("finetune", ["--train_file", files["train"], "--val_file", files["val"], "--test_file",
                             files["test"], "--epochs", "2", "--batch_size", "8", "--output_dir", str(out),
                             "--freeze_encoder", "--pretrained_path", str(encoder / "latest_model.pth"),
                             "--max_length", "128", *TINY]) == 0
    timing = json.loads((out / "timing.json").read_text())
    history = json.loads((out / "training_history.json").read_text())
    # random 128-sample crops of 256: training features every epoch, on top of the validation and test ones
    assert all(t > 0 for t in history["time_features"]) and timing["features"] > sum(history["time_features"])
    assert timing["data"] < timing["features"]  # the loop's wait no longer holds the encoder passes
    assert sum(timing[p] for p in PHASES) <= timing["wall_s"] + 1e-6
