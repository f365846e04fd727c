"""Preprocessing core: signal operations, group splits, the streaming writer, and whole runs of the folder
converter (real Challenge ECGs and Myo EMG CSVs) including bad input and interruption."""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from scipy import signal as sps

from physiowave.data import H5Dataset
from physiowave.preprocess import core
from physiowave.preprocess.folder import main as folder_main
from physiowave.preprocess.signal import (SignalError, bandpass, normalize, notch, repair_nan, resample,
                                          select_channels, window_starts)
from physiowave.preprocess.splits import split_groups
from physiowave.preprocess.writer import ShardWriter

from .conftest import lock_held_by_another_process

CINC = "data/real/torch_ecg_cinc2021"
MYO = "data/real/libemg_myo_testdata"


# ------------------------------------------------------------------------------------------------ signal ops

def test_window_starts_rules() -> None:
    # CPSC/Shaoxing rule: full windows, then padded ones while >= min_real of the window is real
    assert window_starts(5000, 2048, 1024) == [(0, 2048), (1024, 2048), (2048, 2048), (3072, 1928)]
    # the original MIMIC count (every start below L) needs min_real <= 904/2048
    assert [s for s, _ in window_starts(5000, 2048, 1024, min_real=0.4)] == [0, 1024, 2048, 3072, 4096]
    assert window_starts(5000, 2048, 1024, tail="drop") == [(0, 2048), (1024, 2048), (2048, 2048)]
    assert window_starts(1500, 2048, 1024) == [(0, 1500)]            # short record: one padded window
    assert window_starts(900, 2048, 1024) == []                       # < min_real: nothing
    assert window_starts(4096, 1024, 512, tail="drop")[-1] == (3072, 1024)


@pytest.mark.parametrize("method", ["zscore", "minmax", "maxabs", "none"])
def test_normalize_uses_real_samples_only(method: str) -> None:
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(3, 100)) * [[1], [5], [0.1]] + [[0], [3], [-2]]).astype(np.float32)
    x[2, :60] = 7.0  # a channel constant over the real part
    padded = np.zeros((3, 160), np.float32)
    padded[:, :60] = x[:, :60]
    out = normalize(padded, method, real=60)
    assert np.all(out[:, 60:] == 0)
    np.testing.assert_allclose(out[:, :60], normalize(x[:, :60], method), rtol=1e-6, atol=1e-6)
    v = x[:2, :60].astype(np.float64)
    ref = {"zscore": (v - v.mean(1, keepdims=True)) / (v.std(1, keepdims=True) + 1e-8),
           "minmax": 2 * (v - v.min(1, keepdims=True)) / np.ptp(v, 1, keepdims=True) - 1,
           "maxabs": v / np.abs(v).max(1, keepdims=True), "none": v}[method]
    np.testing.assert_allclose(out[:2, :60], ref, rtol=1e-5, atol=1e-5)
    if method in ("zscore", "minmax"):
        assert np.all(out[2, :60] == 0)  # a constant channel maps to 0, not NaN


def test_repair_nan_interpolates_short_gaps_and_rejects_long_ones() -> None:
    x = np.tile(np.arange(100, dtype=np.float32), (2, 1))
    x[0, 10:13] = np.nan
    y = repair_nan(x, fs=100, max_gap_s=0.05)
    np.testing.assert_allclose(y[0], np.arange(100))
    x[1, 40:50] = np.nan
    with pytest.raises(SignalError, match="channel 1 has a NaN run of 0.1 s"):
        repair_nan(x, fs=100, max_gap_s=0.05)
    x[1] = np.nan
    with pytest.raises(SignalError, match="entirely NaN"):
        repair_nan(x, fs=100, max_gap_s=0.05)


