"""``--recipe`` (physiowave/engine/recipes.py) and ``--dry_run``: precedence (flag > recipe > script default), the
default recipe changing nothing, the paper recipe's values, probing, and a dry run that builds, checks and writes
nothing. The launchers' dry runs are in test_launchers.py."""
from __future__ import annotations

import dataclasses

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

from physiowave.engine import main
from physiowave.engine.args import PROBE_LR, TASKS, build_parser, parse_args
from physiowave.engine.config import RunConfig
from physiowave.engine.main import _summary
from physiowave.engine.model_config import _MODEL_DEFAULTS, build_model, resolve_config
from physiowave.engine.optim import build_optimizer
from physiowave.engine.recipes import MODEL_KEYS, RECIPES, recipe_values
from physiowave.engine.tasks import build_task

ROOT = Path(__file__).resolve().parents[1]
FILE = {"pretrain": ["--train_files", "x.h5"], "finetune": ["--train_file", "x.h5"],
        "multilabel": ["--train_file", "x.h5", "--val_file", "v.h5"]}
TINY = ["--embed_dim", "16", "--depth", "1", "--num_heads", "2", "--max_level", "1", "--patch_size", "16",
        "--device", "cpu", "--num_workers", "0"]


def _write(path: Path, n: int = 8, channels: int = 2, length: int = 64, classes: int | None = None) -> str:
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=np.random.default_rng(0).normal(size=(n, channels, length)).astype(np.float32))
        if classes:
            f.create_dataset("label", data=(np.arange(n) % classes).astype(np.int64))
    return str(path)


# --------------------------------------------------------------------------------------------------- the tables
@pytest.mark.parametrize("task", TASKS)
def test_default_recipe_changes_nothing(task: str) -> None:
    """A plain command line resolves to exactly what the parser's defaults (today's values) give."""
    raw = vars(build_parser(task).parse_args(FILE[task]))
    args = vars(parse_args(task, FILE[task]))
    if task != "pretrain":
        raw["lr"] = 1e-3  # the finetuning --lr default, resolved after parsing as before
    # new: the optimizer's betas, which the task fixed before, now resolved and recorded
    assert raw.pop("betas") is None
    assert {k: args[k] for k in raw} == raw
    assert args["recipe"] == "physiowave" and args["betas"] == ([0.9, 0.95] if task == "pretrain" else [0.9, 0.999])
    # the rest are the flags of the other scripts, at the config's "does not apply" value
    neutral = {f.name: f.default for f in dataclasses.fields(RunConfig) if f.default is not dataclasses.MISSING}
    others = set(args) - set(raw) - {"task", "betas"}
    assert others and others <= set(neutral) and {k: args[k] for k in others} == {k: neutral[k] for k in others}
    # the table lists what it stands for: every value is the script's default or the model's own
    parser = build_parser(task)
    task_obj = build_task(parse_args(task, FILE[task]))
    for key, value in recipe_values("physiowave", task).items():
        if key in MODEL_KEYS:
            assert {**_MODEL_DEFAULTS, **task_obj.model_defaults}[key] == value, key
        elif key == "probe_lr":
            assert value == PROBE_LR
        elif key == "probe":
            assert value == "linear"  # what --freeze_encoder without --probe has always meant
        elif key == "betas":
            assert tuple(value) == task_obj.betas
        else:
            assert parser.get_default(key) in (value, None), key  # None: finetuning --lr, resolved above


@pytest.mark.parametrize("task", TASKS)
def test_default_recipe_same_model(task: str) -> None:
    with_recipe = parse_args(task, FILE[task])
    without = SimpleNamespace(**{**vars(with_recipe), "recipe": None})
    task_obj = build_task(with_recipe)
    assert resolve_config(with_recipe, task_obj, 4) == resolve_config(without, task_obj, 4)


