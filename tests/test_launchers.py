"""The six launchers (ECG/*.sh, EMG/*.sh): syntax, and one tiny end-to-end run of each through torchrun.

Pretraining runs first; the fine-tuning launchers then start from its ``best_model.pth`` (PRETRAINED) and take
the architecture from that checkpoint. Every run uses 1 process, 1 epoch, CPU and a shrunken model, so the
whole file takes well under a minute. What is checked: exit status, output files, the "loaded N/M tensors"
report, and that ``args.json`` records the launcher's own flag values wherever the test did not override them.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

from physiowave.engine.args import TASKS, build_parser
from physiowave.models import PRESETS

ROOT = Path(__file__).resolve().parents[1]
LAUNCHERS = ("ECG/pretrain_ecg.sh", "ECG/finetune_ecg.sh", "ECG/cpsc_multilabel.sh", "ECG/shaoxing_multilabel.sh",
             "EMG/pretrain_emg.sh", "EMG/finetune_emg.sh")
SCRIPTS = ("pretrain.py", "finetune.py", "finetune_multilabel.py")  # in the order of TASKS
LENGTH = 256
SPLITS = {"train": 24, "val": 10, "test": 10}

# Overrides that shrink every run (the last value of a repeated flag wins).
RUN_FLAGS = ["--max_length", str(LENGTH), "--batch_size", "8", "--num_workers", "0", "--device", "cpu"]
ARCH_FLAGS = ["--embed_dim", "32", "--depth", "1", "--num_heads", "4", "--max_level", "2"]
HEAD_FLAGS = ["--head_hidden_dim", "16"]

# The paper's settings each launcher must pass (beyond the generic launcher-text ↔ args.json comparison).
INTENDED: dict[str, dict[str, Any]] = {
    "ECG/pretrain_ecg.sh": dict(model="ecg", mask_ratio=0.7, importance_ratio=0.7, lr=2e-5, grad_accumulation_steps=2,
                                masking_strategy="frequency_guided", weight_decay=1e-3, use_amp=True),
    "EMG/pretrain_emg.sh": dict(model="emg", mask_ratio=0.6, importance_ratio=0.6, lr=1e-4, grad_accumulation_steps=2,
                                weight_decay=0.01, warmup_epochs=10),
    "ECG/finetune_ecg.sh": dict(task_type="classification", num_classes=5, lr=2e-4, min_lr=1e-6, weight_decay=1e-3,
                                label_smoothing=0.1, pooling="mean", head_dropout=0.1),
    "EMG/finetune_emg.sh": dict(task_type="classification", num_classes=6, lr=2e-4, weight_decay=1e-3,
                                warmup_epochs=2, head_dropout=0.1),
    "ECG/cpsc_multilabel.sh": dict(task_type="multilabel", threshold=0.3, lr=1e-4, weight_decay=1e-4,
                                   head_dropout=0.2, label_smoothing=0.1),
    "ECG/shaoxing_multilabel.sh": dict(task_type="multilabel", threshold=0.3, lr=1e-4, weight_decay=1e-4,
                                       head_dropout=0.2, label_smoothing=0.1),
}


# --------------------------------------------------------------------------------------------------- helpers
def _write_h5(path: Path, n: int, channels: int, seed: int, label: np.ndarray | None = None) -> str:
    data = np.random.default_rng(seed).normal(size=(n, channels, LENGTH)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=data)
        if label is not None:
            f.create_dataset("label", data=label)
    return str(path)


def _single_labels(n: int, k: int) -> np.ndarray:
    return (np.arange(n) % k).astype(np.int64)  # every class present


def _multi_hot(n: int, k: int) -> np.ndarray:
    i, j = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    return (((i + j) % 3 == 0) | (j == i % k)).astype(np.float32)  # every label has positives and negatives


def _splits(folder: Path, channels: int, labels: Any, seed: int) -> dict[str, str]:
    """train/val/test files in ``folder``; ``labels(n)`` → label array or None."""
    folder.mkdir(parents=True, exist_ok=True)
    return {name: _write_h5(folder / f"{name}.h5", n, channels, seed + s, labels(n) if labels else None)
            for s, (name, n) in enumerate(SPLITS.items())}


def _launch(script: str, env: dict[str, str], extra: list[str]) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "NUM_GPUS": "1", "EPOCHS": "1", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
                "CUDA_VISIBLE_DEVICES": "", **env}  # 1 thread: 2 OpenMP threads on a busy 2-core box run ~50× slower
    proc = subprocess.run(["bash", str(ROOT / script), *extra], env=full_env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}"
    return proc


def _command(script: str) -> tuple[str, str]:
    """(Python script the launcher runs, the rest of its command line), continuation lines joined."""
    text = (ROOT / script).read_text().replace("\\\n", " ")
    for line in text.splitlines():
        words = line.split()
        if line.lstrip().startswith("#") or not set(words) & set(SCRIPTS):
            continue
        target = next(w for w in words if w in SCRIPTS)
        return target, line.split(f" {target} ", 1)[1]
    raise AssertionError(f"{script}: no line runs one of {SCRIPTS}")


def launcher_flags(script: str) -> dict[str, Any]:
    """Literal flags the launcher passes to its Python script → {name: True | str | [str, ...]}; values that
    come from shell variables are left out."""
    flags: dict[str, Any] = {}
    name = None
    for tok in shlex.split(_command(script)[1]):
        if tok.startswith("--"):
            name = tok[2:]
            flags[name] = True
        elif name is not None:
            flags[name] = tok if flags[name] is True else [*np.atleast_1d(flags[name]).tolist(), tok]
    return {k: v for k, v in flags.items() if "$" not in str(v)}


def _same(recorded: Any, literal: Any) -> bool:
    if literal is True:
        return recorded is True
    if isinstance(literal, list) or isinstance(recorded, list):
        return [str(v) for v in np.atleast_1d(recorded)] == list(np.atleast_1d(literal))
    if isinstance(recorded, (int, float)) and not isinstance(recorded, bool):
        return float(recorded) == pytest.approx(float(literal), rel=1e-12)
    return str(recorded) == literal


def _check_run(script: str, out: Path, extra: list[str], finetune: bool) -> dict[str, Any]:
    """Output files present; args.json holds the launcher's values for every flag the test did not pass."""
    latest = "latest_model.pth" if finetune else "latest_checkpoint.pth"
    names = ["args.json", "training_history.json", "best_model.pth", latest, "training_summary.txt"]
    names += ["test_results.json"] if finetune else []
    missing = [n for n in names if not (out / n).is_file()]
    assert not missing, f"{script}: missing outputs {missing} in {sorted(p.name for p in out.iterdir())}"
    args = json.loads((out / "args.json").read_text())
    overridden = {tok[2:] for tok in extra if tok.startswith("--")}
    wrong = {k: (v, args.get(k)) for k, v in launcher_flags(script).items()
             if k not in overridden and not _same(args.get(k), v)}
    assert not wrong, f"{script}: args.json differs from the launcher's flags (launcher, recorded): {wrong}"
    for key, value in INTENDED[script].items():
        assert key not in overridden, f"test bug: {key} is overridden"
        assert _same(args[key], value if isinstance(value, (list, bool)) else str(value)), (key, args[key], value)
    assert args["epochs"] == 1 and args["output_dir"] == str(out)
    history = json.loads((out / "training_history.json").read_text())
    assert history["epoch"] == [1]
    assert np.isfinite(history["train_loss"][0]) and np.isfinite(history["val_loss"][0])
    ckpt = torch.load(out / "best_model.pth", map_location="cpu", weights_only=False)
    assert ckpt["model_config"] == args["model_config"]
    return args


