"""EPN-612 preprocessing on mini user files in the native JSON layout, with real Myo EMG as content."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.signal import resample_poly

from physiowave.data.h5 import H5Dataset
from physiowave.preprocess.epn612 import main
from physiowave.preprocess.readers import read_csv

from .conftest import SHARED

REPO = Path(__file__).resolve().parents[1]
GESTURES = ["noGesture", "waveIn", "waveOut", "pinch", "open", "fist"]  # the published class order
FILES = {"train": "epn612_train_set.h5", "val": "epn612_val_set.h5", "test": "epn612_test_set.h5"}


def _myo() -> np.ndarray:
    """Raw Myo EMG [8, T] (int values): the real recordings concatenated, or synthetic without ../shared."""
    folder = SHARED / "data" / "real" / "libemg_myo_testdata"
    paths = sorted(folder.glob("R_*_C_*_EMG.csv"))
    if paths:
        return np.concatenate([read_csv(p, 200).signal for p in paths], axis=1)
    return np.random.default_rng(0).integers(-128, 128, size=(8, 12000)).astype(np.float32)


class _Builder:
    """Writes user files and records what each sample holds (the test's independent ground truth)."""

    def __init__(self, root: Path):
        self.root, self.src, self.pos = root, _myo(), 0
        self.truth: dict[str, dict] = {}  # record id -> gesture, emg [8, L] (None: unusable), part

    def take(self, n: int) -> np.ndarray:
        idx = (self.pos + np.arange(n)) % self.src.shape[1]
        self.pos += n
        return self.src[:, idx]

    def sample(self, rid: str, gesture: str | None, n: int, ragged: bool = False) -> dict:
        emg = self.take(n)
        chans = {f"ch{i + 1}": [int(v) for v in emg[i]] for i in range(8)}
        if ragged:
            chans["ch3"] = chans["ch3"][:-5]
        self.truth[rid] = {"gesture": gesture, "emg": None if ragged else emg}
        out: dict = {"emg": chans, "groundTruth": [0] * 3}
        if gesture is not None:
            out["gestureName"] = gesture
        return out

    def user(self, folder: str, user: str, training: list, testing: list) -> None:
        """``training``/``testing``: (gesture, length[, ragged]) per sample, keys idx_1, idx_2, ..."""
        doc = {}
        for key, part, specs in (("trainingSamples", "training", training), ("testingSamples", "testing", testing)):
            doc[key] = {f"idx_{i + 1}": self.sample(f"{folder}/{user}/{part}/idx_{i + 1}", *spec)
                        for i, spec in enumerate(specs)}
        path = self.root / folder / user / f"{user}.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(doc))


def _build(root: Path) -> dict[str, dict]:
    b = _Builder(root)
    two_each = [(g, 150) for g in GESTURES * 2]
    b.user("trainingJSON", "user1", [(g, 150) for g in GESTURES] + [("fist", 1000), ("open", 1100), ("pinch", 150),
                                                                    ("notProvided", 150)],
           [(g, 120) for g in GESTURES] + [(None, 120)])
    b.user("trainingJSON", "user2", two_each, [(g, 120) for g in GESTURES] + [("fist", 120, True),
                                                                              ("thumbsUp", 120)])
    b.user("trainingJSON", "user10", [(g, 100) for g in GESTURES], [(g, 100) for g in GESTURES])
    # a testing user named like a training user (the real folders repeat user names): 12 reps per gesture,
    # interleaved, the 3rd waveIn ragged; testingSamples without gestureName are never used
    reps = [(g, 90) for g in GESTURES * 12]
    reps[GESTURES.index("waveIn") + 2 * 6] = ("waveIn", 90, True)
    b.user("testingJSON", "user1", reps, [(None, 90)] * 4)
    b.user("testingJSON", "user3", two_each, [(None, 90)] * 2)
    bad = root / "testingJSON" / "user2" / "user2.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"trainingSamples": {"idx_1": {"gestureName": "fist", "emg": {"ch1": [1, 2')  # cut off
    return b.truth


@pytest.fixture(scope="module")
def epn(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    root = tmp_path_factory.mktemp("EPN612")
    return root, _build(root)


@pytest.fixture(scope="module")
def original(epn, tmp_path_factory) -> tuple[Path, int]:
    out = tmp_path_factory.mktemp("out_original")
    return out, main(["--input", str(epn[0]), "--output", str(out)])


def _expected_original(truth: dict[str, dict]) -> dict[str, str]:
    """record id -> split by the original protocol, from the fixture's own description."""
    expected, seen = {}, {}
    for rid, t in truth.items():  # insertion order = file order
        folder, user, part, _ = rid.split("/")
        if t["gesture"] not in GESTURES or (folder == "testingJSON" and part == "testing"):
            continue
        if folder == "trainingJSON":
            split = "train" if part == "training" else "val"
        else:
            k = (user, t["gesture"])
            seen[k] = seen.get(k, 0) + 1
            split = "train" if seen[k] <= 10 else "test"
        if t["emg"] is not None:
            expected[rid] = split
    return expected


def _reference(emg: np.ndarray, window: int = 1024) -> np.ndarray:
    """The original's per-sample processing: /128, truncate or zero-pad, max-abs per channel."""
    x = emg[:, :window].astype(np.float64) / 128
    peak = np.abs(x).max(axis=1, keepdims=True)
    out = np.zeros((8, window))
    out[:, :x.shape[1]] = x / np.where(peak > 0, peak, 1)
    return out


def _read(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in ("data", "label", "record_id", "start")}


def test_original_protocol_windows_labels_and_splits(epn, original):
    _, truth = epn
    out, code = original
    assert code == 0
    expected = _expected_original(truth)
    got = {}
    for split, name in FILES.items():
        ds = H5Dataset(str(out / name))
        assert (ds.label_kind, ds.num_channels, ds.length) == ("single", 8, 1024)
        arrays = _read(out / name)
        for x, y, rid, start in zip(arrays["data"], arrays["label"], arrays["record_id"], arrays["start"]):
            rid = rid.decode()
            assert rid not in got, f"{rid} gave more than one window"
            got[rid] = split
            assert start == 0
            assert y == GESTURES.index(truth[rid]["gesture"])
            np.testing.assert_allclose(x, _reference(truth[rid]["emg"]), atol=1e-6, err_msg=rid)
        x, y = ds[0]
        assert x.shape == (8, 1024) and int(y) == arrays["label"][0]
    assert got == expected
    # the 3rd waveIn of testingJSON/user1 is ragged but still counts: the 11th and 12th go to test
    waven = [r for r in expected if r.startswith("testingJSON/user1/") and truth[r]["gesture"] == "waveIn"]
    assert [expected[r] for r in waven] == ["train"] * 9 + ["test"] * 2
    assert json.loads((out / "record_splits.json").read_text()) == {
        s: [r for r in expected if expected[r] == s] for s in FILES}


def test_one_window_per_sample_padded_or_truncated(epn, original):
    _, truth = epn
    out, _ = original
    arrays = _read(out / FILES["train"])
    ids = [r.decode() for r in arrays["record_id"]]
    long_1000 = arrays["data"][ids.index("trainingJSON/user1/training/idx_7")]
    long_1100 = arrays["data"][ids.index("trainingJSON/user1/training/idx_8")]
    assert truth["trainingJSON/user1/training/idx_7"]["emg"].shape[1] == 1000
    assert not long_1000[:, 1000:].any() and long_1000[:, 999].any()  # padded, one window
    assert np.abs(long_1100).max(axis=1).min() == pytest.approx(1.0)  # max-abs over the first 1024 only
    assert (np.abs(long_1100[:, -24:]) > 0).any()  # truncated, not padded
    assert ids.count("trainingJSON/user1/training/idx_8") == 1


def test_skipped_samples_and_metadata(epn, original):
    out, _ = original
    with open(out / "skipped.csv") as f:
        rows = {r["record"]: r["reason"] for r in csv.DictReader(f)}
    expected = {"trainingJSON/user1/training/idx_10": "notProvided",
                "trainingJSON/user1/testing/idx_7": "no gestureName",
                "trainingJSON/user2/testing/idx_7": "ragged",
                "trainingJSON/user2/testing/idx_8": "unknown gestureName 'thumbsUp'",
                "testingJSON/user1/training/idx_14": "ragged",
                "testingJSON/user2": "not valid JSON"}
    assert set(rows) == set(expected)
    for rid, word in expected.items():
        assert word in rows[rid], (rid, rows[rid])
    info = json.loads((out / "preprocess_info.json").read_text())
    assert info["class_names"] == GESTURES and info["task"] == "classification"
    assert info["sampling_rate"] == 200 and info["files"] == FILES
    with h5py.File(out / FILES["val"], "r") as f:
        assert list(f.attrs["class_names"]) == GESTURES and f.attrs["normalize"] == "maxabs"


def test_cross_subject_split_by_user_and_workers_identical(epn, tmp_path):
    root, truth = epn
    runs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        assert main(["--input", str(root), "--output", str(out), "--protocol", "cross_subject",
                     "--workers", str(workers)]) == 0
        runs[workers] = {s: _read(out / n) for s, n in FILES.items() if (out / n).exists()}
    assert runs[1].keys() == runs[2].keys() and len(runs[1]) >= 2
    for split in runs[1]:
        for key in ("data", "label", "start"):
            assert runs[1][split][key].tobytes() == runs[2][split][key].tobytes(), (split, key)
        assert runs[1][split]["record_id"].tolist() == runs[2][split]["record_id"].tolist()
    users = {s: {"/".join(r.decode().split("/")[:2]) for r in a["record_id"]} for s, a in runs[1].items()}
    splits = list(users)
    for i, a in enumerate(splits):
        for b in splits[i + 1:]:
            assert not users[a] & users[b], f"a user is in {a} and {b}"
    unused = ("testingJSON", "testing")  # the testing users' testingSamples have no labels
    usable = {r for r, t in truth.items() if t["gesture"] in GESTURES and t["emg"] is not None
              and (r.split("/")[0], r.split("/")[2]) != unused}
    got = [r.decode() for a in runs[1].values() for r in a["record_id"]]
    assert sorted(got) == sorted(usable)
    for a in runs[1].values():
        for y, rid in zip(a["label"], a["record_id"]):
            assert y == GESTURES.index(truth[rid.decode()]["gesture"])


def test_target_fs_keeps_one_full_window(epn, tmp_path):
    root, truth = epn
    out = tmp_path / "fs400"
    assert main(["--input", str(root), "--output", str(out), "--limit", "1", "--target_fs", "400"]) == 0
    arrays = _read(out / FILES["train"])
    ids = [r.decode() for r in arrays["record_id"]]
    assert len(ids) == len(set(ids))
    rid = "trainingJSON/user1/training/idx_8"  # 1100 samples at 200 Hz: the first 512 become 1024 at 400 Hz
    x = resample_poly(truth[rid]["emg"][:, :512] / 128, 2, 1, axis=-1)
    ref = x / np.abs(x).max(axis=1, keepdims=True)
    np.testing.assert_allclose(arrays["data"][ids.index(rid)], ref, atol=1e-5)


def test_normalize_none_keeps_the_original_units(epn, tmp_path):
    root, truth = epn
    out = tmp_path / "raw"
    assert main(["--input", str(root), "--output", str(out), "--limit", "1", "--normalize", "none"]) == 0
    arrays = _read(out / FILES["train"])
    for x, rid in zip(arrays["data"], arrays["record_id"]):
        emg = truth[rid.decode()]["emg"][:, :1024] / 128  # raw Myo values / 128, as the original
        np.testing.assert_array_equal(x[:, :emg.shape[1]], emg.astype(np.float32))
        assert not x[:, emg.shape[1]:].any()


def test_bad_inputs(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["--input", str(tmp_path / "empty")]) == 1
    assert "trainingJSON" in capsys.readouterr().err
    root = tmp_path / "EPN"
    bad = root / "testingJSON" / "user1" / "user1.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    assert main(["--input", str(root), "--split", "0.5", "0.25", "0.25"]) == 1
    assert "--split" in capsys.readouterr().err
    unlabelled = root / "trainingJSON" / "user2" / "user2.json"
    unlabelled.parent.mkdir(parents=True)
    unlabelled.write_text(json.dumps({"trainingSamples": {"idx_1": {
        "gestureName": "notProvided", "emg": {f"ch{i}": [1, 2, 3] for i in range(1, 9)}}}}))
    out = tmp_path / "out"
    assert main(["--input", str(root), "--output", str(out)]) != 0
    assert not list(out.glob("*.h5*"))


def test_script_runs_from_a_clone(epn, tmp_path):
    root, _ = epn
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    r = subprocess.run([sys.executable, str(REPO / "EMG" / "epn_finetune.py"), "--input", str(root), "--limit", "2"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "EPN612_processed"  # the original's output folder, relative to the working directory
    assert (out / FILES["train"]).exists() and (out / FILES["val"]).exists()
    assert not (out / FILES["test"]).exists()  # --limit 2: training users only
