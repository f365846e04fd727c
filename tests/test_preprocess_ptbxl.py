"""PTB-XL preprocessing on a native-layout mini database (ptbxl_database.csv, scp_statements.csv, WFDB records
written with wfdb.wrsamp from the real PTB-XL/Georgia Challenge records, synthetic when ../shared is absent):
labels by the single and multi-label superclass rules and by the six statement tasks of the PTB-XL benchmark
(all, diagnostic, subdiagnostic, superdiagnostic, form, rhythm) over the real statement table, the official fold
split, windows traced back to the source, corrupted records in skipped.csv, the script run as a subprocess, and
--workers 2 == --workers 1."""
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
from physiowave.preprocess.ptbxl import (PTBXLSource, Statement, main, read_statements, superclass_label,
                                        task_classes, task_labels)
from physiowave.preprocess.readers import read_challenge

ROOT = Path(__file__).resolve().parents[1]
LEADS = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]  # as PTB-XL headers name them
GAIN = 1000.0  # digital units per mV, as in PTB-XL
NORM, MI, STTC, CD, HYP = range(5)

# The real scp_statements.csv of PTB-XL (all 71 statements): code, flags (D diagnostic, F form, R rhythm),
# diagnostic_class, diagnostic_subclass ("-": empty).
STATEMENT_TABLE = """
NDT DF STTC STTC; NST_ DF STTC NST_; DIG DF STTC STTC; LNGQT DF STTC STTC; NORM D NORM NORM; IMI D MI IMI
ASMI D MI AMI; LVH D HYP LVH; LAFB D CD LAFB/LPFB; ISC_ D STTC ISC_; IRBBB D CD IRBBB; 1AVB D CD _AVB
IVCD D CD IVCD; ISCAL D STTC ISCA; CRBBB D CD CRBBB; CLBBB D CD CLBBB; ILMI D MI IMI; LAO/LAE D HYP LAO/LAE
AMI D MI AMI; ALMI D MI AMI; ISCIN D STTC ISCI; INJAS D MI AMI; LMI D MI LMI; ISCIL D STTC ISCI
LPFB D CD LAFB/LPFB; ISCAS D STTC ISCA; INJAL D MI AMI; ISCLA D STTC ISCA; RVH D HYP RVH; ANEUR D STTC STTC
RAO/RAE D HYP RAO/RAE; EL D STTC STTC; WPW D CD WPW; ILBBB D CD ILBBB; IPLMI D MI IMI; ISCAN D STTC ISCA
IPMI D MI IMI; SEHYP D HYP SEHYP; INJIN D MI IMI; INJLA D MI AMI; PMI D MI PMI; 3AVB D CD _AVB
INJIL D MI IMI; 2AVB D CD _AVB; ABQRS F - -; PVC F - -; STD_ F - -; VCLVH F - -; QWAVE F - -; LOWT F - -
NT_ F - -; PAC F - -; LPR F - -; INVT F - -; LVOLT F - -; HVOLT F - -; TAB_ F - -; STE_ F - -; PRC(S) F - -
SR R - -; AFIB R - -; STACH R - -; SARRH R - -; SBRAD R - -; PACE R - -; SVARR R - -; BIGU R - -; AFLT R - -
SVTAC R - -; PSVT R - -; TRIGU R - -
"""
STATEMENTS = {code: (flags, None if cls == "-" else cls, None if sub == "-" else sub)
              for code, flags, cls, sub in (e.split() for e in STATEMENT_TABLE.replace("\n", ";").split(";")
                                            if e.strip())}
TASKS = ("all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm")


def _hot(*classes: int) -> list[float]:
    return [1.0 if i in classes else 0.0 for i in range(5)]