def _loaded_report(stdout: str) -> tuple[int, int]:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("loaded ") and " tensors from " in ln]
    assert len(lines) == 1, f"expected one 'loaded N/M tensors' line in stdout:\n{stdout[-2000:]}"
    n, m = lines[0].split()[1].split("/")
    return int(n), int(m)


# --------------------------------------------------------------------------------------------------- static checks
@pytest.mark.parametrize("script", LAUNCHERS)
def test_launcher_is_lf_and_parses(script: str) -> None:
    raw = (ROOT / script).read_bytes()
    assert b"\r" not in raw, f"{script}: has CR line endings (bash fails with '$'\\r': command not found')"
    assert raw.startswith(b"#!/usr/bin/env bash\n")
    proc = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    flags = launcher_flags(script)
    assert {"seed", "use_amp", "lr"} <= set(flags), f"{script}: unexpected flag parse {flags}"
    task = TASKS[SCRIPTS.index(_command(script)[0])]
    known = build_parser(task)._option_string_actions
    unknown = [f for f in flags if f"--{f}" not in known]
    assert not unknown, f"{script}: flags unknown to the {task} script: {unknown}"


def test_launcher_flags_parser() -> None:
    flags = launcher_flags("EMG/pretrain_emg.sh")
    assert flags["model"] == "emg"
    assert flags["use_amp"] is True and flags["mask_ratio"] == "0.6"
    assert "max_length" not in flags and "train_files" not in flags  # from shell variables
    assert [_command(s)[0] for s in LAUNCHERS] == ["pretrain.py", "finetune.py", "finetune_multilabel.py",
                                                   "finetune_multilabel.py", "pretrain.py", "finetune.py"]