def test_filters_and_resampling_keep_the_band_they_should() -> None:
    fs = 500.0
    t = np.arange(5000) / fs
    slow, mains, fast = np.sin(2 * np.pi * 5 * t), np.sin(2 * np.pi * 50 * t), np.sin(2 * np.pi * 150 * t)
    x = np.stack([slow + mains + fast]).astype(np.float32)
    mid = slice(500, -500)  # away from the edges

    def amp(y: np.ndarray, f: float) -> float:  # amplitude of the f Hz component (exact bin)
        spec = np.abs(np.fft.rfft(y[mid])) * 2 / len(y[mid])
        return float(spec[int(round(f * len(y[mid]) / fs))])

    y = bandpass(x, fs, 1, 40)[0]
    assert amp(y, 5) > 0.95 and amp(y, 50) < 0.2 and amp(y, 150) < 0.01
    y = notch(x, fs, 50)[0]
    assert amp(y, 50) < 0.05 and amp(y, 5) > 0.95 and amp(y, 150) > 0.95
    z = resample(x, fs, 250)
    assert z.shape == (1, 2500)
    ref = sps.resample_poly(x, 1, 2, axis=-1)  # independent call: 500 -> 250 is 1/2
    np.testing.assert_allclose(z, ref, atol=1e-5)
    zm = z[0, 250:-250]
    spec = np.abs(np.fft.rfft(zm)) * 2 / len(zm)
    bin_of = lambda f: int(round(f * len(zm) / 250))  # noqa: E731
    assert spec[bin_of(5)] > 0.95 and spec[bin_of(50)] > 0.95
    assert spec[bin_of(100)] < 0.01  # the 150 Hz tone would alias to 100 Hz without the anti-alias filter
    with pytest.raises(SignalError, match="cannot resample"):
        resample(x, 500, 500 * np.pi)


def test_select_channels_by_name_and_index() -> None:
    names = ["I", "II", "III", "aVR", "aVF", "aVL"]
    assert select_channels(names, ["i", "AVL", "aVF"]) == [0, 5, 4]
    assert select_channels(names, ["0", "2"]) == [0, 2]
    assert select_channels(names, None) == list(range(6))
    with pytest.raises(SignalError, match="missing channel.*V1"):
        select_channels(names, ["I", "V1"])


# ------------------------------------------------------------------------------------------------ splits

def test_split_groups_is_disjoint_seeded_and_stratified() -> None:
    groups = [f"p{i // 3}" for i in range(300)]          # 100 groups of 3 records
    strata = {f"p{g}": str(g % 4) for g in range(100)}   # 4 classes, 25 groups each
    fr = {"train": 0.7, "val": 0.2, "test": 0.1}
    a = split_groups(groups, fr, seed=1, strata=strata)
    assert set(a) == set(groups)
    assert Counter(a.values()) == {"train": 70, "val": 20, "test": 10}
    for split in fr:   # stratified: each class in each split, in proportion (25 * fraction, ±1)
        per_class = Counter(strata[g] for g, s in a.items() if s == split)
        assert all(abs(per_class[c] - 25 * fr[split]) <= 1 for c in "0123"), (split, per_class)
    assert a == split_groups(groups, fr, seed=1, strata=strata)
    assert a != split_groups(groups, fr, seed=2, strata=strata)
    # a class with a single group cannot be stratified: pooled, still a valid split
    strata["p0"] = "rare"
    b = split_groups(groups, fr, seed=1, strata=strata)
    assert Counter(b.values()) == {"train": 70, "val": 20, "test": 10}


# ------------------------------------------------------------------------------------------------ writer

def test_shard_writer_round_trip_checkpoints_and_discard(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = ShardWriter(tmp_path, "train", 3, 16, (4,), buffer_windows=5)
    chunks = [rng.normal(size=(n, 3, 16)).astype(np.float32) for n in (2, 4, 1, 6, 3)]
    labels = [rng.integers(0, 2, size=(len(c), 4)).astype(np.float32) for c in chunks]
    for i, (c, lab) in enumerate(zip(chunks[:3], labels[:3])):
        w.append(c, lab, f"rec{i}", np.arange(len(c)) * 8)
    assert [p.name for p in tmp_path.iterdir()] == ["train.00000.h5.open"]
    w.checkpoint()
    closed = (tmp_path / "train.00000.h5").read_bytes()
    w.append(chunks[3], labels[3], "rec3", np.arange(6) * 8)
    w.discard_open()  # a kill after the checkpoint: what followed it is dropped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.00000.h5"]
    for i in (3, 4):
        w.append(chunks[i], labels[i], f"rec{i}", np.arange(len(chunks[i])) * 8)
    path = w.merge(tmp_path / "train.h5", {"fs": 100.0})
    assert (tmp_path / "train.00000.h5").read_bytes() == closed  # a closed shard is never written again
    kept = [0, 1, 2, 3, 4]
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["data"][:], np.concatenate([chunks[i] for i in kept]))
        np.testing.assert_array_equal(f["label"][:], np.concatenate([labels[i] for i in kept]))
        assert f["record_id"].asstr()[:].tolist() == [f"rec{i}" for i in kept for _ in chunks[i]]
        assert f["data"].chunks == (1, 3, 16) and f["data"].compression == "gzip" and f.attrs["fs"] == 100.0