def test_paper_values_per_preset() -> None:
    ecg = parse_args("pretrain", FILE["pretrain"] + ["--recipe", "paper", "--model", "ecg"])
    assert (ecg.max_length, ecg.batch_size, ecg.grad_accumulation_steps, ecg.epochs, ecg.lr, ecg.weight_decay,
            ecg.warmup_epochs, ecg.grad_clip, ecg.mask_ratio, ecg.importance_ratio, ecg.min_lr, ecg.betas,
            ecg.masking_strategy) == (2048, 16, 2, 20, 2e-5, 1e-3, 5, 1.0, 0.7, 0.7, 0.0, [0.9, 0.95],
                                      "frequency_guided_original")
    emg = parse_args("pretrain", FILE["pretrain"] + ["--recipe", "paper", "--model", "emg"])
    assert (emg.max_length, emg.batch_size, emg.grad_accumulation_steps, emg.epochs, emg.lr, emg.weight_decay,
            emg.warmup_epochs, emg.mask_ratio) == (None, 32, 2, 30, 1e-4, 0.01, 10, 0.6)
    # without --model: the original scripts' own defaults
    base = parse_args("pretrain", FILE["pretrain"] + ["--recipe", "paper"])
    assert (base.batch_size, base.epochs, base.lr, base.weight_decay, base.warmup_epochs) == (32, 100, 1e-4, 0.01, 10)
    ft = parse_args("finetune", FILE["finetune"] + ["--recipe", "paper"])
    assert (ft.batch_size, ft.epochs, ft.lr, ft.weight_decay, ft.warmup_epochs, ft.pooling, ft.label_smoothing,
            ft.min_lr, ft.betas, ft.head_hidden_dim) == (16, 30, 1e-4, 1e-3, 5, "mean", 0.1, 0.0, [0.9, 0.999], None)
    emg_ft = parse_args("finetune", FILE["finetune"] + ["--recipe", "paper", "--model", "emg"])
    assert (emg_ft.epochs, emg_ft.lr, emg_ft.batch_size, emg_ft.warmup_epochs, emg_ft.head_hidden_dim,
            emg_ft.grad_clip) == (5, 2e-4, 32, 2, 512, 1.0)
    ml = parse_args("multilabel", FILE["multilabel"] + ["--recipe", "paper", "--model", "ecg"])
    assert (ml.epochs, ml.lr, ml.weight_decay, ml.threshold, ml.head_hidden_dim, ml.head_dropout, ml.pooling,
            ml.label_smoothing) == (10, 1e-4, 1e-4, 0.3, 512, 0.2, "mean", 0.0)
    assert set(RECIPES) == {"physiowave", "paper"} and all(set(RECIPES[r]) == set(TASKS) for r in RECIPES)


def test_explicit_flags_override_the_recipe() -> None:
    argv = FILE["pretrain"] + ["--recipe", "paper", "--model", "ecg", "--lr", "3e-4", "--batch_size", "64",
                               "--masking_strategy", "random", "--betas", "0.8", "0.9", "--max_length", "1024"]
    args = parse_args("pretrain", argv)
    # given values win, also one equal to the script's default (64); the rest is the recipe's
    assert (args.lr, args.batch_size, args.masking_strategy, args.betas, args.max_length) == \
        (3e-4, 64, "random", [0.8, 0.9], 1024)
    assert (args.epochs, args.mask_ratio, args.weight_decay) == (20, 0.7, 1e-3)
    # a model flag given beats the recipe's model setting; the recipe's beats the model's own default
    task = build_task(args)
    assert resolve_config(args, task, 12)["input_norm"] == "none"
    assert resolve_config(args.replace(input_norm="rms"), task, 12)["input_norm"] == "rms"


def test_checkpoint_beats_recipe_model_settings() -> None:
    args = parse_args("finetune", FILE["finetune"] + ["--recipe", "paper"])
    stored = {"input_norm": "rms", "objective": "bands", "embed_dim": 32, "depth": 1, "num_heads": 4}
    config = resolve_config(args, build_task(args), 12, stored, "ckpt.pth")
    assert (config["input_norm"], config["objective"]) == ("rms", "bands")


def test_probe_with_recipes() -> None:
    paper = parse_args("finetune", FILE["finetune"] + ["--recipe", "paper", "--model", "ecg", "--freeze_encoder"])
    assert (paper.lr, paper.probe, paper.head_hidden_dim) == (PROBE_LR, "mlp", 1024)  # the original's MLP head
    assert build_task(paper).head_config(5, 384)["head_hidden_dim"] == 1024  # kept, not silently dropped
    linear = parse_args("finetune", FILE["finetune"] + ["--recipe", "paper", "--model", "ecg", "--freeze_encoder",
                                                        "--probe", "linear", "--lr", "5e-3"])
    assert (linear.lr, linear.probe, linear.head_hidden_dim) == (5e-3, "linear", None)
    pw = parse_args("finetune", FILE["finetune"] + ["--freeze_encoder"])
    assert (pw.lr, pw.probe, pw.head_hidden_dim) == (PROBE_LR, "linear", None)
    assert parse_args("finetune", FILE["finetune"] + ["--recipe", "paper", "--model", "ecg"]).probe is None