# ecg_id, patient_id, strat_fold, scp_codes, single-label rule result, multi-label rule result, what is broken.
# single: highest superclass index among diagnostic codes with likelihood >= 80; multi: all diagnostic codes.
RECORDS = [
    (1, 100, 1, {"NORM": 100.0, "SR": 0.0}, NORM, _hot(NORM), None),
    (2, 100, 1, {"IMI": 100.0, "LVH": 50.0, "SR": 0.0}, MI, _hot(MI, HYP), None),   # LVH below 80
    (3, 101, 3, {"NDT": 100.0, "IMI": 80.0}, STTC, _hot(MI, STTC), None),            # both count, STTC > MI
    (4, 102, 8, {"CLBBB": 100.0, "1AVB": 0.0, "AFIB": 0.0}, CD, _hot(CD), None),
    (5, 103, 9, {"LVH": 100.0, "NORM": 80.0, "PVC": 0.0, "SR": 0.0}, HYP, _hot(NORM, HYP), None),
    (6, 104, 10, {"NORM": 100.0, "SR": 0.0}, NORM, _hot(NORM), None),
    (7, 105, 9, {"ILMI": 100.0, "ASMI": 15.0}, MI, _hot(MI), None),
    (8, 106, 10, {"NDT": 50.0, "NST_": 0.0, "SR": 0.0}, None, _hot(STTC), None),    # all likelihoods < 80
    (9, 107, 2, {"CLBBB": 100.0}, CD, _hot(CD), "no_dat"),
    (10, 108, 5, {"SR": 0.0, "XYZ": 100.0}, None, None, None),                      # no diagnostic code
    (11, 109, 4, {"NORM": 100.0}, NORM, _hot(NORM), "11_leads"),
    (12, 110, 6, {"LVH": 100.0}, HYP, _hot(HYP), "truncated"),
    (13, 111, 10, {"ABQRS": 0.0, "STACH": 0.0}, None, None, None),                  # form and rhythm only
    (14, 112, 7, {"XYZ": 50.0}, None, None, None),                                  # XYZ: not a statement
]

# The statement tasks, checked by hand against STATEMENT_TABLE: ecg_id → labels of the records that have one (the
# others are dropped from the task); every likelihood counts. The classes are the labels of all listed records,
# sorted (the broken records' codes occur in usable records too).
TASK_LABELS = {
    "all": {1: "NORM SR", 2: "IMI LVH SR", 3: "IMI NDT", 4: "1AVB AFIB CLBBB", 5: "LVH NORM PVC SR", 6: "NORM SR",
            7: "ASMI ILMI", 8: "NDT NST_ SR", 9: "CLBBB", 10: "SR", 11: "NORM", 12: "LVH", 13: "ABQRS STACH"},
    "diagnostic": {1: "NORM", 2: "IMI LVH", 3: "IMI NDT", 4: "1AVB CLBBB", 5: "LVH NORM", 6: "NORM",
                   7: "ASMI ILMI", 8: "NDT NST_", 9: "CLBBB", 11: "NORM", 12: "LVH"},
    "subdiagnostic": {1: "NORM", 2: "IMI LVH", 3: "IMI STTC", 4: "CLBBB _AVB", 5: "LVH NORM", 6: "NORM",
                      7: "AMI IMI", 8: "NST_ STTC", 9: "CLBBB", 11: "NORM", 12: "LVH"},
    "superdiagnostic": {1: "NORM", 2: "HYP MI", 3: "MI STTC", 4: "CD", 5: "HYP NORM", 6: "NORM", 7: "MI", 8: "STTC",
                        9: "CD", 11: "NORM", 12: "HYP"},
    "form": {3: "NDT", 5: "PVC", 8: "NDT NST_", 13: "ABQRS"},
    "rhythm": {1: "SR", 2: "SR", 4: "AFIB", 5: "SR", 6: "SR", 8: "SR", 10: "SR", 13: "STACH"},
}
TASK_CLASSES = {
    "all": "1AVB ABQRS AFIB ASMI CLBBB ILMI IMI LVH NDT NORM NST_ PVC SR STACH",
    "diagnostic": "1AVB ASMI CLBBB ILMI IMI LVH NDT NORM NST_",
    "subdiagnostic": "AMI CLBBB IMI LVH NORM NST_ STTC _AVB",
    "superdiagnostic": "CD HYP MI NORM STTC",
    "form": "ABQRS NDT NST_ PVC",
    "rhythm": "AFIB SR STACH",
}


