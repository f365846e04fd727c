"""Preemption (``--preempt_signals``): a signal during training stops the run after the current optimizer step with
a step checkpoint and status 128+signal; ``--resume auto`` then ends with the uninterrupted run's exact weights."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from physiowave.engine import loop, main, outputs
from physiowave.engine.preemption import parse_signals

from .test_engine import TINY, _history, _toy, _write

# 60 samples, batch 4, accumulation 2: 15 micro-batches and 8 optimizer steps per epoch (the last one of 1 batch)
STEPS_PER_EPOCH = 8


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("preempt")
    return {name: _write(d / f"{name}.h5", *_toy(n, seed)) for name, n, seed in (("train", 60, 0), ("val", 11, 1))}


def _args(files: dict[str, str], out: Path, *extra: str) -> list[str]:
    return [*_flags(files), "--output_dir", str(out), *extra]


def _flags(files: dict[str, str]) -> list[str]:
    return ["--train_file", files["train"], "--val_file", files["val"], "--epochs", "2", "--batch_size", "4",
            "--grad_accumulation_steps", "2", "--use_augmentation", *TINY]


@pytest.fixture(scope="module")
def uninterrupted(files, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("full") / "run"
    assert main("finetune", _args(files, out)) == 0
    return out


def _assert_same_run(a: Path, b: Path) -> None:
    wa = torch.load(a / "latest_model.pth", weights_only=True)["model_state_dict"]
    wb = torch.load(b / "latest_model.pth", weights_only=True)["model_state_dict"]
    assert wa.keys() == wb.keys()
    for k, v in wa.items():
        assert torch.equal(v, wb[k]), k
    ha, hb = _history(a), _history(b)
    for k in ("train_loss", "train_acc", "val_loss", "val_acc", "learning_rates"):
        assert ha[k] == pytest.approx(hb[k], rel=1e-12, abs=0), k


def _signal_at_step(monkeypatch, step: int, sig: int) -> None:
    """Send ``sig`` to this process inside optimizer step ``step`` (counted from 1), as a scheduler would."""
    original, count = loop._optimizer_step, [0]

    def stepping(*a, **kw):
        original(*a, **kw)
        count[0] += 1
        if count[0] == step:
            os.kill(os.getpid(), sig)

    monkeypatch.setattr(loop, "_optimizer_step", stepping)


def test_parse_signals():
    assert parse_signals("SIGTERM,usr1, SIGUSR1") == (signal.SIGTERM, signal.SIGUSR1)
    assert parse_signals("none") == ()
    for bad in ("SIGKILL", "STOP", "SIGFOO", "15"):
        with pytest.raises(ValueError, match="not a signal"):
            parse_signals(bad)


@pytest.mark.parametrize("step, sig", [(STEPS_PER_EPOCH + 3, signal.SIGUSR1),  # inside epoch 2
                                       # the last step of epoch 1, before validation
                                       (STEPS_PER_EPOCH, signal.SIGTERM)])
def test_signal_stops_after_the_step_and_resume_is_exact(step, sig, files, uninterrupted, tmp_path, monkeypatch,
                                                         capsys):
    out = tmp_path / "run"
    _signal_at_step(monkeypatch, step, sig)
    handler = signal.getsignal(sig)
    assert main("finetune", _args(files, out)) == 128 + sig
    signal.signal(sig, handler)  # a stopped run keeps its handlers until the process exits; this one is pytest
    stopped = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.startswith("stopped:")]
    assert len(stopped) == 1 and signal.Signals(sig).name in stopped[0] and "--resume auto" in stopped[0], stopped
    ckpt = torch.load(out / "latest_model.pth", weights_only=True)
    # the step during which the signal came was completed and saved, nothing after it
    assert ckpt["global_step"] == step
    assert (ckpt["next_epoch"], ckpt["micro_in_epoch"]) == ((1, 6) if step > STEPS_PER_EPOCH else (0, 15))
    epochs_done = _history(out)["epoch"] if (out / "training_history.json").exists() else []
    assert len(epochs_done) == (step - 1) // STEPS_PER_EPOCH  # the epoch of the last step is not validated yet
    monkeypatch.undo()
    assert main("finetune", _args(files, out, "--resume", "auto")) == 0
    _assert_same_run(uninterrupted, out)


def test_second_signal_during_the_save_changes_nothing(files, uninterrupted, tmp_path, monkeypatch):
    """A SIGTERM while the step checkpoint is being written: the write completes, the file loads, resume is exact."""
    out = tmp_path / "run"
    _signal_at_step(monkeypatch, 5, signal.SIGUSR1)
    save, seen = outputs.save_checkpoint, []

    def interrupted_save(obj, path):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives before the write; SIGUSR1 was first
        seen.append(path)
        save(obj, path)

    monkeypatch.setattr(outputs, "save_checkpoint", interrupted_save)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    assert main("finetune", _args(files, out)) == 128 + signal.SIGUSR1
    for s, h in handlers.items():
        signal.signal(s, h)
    assert seen == [out / "latest_model.pth"]
    assert not list(out.glob("*.tmp"))
    monkeypatch.undo()
    assert main("finetune", _args(files, out, "--resume", "auto")) == 0
    _assert_same_run(uninterrupted, out)


@pytest.mark.parametrize("flag", ["SIGTERM,SIGUSR1", "none"])
def test_handlers_only_during_training_and_none_installs_none(flag, files, tmp_path, monkeypatch):
    """The handlers are installed for the training epochs and put back after them; with --preempt_signals none the
    signals keep their previous action (a SIGTERM then ends the process at once, as before)."""
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    during = []
    original = loop._optimizer_step

    def stepping(*a, **kw):
        original(*a, **kw)
        during.append({s: signal.getsignal(s) for s in before})

    monkeypatch.setattr(loop, "_optimizer_step", stepping)
    assert main("finetune", _args(files, tmp_path / "run", "--epochs", "1", "--preempt_signals", flag)) == 0
    assert {s: signal.getsignal(s) for s in before} == before
    assert (during[0] == before) == (flag == "none")


def test_sigterm_to_every_process_with_dataloader_workers_stops_cleanly(files, uninterrupted, tmp_path):
    """SLURM's preemption signals every process of the job, DataLoader workers included: they ignore it (torch's
    workers otherwise die of it and fail the run), the training process stops after its step, resume is exact."""
    import subprocess
    import sys
    import time

    from .test_engine import ROOT, _signal_tree

    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "finetune.py",
                             *_args(files, out, "--num_workers", "2", "--save_every_steps", "1")],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "latest_model.pth").exists():
        assert proc.poll() is None and time.time() < deadline, (
            "the run ended or stalled before its first step checkpoint")
        time.sleep(0.01)
    _signal_tree(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert torch.load(out / "latest_model.pth", weights_only=True)["global_step"] < 2 * STEPS_PER_EPOCH
    assert main("finetune", _args(files, out, "--resume", "auto")) == 0  # with workers or without: the same batches
    _assert_same_run(uninterrupted, out)
