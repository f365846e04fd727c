"""CPSC 2018 and Chapman-Shaoxing preprocessing on the real Challenge-format records: labels from the header
codes, stratified record-level splits, windows traced back to the source, and the files train."""
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

from physiowave.data import H5Dataset
from physiowave.preprocess.cpsc2018 import main as cpsc_main
from physiowave.preprocess.shaoxing import main as shaoxing_main

ROOT = Path(__file__).resolve().parents[1]
CINC = "data/real/torch_ecg_cinc2021"


def _dx(hea: Path) -> set[str]:
    line = next(ln for ln in hea.read_text().splitlines() if ln.startswith("# Dx:"))
    return set(re.findall(r"\d+", line))


def _z(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.float64)
    return (v - v.mean(1, keepdims=True)) / (v.std(1, keepdims=True) + 1e-8)


@pytest.fixture(scope="module")
def cpsc_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import SHARED
    if not SHARED.is_dir():
        pytest.skip(f"reference fixtures not available: {SHARED} is absent")
    out = tmp_path_factory.mktemp("cpsc")
    assert cpsc_main(["--input", str(SHARED / CINC), "--output", str(out)]) == 0
    return out


def test_cpsc_labels_follow_the_header_codes(shared: Path, cpsc_out: Path) -> None:
    table = {  # the 9 classes (original table + 63593006 for PAC), written out independently
        0: {"426783006"}, 1: {"164889003"}, 2: {"270492004"}, 3: {"733534002", "164909002"},
        4: {"713427006", "59118001"}, 5: {"284470004", "63593006"}, 6: {"427172004", "164884008", "17338001"},
        7: {"429622005"}, 8: {"164931005"}}
    src = shared / CINC
    expected = {}
    for hea in sorted(src.glob("*.hea")):
        y = np.array([bool(_dx(hea) & codes) for codes in table.values()], np.float32)
        expected[hea.stem] = y
    kept = {r for r, y in expected.items() if y.any()}
    splits = json.loads((cpsc_out / "record_splits.json").read_text())
    assert sorted(sum(splits.values(), [])) == sorted(kept)
    skipped = {row["record"]: row["reason"] for row in csv.DictReader(open(cpsc_out / "skipped.csv"))}
    assert set(skipped) == set(expected) - kept
    assert all("no code among the 9 classes" in r for r in skipped.values())
    for split in ("train", "val", "test"):
        with h5py.File(cpsc_out / f"cpsc_9class_{split}.h5") as f:
            assert f["data"].shape[1:] == (12, 2048) and f["label"].dtype == np.float32
            assert list(f.attrs["class_names"]) == ["SNR", "AF", "IAVB", "LBBB", "RBBB", "PAC", "PVC", "STD", "STE"]
            for rid, y in zip(f["record_id"].asstr()[:], f["label"][:]):
                np.testing.assert_array_equal(y, expected[rid])
    info = json.loads((cpsc_out / "preprocess_info.json").read_text())
    assert info["class_codes"]["PAC"] == ["284470004", "63593006"]
    assert sum(s["records"] for s in info["splits"].values()) == len(kept)


def test_cpsc_maps_the_challenge_2021_pac_code(shared: Path, tmp_path: Path) -> None:
    """63593006 (SVPB) is PAC in Challenge 2021 headers; the original table missed it."""
    src, root = shared / CINC, tmp_path / "in" / "g1"
    root.mkdir(parents=True)
    for name, dx in (("A0001", "63593006"), ("A0002", "63593006,164889003"), ("A0003", "11157007")):
        text = (src / "E07500.hea").read_text().replace("E07500", name)
        (root / f"{name}.hea").write_text(re.sub(r"# Dx: .*", f"# Dx: {dx}", text))
        (root / f"{name}.mat").write_bytes((src / "E07500.mat").read_bytes())
    out = tmp_path / "out"
    assert cpsc_main(["--input", str(tmp_path / "in"), "--output", str(out), "--split", "1", "0", "0"]) == 0
    with h5py.File(out / "cpsc_9class_train.h5") as f:
        labels = dict(zip(f["record_id"].asstr()[:], f["label"][:]))
    assert set(labels) == {"A0001", "A0002"}
    assert labels["A0001"].tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0]
    assert labels["A0002"].tolist() == [0, 1, 0, 0, 0, 1, 0, 0, 0]
    assert "A0003" in (out / "skipped.csv").read_text()
    assert not (out / "cpsc_9class_val.h5").exists()  # an empty split writes no file


