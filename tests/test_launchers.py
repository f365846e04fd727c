"""The six launchers (ECG/*.sh, EMG/*.sh): syntax, the configuration each resolves with ``--dry_run`` (recipe,
parameter count, every value the recipe sets), and one tiny end-to-end run of each through torchrun.

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

# The published configuration each launcher runs with its default recipe (paper), written out here rather than
# read from physiowave/engine/recipes.py: model settings (MODEL_KEYS) are checked in the model configuration.
MODEL_KEYS = ("input_norm", "objective", "decoder")
_PAPER_PRE = dict(input_norm="none", objective="original", decoder="mlp", masking_strategy="frequency_guided_original",
                  betas=[0.9, 0.95], scheduler="cosine", min_lr=0.0, use_amp=True, save_freq=10, seed=42)
_PAPER_FT = dict(input_norm="none", objective="original", pooling="mean", betas=[0.9, 0.999], scheduler="cosine",
                 min_lr=0.0, use_amp=True, seed=42)
_PAPER_ML = dict(_PAPER_FT, task_type="multilabel", epochs=10, lr=1e-4, weight_decay=1e-4, grad_clip=1.0, batch_size=16,
                 warmup_epochs=5, threshold=0.3, head_hidden_dim=512, head_dropout=0.2, label_smoothing=0.0)
INTENDED: dict[str, dict[str, Any]] = {
    "ECG/pretrain_ecg.sh": dict(_PAPER_PRE, model="ecg", max_length=2048, batch_size=16, grad_accumulation_steps=2,
                                epochs=20, lr=2e-5, weight_decay=1e-3, warmup_epochs=5, grad_clip=1.0, mask_ratio=0.7,
                                importance_ratio=0.7),
    "EMG/pretrain_emg.sh": dict(_PAPER_PRE, model="emg", max_length=2048, batch_size=32, grad_accumulation_steps=2,
                                epochs=30, lr=1e-4, weight_decay=0.01, warmup_epochs=10, grad_clip=1.0, mask_ratio=0.6,
                                importance_ratio=0.6),
    "ECG/finetune_ecg.sh": dict(_PAPER_FT, model="ecg", task_type="classification", num_classes=5, epochs=20, lr=2e-4,
                                weight_decay=1e-3, grad_clip=1.0, batch_size=16, warmup_epochs=5, head_hidden_dim=1024,
                                head_dropout=0.1, label_smoothing=0.1),
    "EMG/finetune_emg.sh": dict(_PAPER_FT, model="emg", task_type="classification", num_classes=6, epochs=5, lr=2e-4,
                                weight_decay=1e-3, grad_clip=1.0, batch_size=32, warmup_epochs=2, head_hidden_dim=512,
                                head_dropout=0.1, label_smoothing=0.1),
    "ECG/cpsc_multilabel.sh": dict(_PAPER_ML, model="ecg"),
    "ECG/shaoxing_multilabel.sh": dict(_PAPER_ML, model="ecg"),
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
    proc = subprocess.run(["bash", str(ROOT / script), *extra], env=full_env, capture_output=True, text=True,
                          timeout=180)
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
        if tok.startswith("${"):  # ${VAR:+--flag "$VAR"}: a flag passed only when VAR is set
            name = None
        elif tok.startswith("--"):
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
        if key in overridden or key == "epochs":  # EPOCHS=1 in these runs
            continue
        recorded = args["model_config"][key] if key in MODEL_KEYS else args[key]
        assert recorded == pytest.approx(value), (key, recorded, value)
    assert args["recipe"] == "paper"
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
    assert {"seed", "use_amp", "model"} <= set(flags), f"{script}: unexpected flag parse {flags}"
    text = raw.decode()
    header = text.split("set -euo")[0]
    assert "`paper` recipe" in header and "RECIPE=physiowave" in header, f"{script}: the header names no recipe"
    assert "RECIPE=${RECIPE:-paper}" in text and '--recipe "$RECIPE"' in text
    # the recipe supplies the optimisation settings: the launcher no longer passes them (its header says what runs)
    passed = {w[2:] for w in shlex.split(_command(script)[1]) if w.startswith("--")}
    supplied = passed & {"lr", "min_lr", "weight_decay", "batch_size", "warmup_epochs", "grad_clip", "scheduler",
                         "mask_ratio", "importance_ratio", "masking_strategy", "pooling", "head_hidden_dim",
                         "head_dropout", "label_smoothing", "threshold", "grad_accumulation_steps", "betas"}
    assert not supplied, f"{script}: passes flags the recipe sets: {supplied}"
    task = TASKS[SCRIPTS.index(_command(script)[0])]
    known = build_parser(task)._option_string_actions
    unknown = [f for f in flags if f"--{f}" not in known]
    assert not unknown, f"{script}: flags unknown to the {task} script: {unknown}"


def test_launcher_flags_parser() -> None:
    flags = launcher_flags("EMG/pretrain_emg.sh")
    assert flags["model"] == "emg"
    assert flags["use_amp"] is True and flags["save_freq"] == "10"
    assert "max_length" not in flags and "train_files" not in flags and "epochs" not in flags  # from shell variables
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
    for out in pretrained.values():
        summary = (out / "training_summary.txt").read_text()
        assert "pretrain run" in summary and "bf16" in summary  # --use_amp from the launcher
        assert "recipe: paper" in summary
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
    # architecture: the launcher's --model preset shrunk as in pretraining, which the pretrained checkpoint agrees with
    extra = RUN_FLAGS + HEAD_FLAGS + ARCH_FLAGS
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


# --------------------------------------------------------------------------------------------------- dry runs
# Parameters of the model each launcher builds (classification head included) by recipe. Pretraining with the paper
# recipe builds exactly the published checkpoints' models (ecg.pth 14,425,641; emg.pth 4,854,486); fine-tuning
# starts from such a checkpoint.
PARAMETERS = {
    # heads: LayerNorm(D) + Linear(D, hidden) + Linear(hidden, K) on the mean token, e.g. PTB-XL 768 + 394,240 + 5,125
    "paper": {"ECG/pretrain_ecg.sh": 14_425_641, "EMG/pretrain_emg.sh": 4_854_486,
              "ECG/finetune_ecg.sh": 14_425_641 + 400_133, "EMG/finetune_emg.sh": 4_854_486 + 135_174,
              "ECG/cpsc_multilabel.sh": 14_425_641 + 202_505, "ECG/shaoxing_multilabel.sh": 14_425_641 + 199_940},
    # pretraining: rms norm, bands objective, transformer decoder; fine-tuning: the engine's bands-pooling head
    "physiowave": {"ECG/pretrain_ecg.sh": 15_229_162, "EMG/pretrain_emg.sh": 5_209_943,
                   "ECG/finetune_ecg.sh": 21_542_702, "EMG/finetune_emg.sh": 6_969_820,
                   "ECG/cpsc_multilabel.sh": 21_544_242, "ECG/shaoxing_multilabel.sh": 21_542_317},
}
DRY_DATA = {"ECG/pretrain_ecg.sh": (12, None), "EMG/pretrain_emg.sh": (8, None),
            **{script: (channels, labels) for script, _, channels, labels in FINETUNES}}


@pytest.fixture(scope="module")
def dry_inputs(tmp_path_factory) -> dict[str, Any]:
    """A fake python that records its command line, data files per launcher, and a checkpoint of each published
    model (the paper recipe's pretraining output) for the fine-tuning launchers."""
    from physiowave.checkpoint import save_checkpoint
    from physiowave.models import create_model

    root = tmp_path_factory.mktemp("dry")
    fake = root / "python"
    fake.write_text('#!/usr/bin/env bash\nprintf \'%s\\0\' "$@" > "$ARGV_FILE"\n')
    fake.chmod(0o755)
    files = {script: _splits(root / script.replace("/", "_"), channels, labels, seed=channels)
             for script, (channels, labels) in DRY_DATA.items()}
    checkpoints = {}
    for name in ("ecg", "emg"):
        model = create_model(name)
        checkpoints[name] = root / f"{name}.pth"
        save_checkpoint({"model_state_dict": model.state_dict(), "model_config": model.config}, checkpoints[name])
    return {"root": root, "python": str(fake), "files": files, "checkpoints": checkpoints}


def _dry_run(script: str, recipe: str, inputs: dict[str, Any], capsys, out: Path, extra: tuple[str, ...] = ()
             ) -> dict[str, Any]:
    """The launcher's command line (through the fake python; ``extra``: arguments given to the launcher) run
    in-process with --dry_run → its JSON report."""
    from physiowave.engine import main

    files, argv_file = inputs["files"][script], inputs["root"] / "argv"
    env = {"PYTHON": inputs["python"], "ARGV_FILE": str(argv_file), "RECIPE": recipe, "EPOCHS": "",
           "TRAIN_FILES": files["train"], "VAL_FILES": files["val"], "TRAIN_FILE": files["train"],
           "VAL_FILE": files["val"], "TEST_FILE": files["test"], "OUTPUT_DIR": str(out),
           "PRETRAINED": str(inputs["checkpoints"]["emg" if script.startswith("EMG") else "ecg"])}
    _launch(script, env, [*extra, "--dry_run", "--device", "cpu", "--num_workers", "0"])
    argv = argv_file.read_bytes().decode().split("\0")[:-1]
    i = next(k for k, w in enumerate(argv) if w in SCRIPTS)
    assert argv[:i] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    capsys.readouterr()
    assert main(TASKS[SCRIPTS.index(argv[i])], argv[i + 1:]) == 0
    stdout = capsys.readouterr().out
    assert len(stdout.strip().splitlines()) == 1, stdout  # one JSON object, nothing else
    report = json.loads(stdout)
    assert report["script"] == argv[i] and report["recipe"] == recipe == report["config"]["recipe"]
    assert not out.exists(), "--dry_run wrote into --output_dir"
    return report


@pytest.mark.parametrize("script", LAUNCHERS)
def test_launcher_dry_run_paper(script: str, dry_inputs, capsys, tmp_path) -> None:
    report = _dry_run(script, "paper", dry_inputs, capsys, tmp_path / "out")
    config = report["config"]
    wrong = {k: (v, config["model_config"][k] if k in MODEL_KEYS else config[k]) for k, v in INTENDED[script].items()
             if (config["model_config"][k] if k in MODEL_KEYS else config[k]) != pytest.approx(v)}
    assert not wrong, f"{script}: resolved (intended, got): {wrong}"
    assert report["parameters"] == PARAMETERS["paper"][script], report["parameters"]


@pytest.mark.parametrize("script", LAUNCHERS)
def test_launcher_dry_run_physiowave(script: str, dry_inputs, capsys, tmp_path) -> None:
    report = _dry_run(script, "physiowave", dry_inputs, capsys, tmp_path / "out")
    config = report["config"]
    if "pretrain" in script:  # the engine's own model and optimisation on the preset's shape
        assert [config["model_config"][k] for k in MODEL_KEYS] == ["rms", "bands", "transformer"]
        assert (config["lr"], config["batch_size"], config["masking_strategy"]) == (1e-3, 64, "frequency_guided")
    else:  # the checkpoint's model settings; the engine's head and optimisation
        assert [config["model_config"][k] for k in MODEL_KEYS[:2]] == ["none", "original"]
        assert (config["lr"], config["batch_size"], config["pooling"]) == (1e-3, 32, "bands")
    assert report["parameters"] == PARAMETERS["physiowave"][script], report["parameters"]


@pytest.mark.parametrize("script,hidden", [("ECG/finetune_ecg.sh", 1024), ("EMG/finetune_emg.sh", 512)])
def test_finetune_launcher_with_freeze_encoder_probes_at_the_probe_lr_and_keeps_given_flags(
        script: str, hidden: int, dry_inputs, capsys, tmp_path) -> None:
    """--freeze_encoder through a launcher: the recipe's probe lr (not the fine-tuning 2e-4) and, with the paper
    recipe's MLP probe, the launcher's head_hidden_dim; flags given to the launcher win over both."""
    from physiowave.engine.recipes import recipe_values

    config = _dry_run(script, "paper", dry_inputs, capsys, tmp_path / "a", ("--freeze_encoder",))["config"]
    assert (config["lr"], config["probe"], config["head_hidden_dim"]) == (
        recipe_values("paper", "finetune")["probe_lr"], "mlp", hidden)
    given = ("--freeze_encoder", "--head_hidden_dim", "256", "--lr", "3e-3")
    config = _dry_run(script, "paper", dry_inputs, capsys, tmp_path / "b", given)["config"]
    assert (config["lr"], config["probe"], config["head_hidden_dim"]) == (3e-3, "mlp", 256)
