"""The training engine through its entry points: real-data pretraining, multi-process evaluation, resume,
pretrained loading, linear probing and the one-line errors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from physiowave.checkpoint import read_checkpoint
from physiowave.engine import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--max_level", "2", "--wave_kernel_size", "8", "--wavelet_names", "db4", "--patch_size", "32", "--embed_dim",
        "32", "--depth", "1", "--num_heads", "4", "--num_workers", "0", "--device", "cpu"]


def _write(path: Path, x: np.ndarray, y: np.ndarray | None = None, label_key: str = "label") -> str:
    with h5py.File(path, "w") as f:
        f["data"] = x.astype(np.float32)
        if y is not None:
            f[label_key] = y
    return str(path)


def _toy(n: int, seed: int, C: int = 4, T: int = 256, K: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Class k = a sine of frequency k+1 on every channel, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, n)
    t = np.arange(T) / 64
    x = rng.normal(0, 0.3, (n, C, T)) + np.sin(2 * np.pi * (y[:, None, None] + 1) * t)
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("toy")
    files = {}
    for name, n, seed in (("train", 60, 0), ("val", 23, 1), ("test", 29, 2)):
        files[name] = _write(d / f"{name}.h5", *_toy(n, seed))
    return files


@pytest.fixture(scope="module")
def pretrained(toy, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pre")
    assert main("pretrain",
                ["--train_files", toy["train"], "--max_length", "256", "--epochs", "1", "--batch_size", "16",
                             "--mask_ratio", "0.5", "--output_dir", str(out), *TINY]) == 0
    return out / "best_model.pth"


def _history(out: Path) -> dict:
    return json.loads((out / "training_history.json").read_text())


def _errors(stderr: str) -> list[str]:
    """Lines of stderr that are error reports (tqdm bars share stderr)."""
    lines = stderr.replace("\r", "\n").splitlines()
    return ([line[line.index("error: "):] for line in lines if "error: " in line]
            + [line for line in lines if "Traceback" in line])


def _run(*args: str, env_extra: dict | None = None, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, **kw)


# ------------------------------------------------------------------------------------------------- real data

def _private_keys(obj, where: str = "") -> list[str]:
    """Keys starting with '_' anywhere in nested dicts/lists: internal values that leaked into a saved file."""
    if isinstance(obj, dict):
        return [f"{where}/{k}" for k in obj if str(k).startswith("_")] + [
            p for k, v in obj.items() for p in _private_keys(v, f"{where}/{k}")]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in _private_keys(v, f"{where}[{i}]")]
    return []


def test_pretraining_loss_decreases_on_real_ecg(shared, tmp_path):
    import scipy.io

    mats = sorted((shared / "data/real/torch_ecg_cinc2021").glob("*.mat"))
    x = np.stack([scipy.io.loadmat(m)["val"][:, :2048].astype(np.float32) / 1000 for m in mats])  # [50, 12, 2048] mV
    x = (x - x.mean(-1, keepdims=True)) / (x.std(-1, keepdims=True) + 1e-6)
    train, val = _write(tmp_path / "tr.h5", x[:40]), _write(tmp_path / "va.h5", x[40:])
    out = tmp_path / "out"
    assert main("pretrain", ["--train_files", train, "--val_files", val, "--max_length", "1024", "--patch_size", "64",
                             "--max_level", "2", "--wave_kernel_size", "8", "--wavelet_names", "db4", "--embed_dim",
                             "32", "--depth", "1", "--num_heads", "4", "--batch_size", "8", "--epochs", "4", "--lr",
                             "2e-3", "--warmup_epochs", "1", "--mask_ratio", "0.5", "--num_workers", "0", "--device",
                             "cpu", "--output_dir", str(out)]) == 0
    h = _history(out)
    assert h["val_loss"][-1] < 0.9 * h["val_loss"][0], h["val_loss"]
    assert h["train_loss"][-1] < h["train_loss"][0], h["train_loss"]
    for name in ("args.json", "latest_checkpoint.pth", "best_model.pth", "training_summary.txt"):
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").iterdir())
    ckpt = torch.load(out / "latest_checkpoint.pth", weights_only=True)  # plain torch.load, no allow-list needed
    assert ckpt["epoch"] == 3 and isinstance(ckpt["args"],
                                             dict) and "encoder.blocks.0.attn.qkv.weight" in ckpt["model_state_dict"]
    saved = json.loads((out / "args.json").read_text())
    assert _private_keys(saved) == [] and _private_keys({k: v for k, v in ckpt.items() if "state_dict" not in k}) == []


# ------------------------------------------------------------------------------------------------- distributed
def test_two_process_evaluation_equals_one_process(toy, pretrained, tmp_path):
    """Batch 4 divides neither 23 (val) nor 29 (test) nor their halves: metrics of the whole sets, gathered."""
    ft = tmp_path / "ft"
    assert main("finetune",
                ["--train_file", toy["train"], "--val_file", toy["val"], "--epochs", "1", "--batch_size", "16",
                             "--pretrained_path", str(pretrained), "--output_dir", str(ft), "--num_workers", "0",
                             "--device", "cpu"]) == 0
    common = ["finetune.py", "--train_file", toy["train"], "--val_file", toy["val"], "--test_file", toy["test"],
              "--resume", str(ft / "best_model.pth"), "--eval", "--batch_size", "2", "--num_workers", "0", "--device",
              "cpu"]
    one = _run(*common, "--output_dir", str(tmp_path / "one"), timeout=120)
    assert one.returncode == 0, one.stderr[-2000:]
    two = _run("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *common, "--output_dir",
               str(tmp_path / "two"), timeout=180)
    assert two.returncode == 0, two.stderr[-2000:]
    for name in ("val_results.json", "test_results.json"):
        a = json.loads((tmp_path / "one" / name).read_text())
        b = json.loads((tmp_path / "two" / name).read_text())
        assert a["confusion_matrix"] == b["confusion_matrix"]
        assert sum(map(sum, a["confusion_matrix"])) == (23 if name.startswith("val") else 29)
        for k in ("acc", "balanced_acc", "kappa", "macro_f1", "weighted_f1", "auroc"):
            assert a[k] == pytest.approx(b[k], abs=1e-12), k
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


# ------------------------------------------------------------------------------------------------- resume
def test_killed_and_resumed_run_equals_uninterrupted(toy, tmp_path):
    args = ["pretrain.py", "--train_files", toy["train"], "--val_files", toy["val"], "--max_length", "256", "--epochs",
            "5", "--batch_size", "8", "--mask_ratio", "0.5", "--masking_strategy", "random", "--warmup_epochs", "1",
            *TINY]
    full = _run(*args, "--output_dir", str(tmp_path / "full"), timeout=300)
    assert full.returncode == 0, full.stderr[-2000:]

    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, *args, "--output_dir", str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = out / "latest_checkpoint.pth"
    deadline = time.time() + 240
    while not latest.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(0.3)  # into the second epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done_before = torch.load(latest, weights_only=True)["epoch"]
    assert done_before < 4
    resumed = _run(*args, "--output_dir", str(out), "--resume", "auto", timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    a = torch.load(tmp_path / "full" / "latest_checkpoint.pth", weights_only=True)
    b = torch.load(latest, weights_only=True)
    for k, v in a["model_state_dict"].items():
        assert torch.equal(v, b["model_state_dict"][k]), k
    ha, hb = _history(tmp_path / "full"), _history(out)
    for k in ("train_loss", "val_loss", "val_shape_nmse", "learning_rates"):
        assert ha[k] == hb[k], k


def _signal_tree(pid: int, sig: int) -> None:
    """Send ``sig`` to ``pid`` and every descendant (torchrun starts its workers in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo = [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("processes", [1, 2])
def test_killed_inside_an_epoch_and_resumed_from_a_step_checkpoint_equals_uninterrupted(processes, toy, tmp_path):
    """--save_every_steps: the run is frozen (SIGSTOP to it and its workers) once its latest checkpoint is a
    mid-epoch one, killed, and resumed from that step; weights and history end bit-identical to an uninterrupted
    run, with one process and with two (whose partial epoch metrics are carried by rank 0)."""
    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if processes > 1 else []
    args = [*launch, "finetune.py", "--train_file", toy["train"], "--val_file", toy["val"], "--epochs", "3",
            "--batch_size", "4" if processes == 1 else "2", "--save_every_steps", "2", "--grad_accumulation_steps", "2",
            "--use_augmentation", *TINY]
    full = _run(*args, "--output_dir", str(tmp_path / "full"), timeout=300)
    assert full.returncode == 0, full.stderr[-2000:]

    out = tmp_path / "killed"
    latest = out / "latest_model.pth"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, *args, "--output_dir", str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, position = time.time() + 240, None
    while time.time() < deadline and proc.poll() is None:
        if latest.exists():
            _signal_tree(proc.pid, signal.SIGSTOP)
            ckpt = torch.load(latest, weights_only=True)
            if ckpt["micro_in_epoch"] > 0 and ckpt["next_epoch"] >= 1:
                position = (ckpt["next_epoch"], ckpt["micro_in_epoch"])
                break
            _signal_tree(proc.pid, signal.SIGCONT)
        time.sleep(0.005)
    _signal_tree(proc.pid, signal.SIGKILL)
    proc.wait()
    assert position is not None, "never saw a mid-epoch checkpoint"
    ckpt = torch.load(latest, weights_only=True)  # a stopped process may have renamed one more file before it froze
    position = (ckpt["next_epoch"], ckpt["micro_in_epoch"])
    assert position[1] > 0, "killed just after an epoch ended"
    assert not (out / "test_results.json").exists() and len(_history(out)["epoch"]) == position[0]
    resumed = _run(*args, "--output_dir", str(out), "--resume", "auto", timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"step {position[1]} of epoch {position[0] + 1}" in resumed.stdout, resumed.stdout

    a = torch.load(tmp_path / "full" / "latest_model.pth", weights_only=True)
    b = torch.load(latest, weights_only=True)
    for k, v in a["model_state_dict"].items():
        assert torch.equal(v, b["model_state_dict"][k]), k
    ha, hb = _history(tmp_path / "full"), _history(out)
    for k in ("train_loss", "train_acc", "val_loss", "val_acc", "learning_rates"):
        assert ha[k] == pytest.approx(hb[k], rel=1e-12, abs=0), k


def test_nonfinite_loss_stops_and_keeps_the_last_checkpoint(toy, tmp_path, capsys, monkeypatch):
    import importlib
    # the run continues on other data (a resume refuses that since it changes the run; here it is the way to put a
    # NaN into epoch 2)
    monkeypatch.setattr(importlib.import_module("physiowave.engine.model_config"), "check_same_trajectory",
                        lambda *a: None)
    out = tmp_path / "nan"
    base = ["--max_length", "256", "--batch_size", "16", "--output_dir", str(out), *TINY]
    assert main("pretrain", ["--train_files", toy["train"], "--epochs", "1", *base]) == 0
    x, _ = _toy(20, 5)
    x[7, 0, 10] = np.nan
    bad = _write(tmp_path / "bad.h5", x)
    assert main("pretrain", ["--train_files", bad, "--epochs", "3", "--resume", "auto", "--no-check_data", *base]) == 1
    err = _errors(capsys.readouterr().err)
    assert len(err) == 1 and "non-finite loss" in err[0] and "(after epoch 1), is intact" in err[0], err
    assert read_checkpoint(out / "latest_checkpoint.pth")["epoch"] == 0


# ------------------------------------------------------------------------------------------------- fine-tuning
def test_finetune_loads_every_encoder_tensor(toy, pretrained, tmp_path, capsys):
    out = tmp_path / "ft"
    assert main("finetune", ["--train_file", toy["train"], "--val_file", toy["val"], "--epochs", "1", "--lr", "0",
                             "--scheduler", "none", "--pretrained_path", str(pretrained), "--output_dir", str(out),
                             "--num_workers", "0", "--device", "cpu"]) == 0
    assert "tensors from" in capsys.readouterr().out
    pre = read_checkpoint(pretrained)["model_state_dict"]
    tuned = read_checkpoint(out / "latest_model.pth")["model_state_dict"]
    encoder = [k for k in tuned if not k.startswith("task_heads.")]
    assert encoder and all(torch.equal(tuned[k], pre[k]) for k in encoder)  # lr 0: loaded values, untouched
    args = json.loads((out / "args.json").read_text())
    assert args["model_config"]["depth"] == 1 and args["model_config"]["embed_dim"] == 32  # taken from the checkpoint


def test_linear_probe_leaves_encoder_bit_identical_and_learns(toy, pretrained, tmp_path):
    out = tmp_path / "probe"
    assert main("finetune", ["--train_file", toy["train"], "--val_file", toy["val"], "--test_file", toy["test"],
                             "--epochs", "15", "--lr", "1e-2", "--warmup_epochs", "1", "--freeze_encoder",
                             "--pretrained_path", str(pretrained), "--output_dir", str(out), "--num_workers", "0",
                             "--device", "cpu", "--label_smoothing", "0"]) == 0
    pre = read_checkpoint(pretrained)["model_state_dict"]
    best = read_checkpoint(out / "best_model.pth")
    sd = best["model_state_dict"]
    assert all(torch.equal(sd[k], pre[k]) for k in sd if not k.startswith("task_heads."))
    head = [k for k in sd if k.startswith("task_heads.classification.")]
    cfg = best["model_config"]
    width = 32 * (cfg["max_level"] + 1) * cfg["in_channels"]  # bands pooling: one D-wide mean per band row
    assert [tuple(sd[k].shape) for k in head if k.endswith("weight")] == [(width,), (3, width)]  # LayerNorm + Linear
    test = json.loads((out / "test_results.json").read_text())
    assert test["acc"] > 0.6  # chance is 1/3


def test_multilabel_thresholds_tuned_on_val_and_applied_to_test(tmp_path):
    rng = np.random.default_rng(0)
    x, y = _toy(80, 3)
    multi = np.eye(3, dtype=np.float32)[y]
    multi[rng.random(80) < 0.2, 2] = 1.0
    files = {s: _write(tmp_path / f"{s}.h5", x[i::2], multi[i::2], "labels") for i, s in enumerate(("train", "val"))}
    out = tmp_path / "ml"
    assert main("multilabel", ["--train_file", files["train"], "--val_file", files["val"], "--test_file", files["val"],
                               "--epochs", "2", "--max_length", "256", "--batch_size", "8", "--use_class_weights",
                               "--output_dir", str(out), *TINY]) == 0
    best = read_checkpoint(out / "best_model.pth")
    test = json.loads((out / "test_results.json").read_text())
    assert test["thresholds"] == pytest.approx(best["thresholds"]) and len(test["thresholds"]) == 3
    assert test["tuned"]["f1_macro"] >= test["f1_macro"] - 1e-9  # tuned on this very set: never worse
    for k in ("precision_micro", "recall_macro", "auroc_macro", "ap_micro", "hamming_loss", "jaccard_macro"):
        assert k in test
    assert len(test["per_class"]) == 3


# ------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("case", ["missing_file", "wrong_key", "length_mismatch", "contradicting_flag",
                                  "missing_pretrained", "bad_length"])
def test_bad_input_gives_one_line_error(case, toy, pretrained, tmp_path, capsys):
    x, y = _toy(10, 0)
    argv = ["--train_file", toy["train"], "--epochs", "1", "--output_dir", str(tmp_path / "o"), "--num_workers", "0",
            "--device", "cpu"]
    expect = {"missing_file": "nothere.h5", "wrong_key": "'signals'", "length_mismatch": "10",
              "contradicting_flag": "--depth 6", "missing_pretrained": "nope.pth", "bad_length": "--max_length"}[case]
    if case == "missing_file":
        argv[1] = str(tmp_path / "nothere.h5")
    elif case == "wrong_key":
        argv += ["--data_key", "signals"]
        with h5py.File(tmp_path / "k.h5", "w") as f:
            f["signals_x"] = x
            f["label"] = y
        argv[1] = str(tmp_path / "k.h5")
    elif case == "length_mismatch":
        argv[1] = _write(tmp_path / "m.h5", x, y[:7])
    elif case == "contradicting_flag":
        argv += ["--pretrained_path", str(pretrained), "--depth", "6"]
    elif case == "missing_pretrained":
        argv += ["--pretrained_path", str(tmp_path / "nope.pth")]
    elif case == "bad_length":
        argv += ["--max_length", "250"]
    assert main("finetune", argv) == 1
    err = _errors(capsys.readouterr().err)
    assert len(err) == 1 and expect in err[0], err


def test_detach_target_stops_gradient_through_the_target():
    from physiowave import PhysioWave
    from physiowave.engine.args import parse_args
    from physiowave.engine.tasks import PretrainTask

    model = PhysioWave(in_channels=4, max_level=1, wave_kernel_size=8, wavelet_names=["db4"], patch_size=32,
                       embed_dim=32, depth=1, num_heads=4, dropout=0.0, objective="original")
    x = torch.randn(2, 4, 128)
    taps = model.wavelet_decomp.selector.wavelet_filters[0].high_filter.weight
    grads = []
    for detach in (False, True):
        args = parse_args("pretrain", ["--train_files", "x.h5", "--mask_ratio", "0.5", "--masking_strategy", "random",
                                       "--objective", "original", *(["--detach_target"] if detach else [])])
        loss, _ = PretrainTask(args).wrap(model)(x, torch.Generator().manual_seed(0))
        grads.append(torch.autograd.grad(loss, taps)[0])
    # the same loss value either way; only the gradient path through the target differs
    assert not torch.allclose(grads[0], grads[1])