def test_cpsc_windows_trace_back_to_the_source(shared: Path, cpsc_out: Path) -> None:
    with h5py.File(cpsc_out / "cpsc_9class_val.h5") as f:
        ids, starts, data = f["record_id"].asstr()[:], f["start"][:], f["data"][:]
    assert len(ids) == 4 * len(set(ids))      # 5000 samples: starts 0, 1024, 2048, 3072 (1928 real + 120 zeros)
    assert sorted(set(starts)) == [0, 1024, 2048, 3072]
    for i in range(len(ids)):
        raw = scipy.io.loadmat(shared / CINC / f"{ids[i]}.mat")["val"] / 1000.0
        seg = raw[:, starts[i]:starts[i] + 2048]   # per-window z-score on real samples only
        np.testing.assert_allclose(data[i, :, :seg.shape[1]], _z(seg), atol=2e-5)
        assert not data[i, :, seg.shape[1]:].any()


def test_cpsc_split_is_stratified_on_records(shared: Path, cpsc_out: Path) -> None:
    info = json.loads((cpsc_out / "preprocess_info.json").read_text())
    recs = {s: v["records"] for s, v in info["splits"].items()}
    assert recs == {"train": 26, "val": 7, "test": 4}  # 37 records at 70/20/10
    splits = json.loads((cpsc_out / "record_splits.json").read_text())
    assert len(set(sum(splits.values(), []))) == 37


def test_shaoxing_st_grouping_and_record_scope_zscore(shared: Path, tmp_path: Path) -> None:
    src = shared / CINC
    for group in ("SR", "GSVT"):
        out = tmp_path / group
        assert shaoxing_main(["--input", str(src), "--output", str(out), "--st_group", group]) == 0
        labels = {}
        for split in ("train", "val", "test"):
            with h5py.File(out / f"{split}.h5") as f:
                labels.update(zip(f["record_id"].asstr()[:], f["label"][:]))
        st = [r for r in labels if "427084000" in _dx(src / f"{r}.hea")]
        assert len(st) > 5  # the real subset has 23 sinus-tachycardia records
        col = {"SR": 3, "GSVT": 2}[group]
        assert all(labels[r][col] == 1 for r in st)
    with h5py.File(tmp_path / "SR" / "train.h5") as f:
        rid, data, starts = f["record_id"].asstr()[:4], f["data"][:4], f["start"][:4]
    assert len(set(rid)) == 1
    whole = _z(scipy.io.loadmat(src / f"{rid[0]}.mat")["val"] / 1000.0)  # per-record statistics
    for w, s in zip(data, starts):
        seg = whole[:, s:s + 2048]
        np.testing.assert_allclose(w[:, :seg.shape[1]], seg, atol=2e-5)


def test_cpsc_files_train_with_finetune_multilabel(shared: Path, cpsc_out: Path, tmp_path: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "ECG/cpsc_multilabel.py", "--input", str(shared / CINC), "--output", str(tmp_path / "p"),
           "--workers", "2"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for split in ("train", "val", "test"):   # the script from a clone, 2 workers == the in-process 1-worker run
        with h5py.File(tmp_path / "p" / f"cpsc_9class_{split}.h5") as a, \
                h5py.File(cpsc_out / f"cpsc_9class_{split}.h5") as b:
            np.testing.assert_array_equal(a["data"][:], b["data"][:])
            np.testing.assert_array_equal(a["label"][:], b["label"][:])
    ds = H5Dataset([str(cpsc_out / "cpsc_9class_train.h5")])
    assert ds.label_kind == "multi" and ds.num_classes == 9
    train = [sys.executable, "finetune_multilabel.py", "--train_file", str(cpsc_out / "cpsc_9class_train.h5"),
             "--val_file", str(cpsc_out / "cpsc_9class_val.h5"), "--test_file", str(cpsc_out / "cpsc_9class_test.h5"),
             "--epochs", "1", "--batch_size", "16", "--max_level", "2", "--wave_kernel_size", "8",
             "--wavelet_names", "db4", "--patch_size", "64", "--embed_dim", "32", "--depth", "1", "--num_heads", "4",
             "--num_workers", "0", "--device", "cpu", "--output_dir", str(tmp_path / "run")]
    proc = subprocess.run(train, cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((tmp_path / "run" / "test_results.json").read_text())
    assert [c["name"] for c in res["per_class"]] == ["SNR", "AF", "IAVB", "LBBB", "RBBB", "PAC", "PVC", "STD", "STE"]
    assert sum(c["support"] for c in res["per_class"]) == int(ds_test_labels(cpsc_out).sum())


def ds_test_labels(out: Path) -> np.ndarray:
    with h5py.File(out / "cpsc_9class_test.h5") as f:
        return f["label"][:]