def test_reason_kind_masks_counts_but_keeps_names() -> None:
    assert core.reason_kind("missing channel(s) V1, V2") == "missing channel(s) V1, V2"
    assert core.reason_kind("1200 samples (2.4 s) is shorter than one window (2048)") == \
        "# samples (# s) is shorter than one window (#)"


# ------------------------------------------------------------------------------------------------ whole runs

def _z(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.float64)
    return (v - v.mean(1, keepdims=True)) / (v.std(1, keepdims=True) + 1e-8)


def test_folder_wfdb_on_real_ecg_traces_back_to_the_source(shared: Path, tmp_path: Path) -> None:
    src = shared / CINC
    out = tmp_path / "out"
    assert folder_main(["--input", str(src), "--format", "wfdb", "--output", str(out), "--split", "0.8", "0.2",
                        "--seed", "3"]) == 0
    splits = json.loads((out / "record_splits.json").read_text())
    assert len(splits["train"]) == 40 and len(splits["val"]) == 10
    assert not set(splits["train"]) & set(splits["val"])
    info = json.loads((out / "preprocess_info.json").read_text())
    assert info["splits"]["train"]["windows"] == 160 and info["sampling_rate"] == 500
    assert info["parameters"]["seed"] == 3 and info["software"]["physiowave"]
    with h5py.File(out / "val.h5") as f:
        ids, starts, data = f["record_id"].asstr()[:], f["start"][:], f["data"]
        assert data.shape == (40, 12, 2048)
        for i in (0, 3, 17, 39):   # 3 and 39 are padded tail windows (start 3072: 1928 real samples)
            raw = scipy.io.loadmat(src / f"{ids[i]}.mat")["val"] / 1000.0  # gain 1000 adu/mV, baseline 0
            seg = raw[:, starts[i]:starts[i] + 2048]
            np.testing.assert_allclose(data[i, :, :seg.shape[1]], _z(seg), atol=2e-5)
            assert np.all(data[i, :, seg.shape[1]:] == 0)
    ds = H5Dataset([str(out / "train.h5")], labels="none")
    assert len(ds) == 160 and ds.num_channels == 12


def test_folder_csv_emg_groups_stay_together_and_workers_agree(shared: Path, tmp_path: Path) -> None:
    src = shared / MYO
    args = ["--input", str(src), "--format", "csv", "--fs", "200", "--window", "256", "--step", "128",
            "--normalize", "maxabs", "--group_regex", r"C_(\d+)", "--split", "0.6", "0.4"]
    assert folder_main(args + ["--output", str(tmp_path / "w1")]) == 0
    assert folder_main(args + ["--output", str(tmp_path / "w2"), "--workers", "2"]) == 0
    for split in ("train", "val"):
        with h5py.File(tmp_path / "w1" / f"{split}.h5") as a, h5py.File(tmp_path / "w2" / f"{split}.h5") as b:
            np.testing.assert_array_equal(a["data"][:], b["data"][:])
            np.testing.assert_array_equal(a["start"][:], b["start"][:])
    splits = json.loads((tmp_path / "w1" / "record_splits.json").read_text())
    classes = {s: {r.split("_C_")[1].split("_")[0] for r in recs} for s, recs in splits.items()}
    assert not classes["train"] & classes["val"] and len(classes["train"]) == 3
    with h5py.File(tmp_path / "w1" / "train.h5") as f:
        rid, start, win = f["record_id"].asstr()[5], f["start"][5], f["data"][5]
    raw = np.loadtxt(src / f"{rid}.csv", delimiter=",").T[:, start:start + 256]
    np.testing.assert_allclose(win, raw / np.abs(raw).max(1, keepdims=True), atol=1e-6)


