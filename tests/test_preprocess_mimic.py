"""MIMIC-IV-ECG preprocessing on a native-layout mini corpus (files/pXXXX/pNNNNNNNN/sSSSSSSSS/SSSSSSSS.{hea,dat}
written with wfdb.wrsamp in MIMIC's lead order from the real Challenge records, synthetic when ../shared is
absent, plus record_list.csv): leads reordered by name, subject-level split, windows traced back to the source,
NaN gaps interpolated or rejected, broken records in skipped.csv, the walk without the CSV, and the script run
as a subprocess."""
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
import wfdb

from physiowave.data import H5Dataset
from physiowave.preprocess.cli import parse_args
from physiowave.preprocess.mimic_ecg import MIMICSource, main
from physiowave.preprocess.readers import read_challenge

ROOT = Path(__file__).resolve().parents[1]
STANDARD = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
MIMIC_ORDER = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]  # aVF before aVL
GAIN = 1000.0
NAN_SHORT = (1000, 1010)   # 10 samples = 0.02 s in V2: interpolated (--max_nan_gap 0.1 s)
NAN_LONG = (2000, 2200)    # 200 samples = 0.4 s in V3: the record is skipped

# subject, study, what is special about it
RECORDS = [
    ("10000032", "40689238", None), ("10000032", "44458630", None), ("10000032", "49036311", "nan_short"),
    ("10000117", "45090959", None), ("10000117", "48446569", None),
    ("10000560", "40000001", None), ("10000560", "42000002", "nan_long"),
    ("10000980", "41000011", None), ("10000980", "46000012", None), ("10000980", "43000003", "short"),
    ("10001217", "41000001", "missing"),
]
GOOD = [r for r in RECORDS if r[2] in (None, "nan_short")]


def _rel(subject: str, study: str) -> str:
    return f"files/p{subject[:4]}/p{subject}/s{study}/{study}"


def _source_signals(n: int) -> list[np.ndarray]:
    """n 12-lead 10 s 500 Hz signals, int16 digital [5000, 12] in the standard lead order (gain 1000/mV): the
    real Georgia (E*) and Chapman (JS*) Challenge records when ../shared is present, else random walks."""
    from tests.conftest import SHARED
    real = SHARED / "data/real/torch_ecg_cinc2021"
    if real.is_dir():
        out = []
        for hea in (sorted(real.glob("E*.hea")) + sorted(real.glob("JS*.hea")))[:n]:
            rec = read_challenge(hea)
            assert rec.channel_names == STANDARD
            out.append(np.round(rec.signal.T.astype(np.float64) * GAIN).astype(np.int16))
        return out
    rng = np.random.default_rng(1)
    return [np.cumsum(rng.normal(0, 20, (5000, 12)), axis=0).astype(np.int16) for _ in range(n)]


