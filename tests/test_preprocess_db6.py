"""NinaPro DB6 preprocessing on mini .mat files in the native layout, with real Myo EMG (upsampled) as content."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from scipy.signal import resample_poly

from physiowave.data.h5 import H5Dataset
from physiowave.preprocess.cli import parse_args
from physiowave.preprocess.ninapro_db6 import DB6Source, main
from physiowave.preprocess.readers import read_csv

from .conftest import SHARED

REPO = Path(__file__).resolve().parents[1]
T = 5000  # 2.5 s at 2000 Hz: 8 full windows of 1024 with step 512, a 392-sample tail dropped


def _myo() -> np.ndarray:
    """Myo EMG [8, N] at 200 Hz: the real recordings concatenated, or synthetic without ../shared."""
    paths = sorted((SHARED / "data" / "real" / "libemg_myo_testdata").glob("R_*_C_*_EMG.csv"))
    if paths:
        return np.concatenate([read_csv(p, 200).signal for p in paths], axis=1)
    return np.random.default_rng(0).integers(-128, 128, size=(8, 12000)).astype(np.float32)


def _emg(src: np.ndarray, k: int, n: int = T) -> np.ndarray:
    """[n, 16] at 2000 Hz: two stretches of real EMG upsampled 10x, with a per-file offset, gain and slow
    drift (so statistics over the whole record differ from those of any window)."""
    m = n // 10 + 1
    a = src[:, (k * m) % (src.shape[1] - m):][:, :m]
    b = src[:, (k * m + 3000) % (src.shape[1] - m):][:, :m]
    x = resample_poly(np.concatenate([a, b]).astype(np.float64), 10, 1, axis=1)[:, :n]  # [16, n]
    drift = np.linspace(0, 40 * (k % 3 + 1), n)
    return (x * (1 + 0.2 * k) + 5 * k + drift).T


def _save(path: Path, emg: np.ndarray, **meta) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"emg": emg, **meta})
    return emg


def _build(root: Path) -> dict[str, dict]:
    """The mini DB6 tree; returns record id -> {"emg": [T, 16], "subject", "session"} of the usable files."""
    src, truth, k = _myo(), {}, 0
    for s in range(1, 5):
        for half, (d, t) in (("a", (1, 1)), ("b", (2, 2))):
            rid = f"DB6_s{s}_{half}/S{s}_D{d}_T{t}"
            emg = _emg(src, k)
            if rid == "DB6_s4_b/S4_D2_T2":
                emg[100:3000, 12] = np.nan  # a long NaN run in a channel that is not kept: no effect
            truth[rid] = {"emg": _save(root / f"{rid}.mat", emg, subject=s, daytesting=d, time=t),
                          "subject": s, "session": f"S{s}_D{d}_T{t}"}
            k += 1
    # a renamed file of subject 2, session D1_T1: identified by its scalars
    truth["extra/S2_part2"] = {"emg": _save(root / "extra" / "S2_part2.mat", _emg(src, k), subject=2, daytesting=1,
                                            time=1), "subject": 2, "session": "S2_D1_T1"}
    nan = _emg(src, 20)
    nan[1000:2000, 2] = np.nan  # 0.5 s > --max_nan_gap 0.1 s
    _save(root / "DB6_s1_b" / "S1_D3_T1.mat", nan, subject=1)
    _save(root / "DB6_s2_b" / "S2_D3_T1.mat", _emg(src, 21, 800), subject=2)  # shorter than a window
    _save(root / "DB6_s3_b" / "S3_D3_T1.mat", _emg(src, 22)[:, :12], subject=3)  # 12 channels
    whole = root / "DB6_s4_b" / "S4_D3_T1.mat"
    _save(whole, _emg(src, 23), subject=4)
    whole.write_bytes(whole.read_bytes()[:200_000])  # truncated download
    _save(root / "notes" / "readme.mat", _emg(src, 24))  # no S_D_T name and no subject value
    return truth


@pytest.fixture(scope="module")
def db6(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    root = tmp_path_factory.mktemp("DB6")
    return root, _build(root)


def _read(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {"data": f["data"][()], "record_id": np.array([r.decode() for r in f["record_id"][()]]),
                "start": f["start"][()]}


def _zscore_record(emg: np.ndarray) -> np.ndarray:
    """Channels 0-7 of ``emg`` [T, 16] → [8, T], z-scored over the whole record (ddof 0, eps 1e-8)."""
    x = emg[:, :8].T.astype(np.float32).astype(np.float64)
    return (x - x.mean(axis=1, keepdims=True)) / (x.std(axis=1, keepdims=True) + 1e-8)


def test_windows_trace_back_to_the_record_zscore_and_subjects_stay_apart(db6, tmp_path):
    root, truth = db6
    out = tmp_path / "out"
    assert main(["--input", str(root), "--output", str(out)]) == 0
    subjects = {}
    seen = set()
    for split, name in (("train", "train.h5"), ("val", "val.h5")):
        ds = H5Dataset(str(out / name))
        assert (ds.label_kind, ds.num_channels, ds.length) == ("none", 8, 1024)
        arrays = _read(out / name)
        for rid in set(arrays["record_id"]):
            starts = arrays["start"][arrays["record_id"] == rid]
            assert starts.tolist() == list(range(0, T - 1024 + 1, 512))  # full windows only, tail dropped
        for x, rid, start in zip(arrays["data"], arrays["record_id"], arrays["start"]):
            ref = _zscore_record(truth[rid]["emg"])[:, start:start + 1024]
            np.testing.assert_allclose(x, ref, atol=1e-5, err_msg=f"{rid}@{start}")
            subjects.setdefault(split, set()).add(truth[rid]["subject"])
            seen.add(rid)
        assert abs(arrays["data"][0].mean(axis=1)).max() > 0.05  # not a per-window z-score
    assert seen == set(truth)
    assert subjects["train"] and subjects["val"] and not subjects["train"] & subjects["val"]
    info = json.loads((out / "preprocess_info.json").read_text())
    assert info["task"] == "pretrain" and info["sampling_rate"] == 2000
    assert info["files"] == {"train": "train.h5", "val": "val.h5"}
    with open(out / "skipped.csv") as f:
        skipped = {r["record"]: r["reason"] for r in csv.DictReader(f)}
    expected = {"DB6_s1_b/S1_D3_T1": "NaN run", "DB6_s2_b/S2_D3_T1": "shorter than one window",
                "DB6_s3_b/S3_D3_T1": "12 channels", "DB6_s4_b/S4_D3_T1": "unreadable .mat",
                "notes/readme": "no 'subject' value"}
    assert set(skipped) == set(expected)
    for rid, words in expected.items():
        assert words in skipped[rid], (rid, skipped[rid])


@pytest.mark.parametrize("split_by", ["subject", "session"])
def test_groups_from_names_or_file_values(db6, split_by):
    root, truth = db6
    refs, rejected = DB6Source(parse_args(DB6Source, ["--input", str(root), "--split_by", split_by])).list_records()
    assert [r for r, _ in rejected] == ["notes/readme"]
    key = "subject" if split_by == "subject" else "session"
    for ref in refs:
        if ref.id in truth:
            want = truth[ref.id][key]
            assert ref.group == (f"S{want}" if key == "subject" else want), ref.id
        else:  # the broken files are named S<s>_D3_T1
            s = int(re.search(r"S(\d+)_D3_T1$", ref.id).group(1))
            assert ref.group == (f"S{s}" if key == "subject" else f"S{s}_D3_T1")


def test_split_by_session_keeps_a_session_together(db6, tmp_path):
    root, truth = db6
    out = tmp_path / "session"
    assert main(["--input", str(root), "--output", str(out), "--split_by", "session", "--seed", "3"]) == 0
    where = {}
    for name in ("train.h5", "val.h5"):
        for rid in set(_read(out / name)["record_id"]):
            where.setdefault(truth[rid]["session"], set()).add(name)
    assert all(len(files) == 1 for files in where.values())
    assert len(where) == 8  # extra/S2_part2 joined session S2_D1_T1
    records = json.loads((out / "record_splits.json").read_text())
    split_of = {r: s for s, rs in records.items() for r in rs}
    assert split_of["extra/S2_part2"] == split_of["DB6_s2_a/S2_D1_T1"]


def test_no_usable_record_fails_without_output(db6, tmp_path):
    src = db6[0] / "DB6_s2_b" / "S2_D3_T1.mat"  # too short
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / src.name).write_bytes(src.read_bytes())
    out = tmp_path / "out"
    assert main(["--input", str(tmp_path / "in"), "--output", str(out)]) != 0
    assert not list(out.glob("*.h5*"))


def test_script_runs_from_a_clone(db6, tmp_path):
    root = db6[0]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    inputs = [str(root / f"DB6_s{s}_a") for s in (1, 2, 3)]
    r = subprocess.run([sys.executable, str(REPO / "EMG" / "db6_pretrain.py"), "--input", *inputs],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "DB6_processed_8ch"  # the original's output folder, relative to the working directory
    ids = {s: set(_read(out / f"{s}.h5")["record_id"]) for s in ("train", "val")}
    assert len(ids["train"]) == 2 and len(ids["val"]) == 1  # 3 subjects, 0.8 / 0.2
    assert ids["train"] | ids["val"] == {"S1_D1_T1", "S2_D1_T1", "S3_D1_T1"}