def _definition_labels(codes: list[str], task: str) -> set[str]:
    """A record's labels for a statement task, straight from the definitions of STATEMENT_TABLE."""
    flag = {"diagnostic": "D", "subdiagnostic": "D", "superdiagnostic": "D", "form": "F", "rhythm": "R"}
    out = set()
    for code in codes:
        if code not in STATEMENTS:
            continue
        flags, cls, sub = STATEMENTS[code]
        if task == "all":
            out.add(code)
        elif flag[task] in flags:
            out.add({"subdiagnostic": sub, "superdiagnostic": cls}.get(task, code))
    return out


def _hr(ecg_id: int) -> str:
    return f"records500/00000/{ecg_id:05d}_hr"


def _lr(ecg_id: int) -> str:
    return f"records100/00000/{ecg_id:05d}_lr"


def _source_signals(n: int) -> list[np.ndarray]:
    """n 12-lead 10 s 500 Hz signals as int16 digital values [5000, 12] (gain 1000/mV): the real PTB-XL (HR*)
    and Georgia (E*) Challenge records when ../shared is present, else seeded random walks."""
    from tests.conftest import SHARED
    real = SHARED / "data/real/torch_ecg_cinc2021"
    if real.is_dir():
        heas = (sorted(real.glob("HR*.hea")) + sorted(real.glob("E*.hea")))[:n]
        out = []
        for hea in heas:
            rec = read_challenge(hea)
            digital = np.round(rec.signal.T.astype(np.float64) * GAIN)
            assert np.abs(digital / GAIN - rec.signal.T).max() < 1e-6  # the source really is 1000/mV
            out.append(digital.astype(np.int16))
        return out
    rng = np.random.default_rng(0)
    return [np.cumsum(rng.normal(0, 20, (5000, 12)), axis=0).astype(np.int16) for _ in range(n)]


def _write(path: Path, digital: np.ndarray, fs: int, names: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    c = digital.shape[1]
    wfdb.wrsamp(path.name, fs=fs, units=["mV"] * c, sig_name=names, d_signal=digital, fmt=["16"] * c,
                adc_gain=[GAIN] * c, baseline=[0] * c, write_dir=str(path.parent))


def _write_statements(root: Path) -> None:
    """``scp_statements.csv``: every statement of :data:`STATEMENTS` with its real flags, class and subclass."""
    with open(root / "scp_statements.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", "description", "diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass"])
        for code, (flags, cls, sub) in STATEMENTS.items():
            w.writerow([code, "", *("1.0" if f in flags else "" for f in "DFR"), cls or "", sub or ""])


