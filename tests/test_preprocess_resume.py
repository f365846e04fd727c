"""Preprocessing you can kill: real multi-worker runs killed (SIGKILL, SIGTERM) at many moments and resumed end with
the arrays of an uninterrupted run; an output folder is always one run's complete set, and readers refuse anything
else."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from physiowave.data import H5Dataset
from physiowave.contract import INFO_FILE
from physiowave.preprocess import core
from physiowave.preprocess.folder import main as folder_main

from .test_preprocess_core import h5_arrays, interrupt_after

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """240 CSV recordings of 4 channels (8 groups, 3 classes), long enough for several windows each."""
    root = tmp_path_factory.mktemp("csv")
    rng = np.random.default_rng(0)
    for i in range(240):
        x = rng.normal(size=(1500 + 37 * (i % 7), 4)).astype(np.float32)
        np.savetxt(root / f"S{i % 8}_C{i % 3}_R{i}.csv", x, delimiter=",", fmt="%.5f", header="a,b,c,d", comments="")
    return root


def _args(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["--input", str(corpus), "--format", "csv", "--fs", "100", "--label_regex", r"_C(\d)_",
            "--group_regex", r"^(S\d)", "--window", "256", "--step", "64", "--output", str(out), *extra]


def _assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].keys() == want[name].keys()
        for key in want[name]:
            np.testing.assert_array_equal(got[name][key], want[name][key], err_msg=f"{name}/{key}")


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _popen(argv: list[str]) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "physiowave.preprocess", "folder", *argv]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_killed_at_many_moments_and_resumed_equals_uninterrupted(corpus: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    assert folder_main(_args(corpus, ref, "--workers", "2")) == 0
    want = h5_arrays(ref)
    out = tmp_path / "out"
    flags = _args(corpus, out, "--workers", "2", "--checkpoint_s", "0.05")
    rng = np.random.default_rng(1)
    kills, finished = 0, False
    for attempt in range(12):
        state = out / core.STAGING / "state.json"
        resumable = state.exists()
        seen = state.stat().st_mtime_ns if resumable else None
        proc = _popen(flags + (["--resume"] if resumable else []))
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None and (
                not (out / core.STAGING).exists() if seen is None else _mtime(state) == seen):
            time.sleep(0.002)  # until the run is working (imports take seconds): a new staging folder or checkpoint
        time.sleep(float(rng.uniform(0.0, 0.5)))  # then anywhere: processing, a checkpoint, the merge, publishing
        sig = signal.SIGTERM if attempt % 3 == 2 else signal.SIGKILL
        if proc.poll() is None:
            proc.send_signal(sig)
            kills += 1
        _, err = proc.communicate(timeout=120)
        if proc.returncode == 0:
            finished = True
            break
        if sig == signal.SIGTERM and proc.returncode == 143 and "checkpointed" in err:
            assert "--resume" in err  # handled as Ctrl-C: one message, resumable
        assert "Traceback" not in err or proc.returncode in (-9, 143), err[-2000:]
    assert kills >= 3, "the runs finished before they could be killed"
    if not finished:
        proc = _popen(flags + (["--resume"] if (out / core.STAGING / "state.json").exists() else []))
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    assert not (out / core.STAGING).exists()
    _assert_same(h5_arrays(out), want)
    for path in out.glob("*.h5"):
        assert len(H5Dataset(str(path))) == len(want[path.name]["data"])  # the folder reads as one complete set


def test_sigterm_is_handled_like_ctrl_c(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _popen(_args(corpus, out, "--workers", "2", "--checkpoint_s", "0"))
    deadline = time.time() + 60
    while time.time() < deadline and not (out / core.STAGING / "state.json").exists():
        time.sleep(0.01)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err and "run the same command with --resume" in err
    assert folder_main(_args(corpus, out, "--resume")) == 0


def test_a_kill_between_the_renames_leaves_a_folder_readers_refuse_and_resume_completes(
        corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    out = tmp_path / "out"
    assert folder_main(_args(corpus, out, "--window", "512", "--step", "256")) == 0
    old_train = (out / "train.h5").read_bytes()
    real_replace, moved = os.replace, []

    def killed_after_one_file(src, dst):
        if Path(dst).parent == out and Path(dst).suffix == ".h5":
            if moved:
                raise KeyboardInterrupt
            moved.append(dst)
        return real_replace(src, dst)

    monkeypatch.setattr(core.os, "replace", killed_after_one_file)
    assert folder_main(_args(corpus, out)) == 130  # window 256 now: one new file beside the old others
    monkeypatch.setattr(core.os, "replace", real_replace)
    assert (out / "train.h5").read_bytes() != old_train and not (out / INFO_FILE).exists()
    for name in ("train.h5", "val.h5"):
        with pytest.raises(ValueError, match="did not finish"):
            H5Dataset(str(out / name))
    capsys.readouterr()
    assert folder_main(_args(corpus, out, "--resume")) == 0
    ref = tmp_path / "ref"
    assert folder_main(_args(corpus, ref)) == 0
    _assert_same(h5_arrays(out), h5_arrays(ref))
    assert json.loads((out / INFO_FILE).read_text())["window"] == 256


def test_files_of_two_runs_are_refused(corpus: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert folder_main(_args(corpus, a)) == 0
    assert folder_main(_args(corpus, b, "--seed", "3")) == 0
    os.replace(b / "val.h5", a / "val.h5")
    assert len(H5Dataset(str(a / "train.h5"))) > 0
    with pytest.raises(ValueError, match="mixes the files of two runs"):
        H5Dataset(str(a / "val.h5"))


def test_a_rerun_with_fewer_splits_removes_the_old_split(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert folder_main(_args(corpus, out, "--split", "0.5", "0.25", "0.25")) == 0
    assert (out / "test.h5").exists()
    assert folder_main(_args(corpus, out, "--split", "0.75", "0.25")) == 0
    assert sorted(p.name for p in out.glob("*.h5")) == ["train.h5", "val.h5"]  # no stale test.h5 leaking records
    assert set(json.loads((out / INFO_FILE).read_text())["files"]) == {"train", "val"}


def test_a_failed_run_leaves_its_reasons_and_the_previous_set(corpus: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert folder_main(_args(corpus, out)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert folder_main(_args(corpus, out, "--window", "100000")) == 1
    assert "skipped.failed.csv" in capsys.readouterr().err
    rows = (out / "skipped.failed.csv").read_text().splitlines()
    assert len(rows) == 241 and "shorter than one window" in rows[1]
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "skipped.failed.csv"} == before
    assert folder_main(_args(corpus, out)) == 0
    assert not (out / "skipped.failed.csv").exists()


def test_a_resume_that_cannot_continue_says_so_once(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys) -> None:
    out = tmp_path / "out"
    interrupt_after(monkeypatch, 30)
    assert folder_main(_args(corpus, out, "--checkpoint_s", "0")) == 130
    monkeypatch.undo()
    shard = sorted((out / core.STAGING).glob("train.*.h5"))[0]
    shard.write_bytes(shard.read_bytes()[:100])  # a disk error in a closed shard
    capsys.readouterr()
    assert folder_main(_args(corpus, out, "--resume")) == 1
    err = capsys.readouterr().err
    assert "unreadable" in err and "rerun without --resume" in err and "run the same command with --resume" not in err
    assert not (out / core.STAGING).exists()
    assert folder_main(_args(corpus, out, "--resume")) == 1
    assert "nothing to resume" in capsys.readouterr().err
    assert folder_main(_args(corpus, out)) == 0


def test_interrupted_while_cleaning_up_is_complete_and_says_nothing_of_resume(
        corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    out = tmp_path / "out"
    real_rmtree, calls = core.shutil.rmtree, []

    def interrupted_once(path, *a, **k):
        calls.append(path)
        if len(calls) == 2:  # the first call clears a stale staging folder at the start; the second ends publishing
            raise KeyboardInterrupt
        return real_rmtree(path, *a, **k)

    monkeypatch.setattr(core.shutil, "rmtree", interrupted_once)
    assert folder_main(_args(corpus, out, "--checkpoint_s", "0")) == 130
    monkeypatch.setattr(core.shutil, "rmtree", real_rmtree)
    assert "--resume" not in capsys.readouterr().err
    assert (out / INFO_FILE).exists() and not (out / core.STAGING).exists()
    assert len(H5Dataset(str(out / "train.h5"))) > 0


def test_sigterm_stops_at_the_next_record_even_when_it_lands_in_a_callback(
        corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The handler only notes SIGTERM (an exception raised in a signal handler can land in a weakref or __del__
    callback, where Python prints and drops it); the run stops after the record in progress, resumably."""
    import weakref

    out = tmp_path / "out"
    real, calls = core.process_record, {"n": 0}

    def terminated_in_a_callback(source, ref):
        calls["n"] += 1
        if calls["n"] == 20:
            class Box:
                pass
            box = Box()
            weakref.finalize(box, os.kill, os.getpid(), signal.SIGTERM)
            del box  # the signal arrives while a finalizer runs
        return real(source, ref)

    monkeypatch.setattr(core, "process_record", terminated_in_a_callback)
    assert folder_main(_args(corpus, out, "--checkpoint_s", "0")) == 143
    err = capsys.readouterr().err
    assert "Exception ignored" not in err and "run the same command with --resume" in err
    assert 19 <= json.loads((out / core.STAGING / "state.json").read_text())["done"] <= 21
    monkeypatch.undo()
    assert folder_main(_args(corpus, out, "--resume")) == 0