# --------------------------------------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> dict[str, Path]:
    """Run both pretraining launchers once → {"ECG": output dir, "EMG": output dir}."""
    root = tmp_path_factory.mktemp("launch")
    outputs = {}
    for modality, script, channels in (("ECG", "ECG/pretrain_ecg.sh", 12), ("EMG", "EMG/pretrain_emg.sh", 8)):
        files = _splits(root / f"{modality}_pre", channels, None, seed=channels)
        out = root / f"{modality}_pre_out"
        extra = RUN_FLAGS + ARCH_FLAGS
        _launch(script, {"TRAIN_FILES": files["train"], "VAL_FILES": files["val"], "OUTPUT_DIR": str(out)}, extra)
        args = _check_run(script, out, extra, finetune=False)
        cfg = args["model_config"]
        shape = (cfg["embed_dim"], cfg["depth"], cfg["num_heads"], cfg["max_level"], cfg["in_channels"])
        assert shape == (32, 1, 4, 2, channels)  # the test's overrides won over the launcher's values
        preset = PRESETS[modality.lower()]  # the rest of the shape is the --model preset's
        assert [cfg[k] for k in ("wavelet_names", "wave_kernel_size", "patch_size")] == \
            [preset[k] for k in ("wavelet_names", "wave_kernel_size", "patch_size")]
        outputs[modality] = out
    return outputs


def test_pretrain_launchers(pretrained: dict[str, Path]) -> None:
    for modality, out in pretrained.items():
        summary = (out / "training_summary.txt").read_text()
        assert "pretrain run" in summary and "bf16" in summary  # --use_amp from the launcher
        ckpt = torch.load(out / "latest_checkpoint.pth", map_location="cpu", weights_only=False)
        assert ckpt["next_epoch"] == 1


FINETUNES = [
    ("ECG/finetune_ecg.sh", "ECG", 12, lambda n: _single_labels(n, 5)),
    ("ECG/cpsc_multilabel.sh", "ECG", 12, lambda n: _multi_hot(n, 9)),
    ("ECG/shaoxing_multilabel.sh", "ECG", 12, lambda n: _multi_hot(n, 4)),
    ("EMG/finetune_emg.sh", "EMG", 8, lambda n: _single_labels(n, 6)),
]


@pytest.mark.parametrize("script, modality, channels, labels", FINETUNES, ids=[f[0] for f in FINETUNES])
def test_finetune_launcher(script, modality, channels, labels, pretrained, tmp_path) -> None:
    files = _splits(tmp_path / "data", channels, labels, seed=channels + 1)
    out = tmp_path / "out"
    source = pretrained[modality] / "best_model.pth"
    extra = RUN_FLAGS + HEAD_FLAGS  # architecture: from the pretrained checkpoint
    proc = _launch(script, {"TRAIN_FILE": files["train"], "VAL_FILE": files["val"], "TEST_FILE": files["test"],
                            "PRETRAINED": str(source), "OUTPUT_DIR": str(out)}, extra)
    args = _check_run(script, out, extra, finetune=True)
    assert args["pretrained_path"] == str(source)
    pre_cfg = json.loads((pretrained[modality] / "args.json").read_text())["model_config"]
    for key in ("in_channels", "max_level", "wave_kernel_size", "wavelet_names", "patch_size", "embed_dim", "depth",
                "num_heads", "pos_embed_type"):
        assert args["model_config"][key] == pre_cfg[key], key
    # Every pretrained tensor fits the fine-tuning model; the classification head is the only new part.
    pre_state = torch.load(source, map_location="cpu", weights_only=False)["model_state_dict"]
    ft_state = torch.load(out / "best_model.pth", map_location="cpu", weights_only=False)["model_state_dict"]
    loaded, total = _loaded_report(proc.stdout)
    assert loaded == sum(k in ft_state and ft_state[k].shape == v.shape for k, v in pre_state.items())
    assert all(k in ft_state for k in pre_state if not k.startswith("task_heads."))  # every encoder tensor
    assert total == len(ft_state)
    new = {k for k in ft_state if k not in pre_state}
    assert any(k.startswith("task_heads.classification.") for k in new)
    # fine-tuning keeps the original MLP reconstruction head (unused); pretraining used the MAE decoder
    assert all(k.startswith(("task_heads.classification.", "task_heads.pretrain.")) for k in new)
    k = labels(1).shape[-1] if args["task_type"] == "multilabel" else int(INTENDED[script]["num_classes"])
    assert args["model_config"]["num_classes"] == k
    test = json.loads((out / "test_results.json").read_text())
    assert test["best_epoch"] == 1
    assert "pretrained: " + str(source) in (out / "training_summary.txt").read_text()