def _make_tree(root: Path, records: list[tuple]) -> dict[str, np.ndarray]:
    """Write the mini database; returns record path → source signal in mV, float64 [12, T] (standard order)."""
    root.mkdir(parents=True, exist_ok=True)
    _write_statements(root)
    with open(root / "ptbxl_database.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ecg_id", "patient_id", "age", "sex", "scp_codes", "strat_fold", "filename_lr", "filename_hr"])
        for ecg_id, patient, fold, codes, *_ in records:
            w.writerow([ecg_id, f"{patient}.0", 56.0, 1, repr(codes), fold, _lr(ecg_id), _hr(ecg_id)])
    sources = {}
    for (ecg_id, *_, broken), digital in zip(records, _source_signals(len(records))):
        names = LEADS
        if broken == "11_leads":
            digital, names = digital[:, :11], LEADS[:11]
        _write(root / _hr(ecg_id), digital, 500, names)
        _write(root / _lr(ecg_id), np.ascontiguousarray(digital[::5]), 100, names)
        dat = root / f"{_hr(ecg_id)}.dat"
        if broken == "no_dat":
            dat.unlink()
        elif broken == "truncated":
            os.truncate(dat, dat.stat().st_size // 2)
        sources[_hr(ecg_id)] = digital.T.astype(np.float64) / GAIN
        sources[_lr(ecg_id)] = digital[::5].T.astype(np.float64) / GAIN
    return sources


def _minmax(v: np.ndarray) -> np.ndarray:
    """Per-channel min-max to [-1, 1] of v [C, n] (a constant channel → 0)."""
    lo, hi = v.min(1, keepdims=True), v.max(1, keepdims=True)
    return np.where(hi > lo, 2 * (v - lo) / np.where(hi > lo, hi - lo, 1) - 1, 0)


def _read(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path) as f:
        return {"data": f["data"][:], "label": f["label"][:], "record_id": f["record_id"].asstr()[:],
                "start": f["start"][:], "fs": f.attrs["fs"], "class_names": list(f.attrs["class_names"])}


def _skipped(out: Path) -> dict[str, str]:
    with open(out / "skipped.csv", newline="") as f:
        return {row["record"]: row["reason"] for row in csv.DictReader(f)}


def _check_windows(h5: dict[str, np.ndarray], sources: dict[str, np.ndarray], window: int) -> None:
    """Every window equals its source slice, min-max normalised on its real samples, zero-padded."""
    for x, rid, s in zip(h5["data"], h5["record_id"], h5["start"]):
        src = sources[rid]
        real = min(window, src.shape[1] - s)
        expected = np.zeros((12, window))
        expected[:, :real] = _minmax(src[:, s:s + real])
        np.testing.assert_allclose(x, expected, atol=1e-5, err_msg=f"{rid} @ {s}")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("ptbxl") / "PTBXL"
    return root, _make_tree(root, RECORDS)


@pytest.fixture(scope="module")
def single_run(tree: tuple[Path, dict]) -> Path:
    """The default run (no --output: the files go into the PTB-XL root, as the original's)."""
    root, _ = tree
    assert main(["--input", str(root)]) == 0
    return root


def test_single_label_values_splits_and_skipped(tree: tuple[Path, dict], single_run: Path) -> None:
    root, sources = tree
    out = single_run
    fold_split = {f: "train" if f <= 8 else "val" if f == 9 else "test" for f in range(1, 11)}
    usable = {_hr(r[0]): r for r in RECORDS if r[4] is not None and r[6] is None}
    seen, patient_splits = set(), {}
    for split in ("train", "val", "test"):
        h5 = _read(out / f"{split}.h5")
        assert h5["data"].shape[1:] == (12, 2048) and h5["fs"] == 500.0
        _check_windows(h5, sources, 2048)
        for rid in set(h5["record_id"]):
            ecg_id, patient, fold, _, label, _, _ = usable[rid]
            assert fold_split[fold] == split
            assert (h5["label"][h5["record_id"] == rid] == label).all()
            np.testing.assert_array_equal(h5["start"][h5["record_id"] == rid], [0, 1024, 2048, 3072])
            patient_splits.setdefault(patient, set()).add(split)
            seen.add(rid)
        ds = H5Dataset(str(out / f"{split}.h5"))
        assert ds.label_kind == "single" and ds.num_channels == 12 and len(ds) == len(h5["data"])
    assert seen == set(usable)
    assert all(len(s) == 1 for s in patient_splits.values())

    skipped = _skipped(out)
    assert set(skipped) == {_hr(i) for i in (8, 9, 10, 11, 12, 13, 14)}
    assert "likelihood >= 80" in skipped[_hr(8)] and "NDT" in skipped[_hr(8)]
    assert "no diagnostic superclass" in skipped[_hr(10)]
    assert "00009_hr.hea: signal file 00009_hr.dat not found" in skipped[_hr(9)]  # the reader's fast path
    assert "00012_hr.dat: truncated .dat: expected 120000 bytes" in skipped[_hr(12)]
    assert "found 60000" in skipped[_hr(12)]
    assert "missing channel(s) V6" in skipped[_hr(11)]

    info = json.loads((out / "preprocess_info.json").read_text())
    assert info["class_names"] == ["NORM", "MI", "STTC", "CD", "HYP"] and info["task"] == "classification"
    assert info["class_codes"] == {c: sorted(k for k, (f, cls, _) in STATEMENTS.items() if "D" in f and cls == c)
                                   for c in ("NORM", "MI", "STTC", "CD", "HYP")}
    assert info["class_codes"]["CD"][:3] == ["1AVB", "2AVB", "3AVB"] and len(info["class_codes"]["MI"]) == 14
    assert info["sampling_rate"] == 500.0 and info["num_channels"] == 12
    assert info["parameters"]["min_likelihood"] == 80.0 and info["parameters"]["normalize"] == "minmax"
    assert {s: v["records"] for s, v in info["splits"].items()} == {"train": 4, "val": 2, "test": 1}


def test_multilabel_as_a_subprocess_of_the_script(tree: tuple[Path, dict], tmp_path: Path) -> None:
    root, sources = tree
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "ECG/ptbxl_finetune.py", "--input", str(root), "--output",
                           str(tmp_path), "--task", "multilabel"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    expected = {_hr(r[0]): np.array(r[5], np.float32) for r in RECORDS if r[5] is not None and r[6] is None}
    seen = set()
    for split in ("train", "val", "test"):
        h5 = _read(tmp_path / f"{split}.h5")
        assert h5["label"].dtype == np.float32 and h5["label"].shape[1:] == (5,)
        for rid, y in zip(h5["record_id"], h5["label"]):
            np.testing.assert_array_equal(y, expected[rid])
            seen.add(rid)
        _check_windows(h5, sources, 2048)
        assert H5Dataset(str(tmp_path / f"{split}.h5")).label_kind == "multi"
    assert seen == set(expected)  # record 8 (likelihoods < 80) is kept here
    assert set(_skipped(tmp_path)) == {_hr(i) for i in (9, 10, 11, 12, 13, 14)}


def _refs(root: Path, *flags: str) -> list:
    args = parse_args(PTBXLSource, ["--input", str(root), *flags])
    refs, _ = PTBXLSource(args).list_records()
    return refs


def test_min_likelihood_and_rate_pick_labels_and_files(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    refs = {r.id: r for r in _refs(root, "--min_likelihood", "50")}
    assert refs[_hr(8)].label == STTC and refs[_hr(2)].label == HYP  # now LVH (50) counts and outranks MI
    assert refs[_hr(1)].group == refs[_hr(2)].group == "100"
    refs = _refs(root, "--rate", "100")
    assert {r.source for r in refs} == {_lr(r[0]) for r in RECORDS if r[4] is not None}


def test_rate_100_reads_the_low_rate_records(tree: tuple[Path, dict], tmp_path: Path) -> None:
    root, sources = tree
    assert main(["--input", str(root), "--output", str(tmp_path), "--rate", "100", "--window", "1000",
                 "--step", "500"]) == 0
    h5 = _read(tmp_path / "train.h5")
    assert h5["fs"] == 100.0 and all(r.startswith("records100/") for r in h5["record_id"])
    _check_windows(h5, sources, 1000)


def test_two_workers_write_identical_arrays(tree: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = tree
    for w in ("1", "2"):
        assert main(["--input", str(root), "--output", str(tmp_path / w), "--workers", w]) == 0
    for split in ("train", "val", "test"):
        a, b = _read(tmp_path / "1" / f"{split}.h5"), _read(tmp_path / "2" / f"{split}.h5")
        for key in ("data", "label", "start"):
            assert a[key].tobytes() == b[key].tobytes()
        assert list(a["record_id"]) == list(b["record_id"])


def test_no_usable_record_fails_and_leaves_no_file(tmp_path: Path) -> None:
    root = tmp_path / "PTBXL"
    _make_tree(root, [r for r in RECORDS if r[0] in (9, 10)])  # a missing .dat and a record without a label
    assert main(["--input", str(root), "--output", str(tmp_path / "out")]) != 0
    assert not list((tmp_path / "out").glob("*.h5*"))


@pytest.mark.parametrize("flags, message", [
    (["--split", "0.8", "0.1", "0.1"], "unrecognized arguments: --split"),  # the official folds decide
    (["--task", "multilabel", "--min_likelihood", "50"], "--min_likelihood applies to --task single only"),
    (["--task", "form", "--min_likelihood", "50"], "--min_likelihood applies to --task single only"),
    (["--task", "statements"], "invalid choice"),
])
def test_flags_that_do_not_apply_are_errors(tree: tuple[Path, dict], flags: list[str], message: str,
                                            capsys: pytest.CaptureFixture) -> None:
    root, _ = tree
    try:
        rc = main(["--input", str(root), *flags])
    except SystemExit as e:  # argparse errors exit 2
        rc = e.code
    assert rc != 0
    assert message in capsys.readouterr().err


def test_missing_index_file_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "scp_statements.csv").write_text(",description,diagnostic,diagnostic_class\nNORM,x,1.0,NORM\n")
    assert main(["--input", str(tmp_path), "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert "ptbxl_database.csv: not found" in err and "\n" not in err


def test_superclass_rule() -> None:
    diag = {"NORM": "NORM", "IMI": "MI", "LVH": "HYP"}
    assert superclass_label({"IMI": 100.0, "NORM": 100.0}, diag, multilabel=False) == MI
    assert superclass_label({"LVH": 79.0}, diag, multilabel=False) is None
    np.testing.assert_array_equal(superclass_label({"LVH": 0.0, "SR": 0.0}, diag, multilabel=True), _hot(HYP))


# --------------------------------------------------------------------------- the statement tasks of the benchmark

def test_statement_table_has_the_published_definition_counts(tmp_path: Path) -> None:
    """The table the fixture writes is the real one: 71 statements, 44 diagnostic, 19 form (4 of them also
    diagnostic), 12 rhythm, 23 diagnostic subclasses, 5 superclasses; the reader agrees."""
    flags = [f for f, _, _ in STATEMENTS.values()]
    assert len(STATEMENTS) == 71
    assert (sum("D" in f for f in flags), sum("F" in f for f in flags), sum("R" in f for f in flags)) == (44, 19, 12)
    assert sorted(c for c, (f, _, _) in STATEMENTS.items() if f == "DF") == ["DIG", "LNGQT", "NDT", "NST_"]
    assert len({sub for f, _, sub in STATEMENTS.values() if "D" in f}) == 23
    assert {cls for f, cls, _ in STATEMENTS.values() if "D" in f} == {"NORM", "MI", "STTC", "CD", "HYP"}
    _make_tree(tmp_path, [])
    statements = read_statements(tmp_path / "scp_statements.csv")
    counts = {task: len(task_classes(statements, task)) for task in TASKS}
    assert counts == {"all": 71, "diagnostic": 44, "subdiagnostic": 23, "superdiagnostic": 5, "form": 19, "rhythm": 12}


def test_a_database_with_every_statement_gives_the_published_class_counts(tmp_path: Path) -> None:
    """Listing only (no signal is read): records that together carry all 71 statements → 71/44/23/5/19/12 classes."""
    codes = list(STATEMENTS)
    records = [(i + 1, i, i % 10 + 1, {c: 0.0 for c in codes[i::7]}, None, None, None) for i in range(7)]
    root = tmp_path / "PTBXL"
    root.mkdir()
    _write_statements(root)
    with open(root / "ptbxl_database.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ecg_id", "patient_id", "scp_codes", "strat_fold", "filename_lr", "filename_hr"])
        for ecg_id, patient, fold, rec_codes, *_ in records:
            w.writerow([ecg_id, patient, repr(rec_codes), fold, _lr(ecg_id), _hr(ecg_id)])
    counts = {}
    for task in TASKS:
        source = PTBXLSource(parse_args(PTBXLSource, ["--input", str(root), "--task", task]))
        source.list_records()
        counts[task] = len(source.class_names)
        assert source.class_names == sorted(task_classes(read_statements(root / "scp_statements.csv"), task))
    assert counts == {"all": 71, "diagnostic": 44, "subdiagnostic": 23, "superdiagnostic": 5, "form": 19, "rhythm": 12}


def test_fixture_classes_follow_the_definitions(tree: tuple[Path, dict]) -> None:
    """Per task, the classes the source finds in the fixture == the hand-checked list == a direct computation from
    the table's definitions over every listed record; the fixture's tasks have distinct counts."""
    root, _ = tree
    for task in TASKS:
        direct = sorted(set().union(*(_definition_labels(list(r[3]), task) for r in RECORDS)))
        source = PTBXLSource(parse_args(PTBXLSource, ["--input", str(root), "--task", task]))
        refs, skipped = source.list_records()
        assert source.class_names == direct == TASK_CLASSES[task].split(), task
        for r in RECORDS:  # the hand-checked labels == the definitions'
            assert _definition_labels(list(r[3]), task) == set(TASK_LABELS[task].get(r[0], "").split()), (task, r[0])
        dropped = {_hr(r[0]) for r in RECORDS if not _definition_labels(list(r[3]), task)}
        assert {rid for rid, _ in skipped} == dropped and len(refs) + len(dropped) == len(RECORDS)
    assert len({len(v.split()) for v in TASK_CLASSES.values()}) == len(TASKS)  # 14, 9, 8, 5, 4, 3


@pytest.mark.parametrize("task, rate", [("all", 100), ("diagnostic", 500), ("subdiagnostic", 100),
                                        ("superdiagnostic", 500), ("form", 100), ("rhythm", 500)])
def test_statement_task_labels_splits_and_skipped(tree: tuple[Path, dict], tmp_path: Path, task: str,
                                                  rate: int) -> None:
    root, sources = tree
    flags = ["--window", "1000", "--step", "1000"] if rate == 100 else []
    assert main(["--input", str(root), "--output", str(tmp_path), "--task", task, "--rate", str(rate), *flags]) == 0
    classes = TASK_CLASSES[task].split()
    rid = _lr if rate == 100 else _hr
    by_id = {r[0]: r for r in RECORDS}
    # the 100 Hz files of records 9 (missing .dat) and 12 (truncated) are intact: only record 11 is broken there
    broken = {rid(r[0]) for r in RECORDS if r[6] is not None and (rate == 500 or r[6] == "11_leads")}
    expected = {rid(i): np.array([c in labels.split() for c in classes], np.float32)
                for i, labels in TASK_LABELS[task].items() if rid(i) not in broken}
    fold_split = {f: "train" if f <= 8 else "val" if f == 9 else "test" for f in range(1, 11)}
    seen = set()
    for split in ("train", "val", "test"):
        h5 = _read(tmp_path / f"{split}.h5")
        assert h5["class_names"] == classes and h5["fs"] == float(rate)
        assert h5["label"].dtype == np.float32 and h5["label"].shape[1:] == (len(classes),)
        for r, y in zip(h5["record_id"], h5["label"]):
            np.testing.assert_array_equal(y, expected[r], err_msg=f"{task} {r}")
            assert fold_split[by_id[int(Path(r).name[:5])][2]] == split
            seen.add(r)
        _check_windows(h5, sources, 1000 if rate == 100 else 2048)
        assert H5Dataset(str(tmp_path / f"{split}.h5")).label_kind == "multi"
    assert seen == set(expected)

    skipped = _skipped(tmp_path)
    dropped = {rid(r[0]) for r in RECORDS if r[0] not in TASK_LABELS[task]}
    assert dropped and set(skipped) == dropped | broken
    for r in dropped:
        assert skipped[r].startswith(f"--task {task}: no ") and "among scp codes" in skipped[r]
    info = json.loads((tmp_path / "preprocess_info.json").read_text())
    assert info["class_names"] == classes and info["task"] == "multilabel" and info["parameters"]["task"] == task
    assert list(info["class_codes"]) == classes


def test_statement_task_reasons_name_what_is_missing(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    reasons = {}
    for task in TASKS:
        _, skipped = PTBXLSource(parse_args(PTBXLSource, ["--input", str(root), "--task", task])).list_records()
        reasons[task] = dict(skipped)
    assert reasons["all"][_hr(14)] == "--task all: no code listed in scp_statements.csv among scp codes XYZ"
    assert reasons["rhythm"][_hr(3)] == "--task rhythm: no rhythm statement among scp codes NDT, IMI"
    assert reasons["form"][_hr(1)] == "--task form: no form statement among scp codes NORM, SR"
    assert (reasons["superdiagnostic"][_hr(10)]
            == "--task superdiagnostic: no diagnostic superclass among scp codes SR, XYZ")
    assert "no diagnostic subclass" in reasons["subdiagnostic"][_hr(13)]
    assert "no diagnostic statement" in reasons["diagnostic"][_hr(13)]


def test_superdiagnostic_matches_multilabel_in_its_own_column_order(tree: tuple[Path, dict]) -> None:
    """--task multilabel (columns NORM MI STTC CD HYP) and superdiagnostic (sorted: CD HYP MI NORM STTC) give the
    same label sets on the same records."""
    root, _ = tree
    ml = {r.id: r.label for r in _refs(root, "--task", "multilabel")}
    sd = {r.id: r.label for r in _refs(root, "--task", "superdiagnostic")}
    assert set(ml) == set(sd)
    order = [["NORM", "MI", "STTC", "CD", "HYP"].index(c) for c in ("CD", "HYP", "MI", "NORM", "STTC")]
    for rid in ml:
        np.testing.assert_array_equal(ml[rid][order], sd[rid])


def test_statement_tasks_need_their_columns(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A statement table without the rhythm column: --task rhythm is a one-line error, --task single still works on
    a table with only diagnostic and diagnostic_class (as benchmarks/bench_prep.py writes)."""
    (tmp_path / "scp_statements.csv").write_text(",diagnostic,diagnostic_class\nNORM,1.0,NORM\n")
    (tmp_path / "ptbxl_database.csv").write_text(
        'ecg_id,patient_id,scp_codes,strat_fold,filename_lr,filename_hr\n1,1,"{\'NORM\': 100.0}",1,a_lr,a_hr\n')
    refs = _refs(tmp_path)
    assert [(r.id, r.label, r.split) for r in refs] == [("a_hr", NORM, "train")]
    assert main(["--input", str(tmp_path), "--output", str(tmp_path / "out"), "--task", "rhythm"]) == 1
    assert "missing column(s) rhythm" in capsys.readouterr().err


def test_task_label_rules() -> None:
    """The aggregation rules on a made-up table: a class or subclass counts only on a diagnostic statement, empty
    ones are ignored, codes missing from the table are ignored, likelihoods play no part."""
    table = {"A": Statement(diagnostic=True, form=True, diagnostic_class="MI", diagnostic_subclass="IMI"),
             "B": Statement(diagnostic=False, diagnostic_class="CD", diagnostic_subclass="IVCD"),
             "C": Statement(rhythm=True), "D": Statement(diagnostic=True, diagnostic_class="NORM")}
    codes = {"A": 0.0, "B": 100.0, "C": 0.0, "D": 50.0, "Z": 100.0}
    assert task_labels(codes, table, "all") == {"A", "B", "C", "D"}
    assert task_labels(codes, table, "diagnostic") == {"A", "D"}
    assert task_labels(codes, table, "subdiagnostic") == {"IMI"}
    assert task_labels(codes, table, "superdiagnostic") == {"MI", "NORM"}
    assert task_labels(codes, table, "form") == {"A"} and task_labels(codes, table, "rhythm") == {"C"}
    assert task_classes(table, "superdiagnostic") == {"MI": ["A"], "NORM": ["D"]}
