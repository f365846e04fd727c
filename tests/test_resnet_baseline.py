"""benchmarks/ptbxl_resnet1d.py: the supervised 1-D ResNet baseline of the PTB-XL protocol, on tiny synthetic files
(each label adds a sinusoid of its own frequency, so the task is learnable in a few steps)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from physiowave.benchmark import read_records
from physiowave.data.fractions import label_fraction_indices

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "ptbxl_resnet1d.py"
FS, C, K = 100, 12, 3
FREQS = (4.0, 11.0, 23.0)
FLAGS = ["--epochs", "3", "--batch_size", "8", "--lr", "1e-2", "--width", "8", "--label_fraction", "0.5",
         "--seed", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("ptbxl_resnet1d", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _signals(rng, labels: np.ndarray, length: int) -> np.ndarray:
    t = np.arange(length) / FS
    x = 0.3 * rng.standard_normal((len(labels), C, length))
    for k, f in enumerate(FREQS):
        phase = rng.uniform(0, 2 * np.pi, (len(labels), C, 1))
        x += labels[:, k, None, None] * np.sin(2 * np.pi * f * t + phase)
    return x.astype(np.float32)


def _write(path: Path, data, labels, record_id, group_id=None) -> Path:
    with h5py.File(path, "w") as f:
        f["data"] = data
        f["label"] = labels
        f["record_id"] = np.asarray(record_id, dtype=object).astype("S")
        f["start"] = np.zeros(len(data), dtype=np.int64)
        if group_id is not None:
            f["group_id"] = np.asarray(group_id, dtype=object).astype("S")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """train.h5: 160 whole 10 s records of 80 patients (group_id); val/test.h5: 30 records x 3 windows of 2.5 s."""
    d = tmp_path_factory.mktemp("ptbxl_resnet")
    rng = np.random.default_rng(0)
    n = 160
    labels = (rng.random((n, K)) < 0.4).astype(np.float32)
    _write(d / "train.h5", _signals(rng, labels, 1000), labels, [f"tr{i}" for i in range(n)],
           [f"p{i // 2}" for i in range(n)])
    for split in ("val", "test"):
        recs = (rng.random((30, K)) < 0.4).astype(np.float32)
        win = np.repeat(recs, 3, axis=0)
        _write(d / f"{split}.h5", _signals(rng, win, 250), win, np.repeat([f"{split}{i}" for i in range(30)], 3))
    return d


def _flags(files: Path, out: Path, *extra: str) -> list[str]:
    return ["--train_file", str(files / "train.h5"), "--val_file", str(files / "val.h5"),
            "--test_file", str(files / "test.h5"), "--output_dir", str(out), *FLAGS, *extra]


@pytest.fixture(scope="module")
def finished(files, tmp_path_factory):
    """An uninterrupted run through the command line, as the protocol runner starts it."""
    out = tmp_path_factory.mktemp("run") / "cell"
    proc = subprocess.run([sys.executable, str(SCRIPT), *_flags(files, out)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_a_run_writes_what_the_runner_reads_and_learns(finished):
    for name in ("args.json", "history.json", "latest.pt", "best_model.pt", "test_records.npz", "test_results.json"):
        assert (finished / name).is_file(), name
    from physiowave.benchmark import cell_state

    assert cell_state(finished) == "done"
    rec = read_records(finished / "test_records.npz")
    assert rec.probs.shape == (30, K) and rec.labels.shape == (30, K)
    res = json.loads((finished / "test_results.json").read_text())
    assert res["record"]["records"] == 30
    assert res["record"]["auroc_macro"] > 0.8, res
    history = json.loads((finished / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3] and all("val_record_auroc_macro" in h for h in history)
    best = max(range(3), key=lambda i: (history[i]["val_record_auroc_macro"], -i))  # ties: the earlier epoch
    assert res["best_epoch"] == best + 1
    assert res["val_record_auroc_macro"] == pytest.approx(history[best]["val_record_auroc_macro"])


def test_the_fraction_keeps_label_fraction_indices_by_patient(finished, files):
    with h5py.File(files / "train.h5", "r") as f:
        labels, groups = f["label"][:], f["group_id"][:].astype(str)
    keep = label_fraction_indices(labels, 0.5, 1, groups)
    args = json.loads((finished / "args.json").read_text())
    assert args["by"] == "group_id"
    assert args["train_samples"] == len(keep) and args["train_samples_of"] == 160
    assert args["train_samples"] == 2 * len(args["train_chosen"])  # whole patients (2 records each) were drawn
    assert args["train_chosen"] == sorted(np.unique(groups[keep]).tolist())
    assert args["parameters"] > 0


def test_a_killed_run_resumes_to_the_uninterrupted_result(script, finished, files, tmp_path, monkeypatch, capsys):
    """Stopped after epoch 1 (in this process, to save the interpreter start-ups), then continued with --resume
    auto: the same best weights, test probabilities and losses as the uninterrupted command-line run."""
    out = tmp_path / "cell"
    monkeypatch.setenv("PTBXL_RESNET_STOP_AFTER_EPOCH", "1")
    with pytest.raises(SystemExit) as stop:
        script.main(_flags(files, out))
    assert stop.value.code == 3 and (out / "latest.pt").is_file() and not (out / "test_results.json").exists()
    monkeypatch.delenv("PTBXL_RESNET_STOP_AFTER_EPOCH")
    capsys.readouterr()
    assert script.main(_flags(files, out)) != 0  # an unfinished run is not restarted without --resume
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume auto" in err[0], err
    assert script.main(_flags(files, out, "--resume", "auto")) == 0
    assert "resuming" in capsys.readouterr().out
    a = torch.load(finished / "best_model.pt", weights_only=False)
    b = torch.load(out / "best_model.pt", weights_only=False)
    assert a["epoch"] == b["epoch"]
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    ra, rb = read_records(finished / "test_records.npz"), read_records(out / "test_records.npz")
    np.testing.assert_array_equal(ra.probs, rb.probs)
    ha, hb = (json.loads((d / "history.json").read_text()) for d in (finished, out))
    assert [h["train_loss"] for h in ha] == [h["train_loss"] for h in hb]


def test_a_finished_folder_is_refused_without_resume(script, finished, files, capsys):
    before = (finished / "test_results.json").stat().st_mtime_ns
    assert script.main(_flags(files, finished)) != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(finished) in lines[0] and "finished" in lines[0], lines
    assert (finished / "test_results.json").stat().st_mtime_ns == before


@pytest.mark.parametrize("case", ["missing_file", "missing_dataset", "label_shape"])
def test_bad_inputs_fail_in_one_line_naming_the_file(script, files, tmp_path, capsys, case):
    val = files / "val.h5"
    if case == "missing_file":
        val = tmp_path / "nope.h5"
    elif case == "missing_dataset":
        with h5py.File(files / "val.h5", "r") as f:
            val = _write(tmp_path / "val.h5", f["data"][:], f["label"][:], f["record_id"][:])
        with h5py.File(val, "a") as f:
            del f["record_id"]
    else:
        with h5py.File(files / "val.h5", "r") as f:
            val = _write(tmp_path / "val.h5", f["data"][:], f["label"][:, :2], f["record_id"][:])
    rc = script.main(["--train_file", str(files / "train.h5"), "--val_file", str(val), "--test_file",
                      str(files / "test.h5"), "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and str(val) in err[0], err
    assert {"missing_file": "no such file", "missing_dataset": "'record_id'", "label_shape": "labels"}[case] in err[0]
    assert not (tmp_path / "out" / "latest.pt").exists()


def test_the_crops_depend_only_on_seed_and_epoch(script):
    a, b = script.crops(50, 1000, 250, 3, 7), script.crops(50, 1000, 250, 3, 7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], script.crops(50, 1000, 250, 3, 8)[1])
    assert a[1].min() >= 0 and a[1].max() <= 750


def test_the_network_takes_any_window_length(script):
    net = script.ResNet1d(C, K, width=8).eval()
    assert net(torch.randn(2, C, 250)).shape == (2, K) and net(torch.randn(2, C, 1000)).shape == (2, K)