def _corrupt_corpus(shared: Path, root: Path) -> dict[str, str]:
    """Copy real records into ``root`` and damage some; returns record -> expected reason fragment."""
    src = shared / CINC
    root.mkdir()
    names = ["E07500", "E07501", "HR06000", "JS20000", "JS20001", "JS20002", "E07502", "E07503"]
    for n in names:
        for ext in (".hea", ".mat"):
            shutil.copy(src / f"{n}{ext}", root / f"{n}{ext}")
    expect = {}
    mat = (root / "E07501.mat").read_bytes()                 # truncated signal file
    (root / "E07501.mat").write_bytes(mat[: len(mat) // 3])
    expect["E07501"] = "E07501"
    (root / "JS20000.mat").unlink()                          # header without signal
    expect["JS20000"] = "JS20000.mat"
    hea = (root / "JS20001.hea").read_text().splitlines()    # 11 leads: V6 missing
    (root / "JS20001.hea").write_text("\n".join([hea[0].replace(" 12 ", " 11 ", 1)] + hea[1:12] + hea[13:]) + "\n")
    v = scipy.io.loadmat(root / "JS20001.mat")["val"][:11]
    scipy.io.savemat(root / "JS20001.mat", {"val": v}, format="4")
    expect["JS20001"] = "V6"
    v = scipy.io.loadmat(root / "JS20002.mat")["val"][:, :900]  # too short for one window
    scipy.io.savemat(root / "JS20002.mat", {"val": v}, format="4")
    h = (root / "JS20002.hea").read_text().splitlines()
    h[0] = h[0].replace(" 5000", " 900")
    (root / "JS20002.hea").write_text("\n".join(h) + "\n")
    expect["JS20002"] = "shorter than one window"
    (root / "E07503.hea").write_bytes(b"\xff\xfe garbage \x00\x01 not a header\n")  # unreadable header
    expect["E07503"] = "E07503"
    return expect


def test_bad_records_are_skipped_with_reasons(shared: Path, tmp_path: Path) -> None:
    root = tmp_path / "in"
    expect = _corrupt_corpus(shared, root)
    out = tmp_path / "out"
    assert folder_main(["--input", str(root), "--format", "wfdb", "--output", str(out),
                        "--channels", "I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5,V6"]) == 0
    rows = (out / "skipped.csv").read_text().splitlines()[1:]
    reasons = {r.split(",", 1)[0]: r.split(",", 1)[1] for r in rows}
    assert set(reasons) == set(expect), reasons
    for rec, frag in expect.items():
        assert frag in reasons[rec], (rec, reasons[rec])
    splits = json.loads((out / "record_splits.json").read_text())
    assert sorted(splits["train"] + splits["val"]) == ["E07500", "E07502", "HR06000"]
    print("\n".join(rows))


def test_no_usable_record_fails_and_writes_nothing(shared: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "in"
    root.mkdir()
    shutil.copy(shared / MYO / "R_0_C_0_EMG.csv", root / "a.csv")
    out = tmp_path / "out"
    rc = folder_main(["--input", str(root), "--format", "csv", "--fs", "200", "--window", "4096",
                      "--output", str(out)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "no usable record" in err
    # the reason is the real one, with its numbers and the record, and says what to change
    assert "a: 602 samples (3.01 s) is shorter than one window (4096" in err and "pass a smaller --window" in err
    assert not list(out.glob("*.h5*"))


def interrupt_after(monkeypatch: pytest.MonkeyPatch, n: int) -> dict[str, int]:
    """Ctrl-C at the (n+1)-th record: ``core.process_record`` raises KeyboardInterrupt from then on (until
    ``monkeypatch.undo()``); returns the call counter, which a test may reset."""
    real, calls = core.process_record, {"n": 0}

    def interrupted(source, ref):
        calls["n"] += 1
        if calls["n"] > n:
            raise KeyboardInterrupt
        return real(source, ref)

    monkeypatch.setattr(core, "process_record", interrupted)
    return calls


def h5_arrays(out: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every dataset of every HDF5 file in ``out``, by file name."""
    res = {}
    for p in sorted(out.glob("*.h5")):
        with h5py.File(p) as f:
            res[p.name] = {k: f[k][:] for k in f}
    return res


def test_interrupted_run_keeps_previous_outputs_and_resumes_to_the_same_files(
        shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    out = tmp_path / "out"
    args = ["--input", str(shared / CINC), "--format", "wfdb", "--output", str(out)]
    assert folder_main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    reference = h5_arrays(out)
    calls = interrupt_after(monkeypatch, 20)
    staging = out / core.STAGING
    # no checkpoint yet (the default is every 60 s): nothing partial is kept
    assert folder_main(args) == 130
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before   # the complete run is untouched
    # checkpoint after every record: the staging folder stays, the old outputs too
    calls["n"] = 0
    capsys.readouterr()
    assert folder_main(args + ["--checkpoint_s", "0"]) == 130
    assert "interrupted: 20 of 50 records are checkpointed" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != core.STAGING} == before
    state = json.loads((staging / "state.json").read_text())
    assert state["done"] == 20
    # resuming with other parameters is refused, naming them; with the same ones it ends as an uninterrupted run
    monkeypatch.undo()  # process_record as it is
    capsys.readouterr()
    assert folder_main(args + ["--resume", "--seed", "5"]) == 1
    assert "--seed" in capsys.readouterr().err and staging.is_dir()
    assert folder_main(args + ["--resume"]) == 0
    assert not staging.exists()
    got = h5_arrays(out)
    assert got.keys() == reference.keys()
    for name in got:
        for key in reference[name]:
            np.testing.assert_array_equal(got[name][key], reference[name][key])
    assert folder_main(args + ["--resume"]) == 1  # nothing left to resume
    assert "its run is complete" in capsys.readouterr().err


def test_resume_after_sigkill(shared: Path, tmp_path: Path) -> None:
    """A run killed with SIGKILL right after a checkpoint resumes to the same files."""
    import os
    import signal
    import subprocess
    import sys
    import time
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "physiowave.preprocess", "folder", "--input", str(shared / CINC), "--format",
           "wfdb", "--output", str(out), "--checkpoint_s", "0"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(root))
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / core.STAGING / "state.json"
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text() or "{}").get("done", 0) >= 5:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list(out.glob("*.h5")) and state.exists()
    assert subprocess.run(cmd + ["--resume"], cwd=root, env=env, capture_output=True).returncode == 0
    ref = tmp_path / "ref"
    assert folder_main(["--input", str(shared / CINC), "--format", "wfdb", "--output", str(ref)]) == 0
    got, want = h5_arrays(out), h5_arrays(ref)
    assert got.keys() == want.keys() == {"train.h5", "val.h5"}
    for name in got:
        for key in want[name]:
            np.testing.assert_array_equal(got[name][key], want[name][key])


def test_unwritable_output_is_a_one_line_error(shared: Path, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    rc = folder_main(["--input", str(shared / MYO), "--format", "csv", "--fs", "200", "--window", "256",
                      "--output", str(blocker / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err[-1].startswith("error: cannot write the output") and "a_file" in err[-1]


def test_preprocessing_never_imports_torch() -> None:
    """Workers stay small (torch adds ~150 MB per process): nothing on the preprocessing path imports it."""
    import subprocess
    import sys
    from physiowave.preprocess import SOURCES
    code = ("import sys, importlib, physiowave.preprocess.cli, physiowave.preprocess.__main__; "
            "[importlib.import_module('physiowave.preprocess.' + m) for m in "
            f"{sorted(v.split(':')[0] for v in SOURCES.values())!r}]; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_a_second_run_into_an_output_folder_being_written_is_refused(tmp_path, capsys):
    from physiowave.preprocess.__main__ import main as preprocess
    out = tmp_path / "out"
    myo = Path(__file__).resolve().parents[1] / "demo" / "data" / "myo"
    argv = ["folder", "--input", str(myo), "--format", "csv", "--fs", "200", "--label_regex", r"C_(\d+)",
            "--window", "128", "--step", "128", "--output", str(out)]
    with lock_held_by_another_process(out):
        assert preprocess(argv) == 1
        assert "another run is writing to this folder now" in capsys.readouterr().err
        assert list(out.iterdir()) == []