def _make_tree(root: Path, records: list[tuple], record_list: bool = True) -> dict[str, np.ndarray]:
    """Write the corpus; returns record path → source in mV, float64 [12, T], standard order, NaN where missing."""
    sources = {}
    mimic_idx = [STANDARD.index(n) for n in MIMIC_ORDER]
    for (subject, study, special), digital in zip(records, _source_signals(len(records))):
        rel = _rel(subject, study)
        digital = digital.copy()
        if special == "short":
            digital = digital[:1000]
        if special == "nan_short":
            digital[slice(*NAN_SHORT), STANDARD.index("V2")] = -32768  # WFDB's "no sample" for format 16
        if special == "nan_long":
            digital[slice(*NAN_LONG), STANDARD.index("V3")] = -32768
        src = digital.T.astype(np.float64) / GAIN
        src[digital.T == -32768] = np.nan
        sources[rel] = src
        if special == "missing":
            continue
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        wfdb.wrsamp(study, fs=500, units=["mV"] * 12, sig_name=MIMIC_ORDER,
                    d_signal=np.ascontiguousarray(digital[:, mimic_idx]), fmt=["16"] * 12, adc_gain=[GAIN] * 12,
                    baseline=[0] * 12, write_dir=str((root / rel).parent))
    if record_list:
        with open(root / "record_list.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["subject_id", "study_id", "file_name", "ecg_time", "path"])
            for subject, study, _ in records:
                w.writerow([subject, study, study, "2180-07-23 08:44:00", _rel(subject, study)])
    return sources


def _zscore(v: np.ndarray) -> np.ndarray:
    return (v - v.mean(1, keepdims=True)) / (v.std(1, keepdims=True) + 1e-8)


def _interpolated(src: np.ndarray) -> np.ndarray:
    """NaN samples replaced by linear interpolation over time, per channel (an independent np.interp)."""
    out = src.copy()
    t = np.arange(src.shape[1])
    for c in range(src.shape[0]):
        bad = np.isnan(src[c])
        if bad.any():
            out[c, bad] = np.interp(t[bad], t[~bad], src[c, ~bad])
    return out


def _read(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path) as f:
        assert "label" not in f
        return {"data": f["data"][:], "record_id": f["record_id"].asstr()[:], "start": f["start"][:],
                "fs": f.attrs["fs"]}


def _skipped(out: Path) -> dict[str, str]:
    with open(out / "skipped.csv", newline="") as f:
        return {row["record"]: row["reason"] for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("mimic") / "mimic-iv-ecg"
    return root, _make_tree(root, RECORDS)


@pytest.fixture(scope="module")
def default_run(tree: tuple[Path, dict]) -> Path:
    """The default run as a subprocess of the script (no --output: root/processed_pretrain)."""
    root, _ = tree
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "ECG/mimic_pretrain.py", "--input", str(root)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return root / "processed_pretrain"


def test_windows_are_reordered_zscored_source_slices(tree: tuple[Path, dict], default_run: Path) -> None:
    root, sources = tree
    out, n_windows = default_run, 0
    for split in ("train", "val"):
        h5 = _read(out / f"mimic_pretrain_{split}.h5")
        assert h5["data"].shape[1:] == (12, 2048) and h5["fs"] == 500.0
        for x, rid, s in zip(h5["data"], h5["record_id"], h5["start"]):
            src = _interpolated(sources[rid])
            real = min(2048, src.shape[1] - s)
            expected = np.zeros((12, 2048))
            expected[:, :real] = _zscore(src[:, s:s + real])
            np.testing.assert_allclose(x, expected, atol=1e-4, err_msg=f"{rid} @ {s}")
            # the aVL slot (index 4 in the standard order) holds the source's aVL, not MIMIC's 5th lead aVF
            avl, avf = (_zscore(src[[STANDARD.index(n)], s:s + real])[0] for n in ("aVL", "aVF"))
            assert np.abs(x[4, :real] - avl).max() < 1e-4 < np.abs(x[4, :real] - avf).max()
        for rid in set(h5["record_id"]):
            np.testing.assert_array_equal(h5["start"][h5["record_id"] == rid], [0, 1024, 2048, 3072])
        n_windows += len(h5["data"])
        assert H5Dataset(str(out / f"mimic_pretrain_{split}.h5")).label_kind == "none"
    assert n_windows == 4 * len(GOOD)


def test_split_is_by_subject_and_broken_records_are_listed(tree: tuple[Path, dict], default_run: Path) -> None:
    out = default_run
    splits = json.loads((out / "record_splits.json").read_text())
    subject_of = {_rel(s, st): s for s, st, _ in RECORDS}
    assert sorted(splits["train"] + splits["val"]) == sorted(_rel(s, st) for s, st, _ in GOOD)
    train, val = ({subject_of[r] for r in splits[k]} for k in ("train", "val"))
    assert train and val and not train & val
    for split in ("train", "val"):
        with h5py.File(out / f"mimic_pretrain_{split}.h5") as f:
            assert set(f["record_id"].asstr()[:]) == set(splits[split])
    skipped = _skipped(out)
    by_kind = {special: _rel(s, st) for s, st, special in RECORDS if special not in (None, "nan_short")}
    assert set(skipped) == set(by_kind.values())
    assert "wfdb could not read" in skipped[by_kind["missing"]]
    assert "NaN run of 0.4 s" in skipped[by_kind["nan_long"]]
    assert "1000 samples" in skipped[by_kind["short"]] and "shorter than one window" in skipped[by_kind["short"]]
    info = json.loads((out / "preprocess_info.json").read_text())
    assert info["task"] == "pretrain" and info["class_names"] is None and info["num_channels"] == 12
    assert info["parameters"]["channels"] == STANDARD and info["parameters"]["normalize"] == "zscore"


def test_min_real_0_4_keeps_the_original_five_windows(tree: tuple[Path, dict], tmp_path: Path) -> None:
    root, sources = tree
    assert main(["--input", str(root), "--output", str(tmp_path), "--min_real", "0.4", "--limit", "3"]) == 0
    starts = {}
    for split in ("train", "val"):
        if (tmp_path / f"mimic_pretrain_{split}.h5").exists():
            h5 = _read(tmp_path / f"mimic_pretrain_{split}.h5")
            for rid in set(h5["record_id"]):
                starts[rid] = list(h5["start"][h5["record_id"] == rid])
                last = h5["data"][h5["record_id"] == rid][-1]
                assert np.all(last[:, 904:] == 0) and np.all(np.abs(last[:, :904]).max(1) > 0)
    assert starts and all(s == [0, 1024, 2048, 3072, 4096] for s in starts.values())


def test_walk_without_record_list(tmp_path: Path) -> None:
    root = tmp_path / "mimic-iv-ecg"
    _make_tree(root, RECORDS, record_list=False)
    refs, rejected = MIMICSource(parse_args(MIMICSource, ["--input", str(root)])).list_records()
    on_disk = [r for r in RECORDS if r[2] != "missing"]
    assert sorted((r.id, r.group) for r in refs) == sorted((_rel(s, st), s) for s, st, _ in on_disk)
    assert rejected == []
    assert main(["--input", str(root), "--output", str(tmp_path / "out")]) == 0
    splits = json.loads((tmp_path / "out" / "record_splits.json").read_text())
    assert sorted(splits["train"] + splits["val"]) == sorted(_rel(s, st) for s, st, _ in GOOD)


def test_record_list_rows_without_subject_use_the_folder(tmp_path: Path) -> None:
    root = tmp_path / "m"
    (root / "files").mkdir(parents=True)
    (root / "record_list.csv").write_text("subject_id,path\n,files/p1000/p10000032/s1/1.hea\n7,files/x/2\n,\n"
                                          ",files/x/3\n")
    refs, rejected = MIMICSource(parse_args(MIMICSource, ["--input", str(root)])).list_records()
    assert [(r.id, r.group) for r in refs] == [("files/p1000/p10000032/s1/1", "10000032"), ("files/x/2", "7")]
    assert [r for r, _ in rejected] == ["record_list.csv line 4", "files/x/3"]


def test_no_usable_record_fails_and_leaves_no_file(tmp_path: Path) -> None:
    root = tmp_path / "mimic-iv-ecg"
    _make_tree(root, [r for r in RECORDS if r[2] in ("short", "nan_long", "missing")])
    assert main(["--input", str(root)]) != 0
    assert not list(root.rglob("*.h5*"))


def test_input_without_list_or_files_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--input", str(tmp_path), "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert "neither record_list.csv nor a files/ folder" in err and "\n" not in err