def test_head_size_a_linear_probe_would_drop_is_an_error(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args("finetune", FILE["finetune"] + ["--freeze_encoder", "--head_hidden_dim", "64"])
    assert exc.value.code == 1 and "--probe mlp" in capsys.readouterr().err
    ok = parse_args("finetune", FILE["finetune"] + ["--freeze_encoder", "--probe", "mlp", "--head_hidden_dim", "64"])
    assert ok.head_hidden_dim == 64
    factor = parse_args("multilabel",
                        FILE["multilabel"] + ["--recipe", "paper", "--model", "ecg", "--hidden_factor", "2"])
    assert (factor.hidden_factor, factor.head_hidden_dim) == (2, None)  # no clash with the recipe's hidden size


@pytest.mark.parametrize("recipe, task, betas",
                         [("paper", "pretrain", (0.9, 0.95)), ("paper", "finetune", (0.9, 0.999)),
                                                 ("physiowave", "pretrain", (0.9, 0.95))])
def test_optimizer_betas_follow_the_recipe(recipe: str, task: str, betas: tuple[float, float]) -> None:
    args = parse_args(task, FILE[task] + ["--recipe", recipe])
    opt = build_optimizer([("w", torch.nn.Parameter(torch.zeros(2, 2)))], args, build_task(args))
    assert opt.param_groups[0]["betas"] == betas
    args = args.replace(betas=[0.5, 0.6])
    assert build_optimizer([("w", torch.nn.Parameter(torch.zeros(2, 2)))], args, build_task(args)).param_groups[0][
        "betas"] == (0.5, 0.6)


def test_summary_names_the_recipe() -> None:
    args = parse_args("pretrain", FILE["pretrain"] + ["--recipe", "paper"])
    model = build_model({**resolve_config(args, build_task(args), 2), "embed_dim": 16, "depth": 1, "num_heads": 2})
    env = SimpleNamespace(world_size=1, device="cpu")
    text = _summary(args, env, model, {"train_files": ["x"], "val_files": []}, {}, None, SimpleNamespace(name="fp32"),
                    1.0)
    assert "recipe: paper\n" in text


# --------------------------------------------------------------------------------------------------- --dry_run
def test_dry_run_in_process(tmp_path: Path, capsys) -> None:
    train, val = _write(tmp_path / "t.h5", classes=3), _write(tmp_path / "v.h5", classes=3)
    out = tmp_path / "out"
    argv = ["--train_file", train, "--val_file", val, "--recipe", "paper", "--output_dir", str(out), *TINY]
    assert main("finetune", argv + ["--dry_run"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"script", "recipe", "parameters", "config"}
    assert (report["script"], report["recipe"]) == ("finetune.py", "paper")
    config = report["config"]
    assert (config["pooling"], config["lr"], config["batch_size"], config["min_lr"]) == ("mean", 1e-4, 16, 0.0)
    assert config["model_config"]["num_classes"] == 3 and config["model_config"]["input_norm"] == "none"
    args = parse_args("finetune", argv)
    task = build_task(args)
    model = build_model({**resolve_config(args, task, 2), **task.head_config(3, 16)})
    assert report["parameters"] == sum(p.numel() for p in model.parameters())  # the classification head included
    assert not out.exists()
    # bad input: the usual one-line error and exit status 1, still nothing written
    assert main("finetune", argv[:1] + [str(tmp_path / "missing.h5")] + argv[2:] + ["--dry_run"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: ") and "missing.h5" in captured.err
    assert not out.exists()


def test_dry_run_script_prints_one_json_object(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "pretrain.py"), "--train_files", _write(tmp_path / "t.h5"), "--output_dir",
           str(out), "--dry_run", *TINY]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.strip().splitlines()) == 1
    report = json.loads(proc.stdout)
    assert (report["script"], report["recipe"], report["config"]["mask_ratio"]) == ("pretrain.py", "physiowave", 0.6)
    assert report["config"]["model_config"]["decoder"] == "transformer"
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["t.h5"]
