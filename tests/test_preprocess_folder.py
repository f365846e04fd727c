"""The ``folder`` converter with labels parsed from file/folder names (``--label_regex``, ``--classes``) and
2- or 3-fraction group splits: the real Myo EMG CSVs (``R_<rep>_C_<class>_EMG.csv``) and tiny CSV/WFDB trees
written here, down to a fine-tuning run on the labelled output."""
from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import wfdb

from physiowave.preprocess.folder import main as folder_main
from physiowave.preprocess.folder import sort_class_names

MYO = "data/real/libemg_myo_testdata"
DEMO = ["--format", "csv", "--fs", "200", "--label_regex", r"C_(\d+)", "--group_regex", r"R_(\d+)",
        "--split", "0.5", "0.25", "0.25", "--window", "128", "--step", "32", "--normalize", "zscore",
        "--norm_scope", "record"]


def _read(path: Path) -> dict:
    with h5py.File(path) as f:
        out = {k: f[k][()] for k in f}
        out["record_id"] = f["record_id"].asstr()[()]
        out["attrs"] = dict(f.attrs)
    return out


def _skipped(out: Path) -> dict[str, str]:
    rows = (out / "skipped.csv").read_text().splitlines()[1:]
    return dict(r.split(",", 1) for r in rows)


def _demo(shared: Path, out: Path, *extra: str) -> Path:
    assert folder_main(["--input", str(shared / MYO), *DEMO, "--output", str(out), *extra]) == 0
    return out


# ------------------------------------------------------------------------------------------------ real Myo EMG

def test_myo_labels_follow_the_file_names_and_reps_split_2_1_1(shared: Path, tmp_path: Path) -> None:
    out = _demo(shared, tmp_path / "a")
    files = sorted(p.name for p in out.glob("*.h5"))
    assert files == ["test.h5", "train.h5", "val.h5"]
    reps: dict[str, set[str]] = {}
    n_windows = 0
    for split in ("train", "val", "test"):
        d = _read(out / f"{split}.h5")
        names = [str(n) for n in d["attrs"]["class_names"]]
        assert names == ["0", "1", "2", "3", "4"]
        assert d["label"].dtype == np.int64 and d["label"].shape == (len(d["data"]),)
        # each window's label is the class in the file name it came from
        parsed = [re.search(r"_C_(\d+)_", rid).group(1) for rid in d["record_id"]]
        np.testing.assert_array_equal(d["label"], [names.index(c) for c in parsed])
        for rid in d["record_id"]:
            assert (shared / MYO / f"{rid}.csv").is_file()
        reps[split] = {re.match(r"R_(\d+)_", rid).group(1) for rid in d["record_id"]}
        n_windows += len(d["data"])
    # 4 reps, 0.5/0.25/0.25 of the groups: 2/1/1 reps, each in exactly one split, every rep used
    assert sorted(len(r) for r in reps.values()) == [1, 1, 2] and len(reps["train"]) == 2
    assert set.union(*reps.values()) == {"0", "1", "2", "3"}
    assert sum(len(r) for r in reps.values()) == 4
    info = json.loads((out / "preprocess_info.json").read_text())
    assert info["task"] == "classification" and info["class_names"] == ["0", "1", "2", "3", "4"]
    assert sum(info["splits"][s]["windows"] for s in ("train", "val", "test")) == n_windows
    assert info["splits"]["test"]["record_label_distribution"] == {c: 1 for c in "01234"}
    # the same seed draws the same split
    again = _demo(shared, tmp_path / "b")
    assert (again / "record_splits.json").read_text() == (out / "record_splits.json").read_text()


def test_myo_records_as_groups_are_stratified_by_class(shared: Path, tmp_path: Path) -> None:
    """Without --group_regex each record is a group: 4 per class, so 2/1/1 records of every class."""
    out = tmp_path / "o"
    assert folder_main(["--input", str(shared / MYO), "--format", "csv", "--fs", "200", "--label_regex",
                        r"C_(\d+)", "--split", "0.5", "0.25", "0.25", "--window", "128", "--step", "64",
                        "--output", str(out)]) == 0
    splits = json.loads((out / "record_splits.json").read_text())
    for split, n in (("train", 2), ("val", 1), ("test", 1)):
        classes = sorted(re.search(r"_C_(\d+)_", r).group(1) for r in splits[split])
        assert classes == sorted("01234" * n), (split, classes)


def test_myo_labelled_output_finetunes_with_five_classes(shared: Path, tmp_path: Path) -> None:
    from physiowave.engine import main
    torch.set_num_threads(1)
    out = _demo(shared, tmp_path / "data")
    ft = tmp_path / "ft"
    assert main("finetune", ["--train_file", str(out / "train.h5"), "--val_file", str(out / "val.h5"),
                             "--test_file", str(out / "test.h5"), "--embed_dim", "32", "--depth", "1",
                             "--num_heads", "2", "--patch_size", "16", "--epochs", "1", "--batch_size", "16",
                             "--num_workers", "0", "--device", "cpu", "--output_dir", str(ft)]) == 0
    res = json.loads((ft / "test_results.json").read_text())
    cm = np.array(res["confusion_matrix"])
    assert cm.shape == (5, 5)
    labels = _read(out / "test.h5")["label"]
    np.testing.assert_array_equal(cm.sum(1), np.bincount(labels, minlength=5))  # rows = true classes
    assert [c["name"] for c in res["per_class"]] == ["0", "1", "2", "3", "4"]


# ------------------------------------------------------------------------------------------------ tiny CSV tree

CLASSES_CSV = ["10", "2", "9"]


def _csv_tree(root: Path) -> dict[str, int]:
    """4 subjects × classes 10/2/9 plus an unlabelled ``notes`` file; channel 0 of each file is a constant code.
    Returns relative record path → code."""
    codes = {}
    for s in range(1, 5):
        for c in CLASSES_CSV + ["notes"]:
            rel = f"s{s}/s{s}_g{c}" if c != "notes" else f"s{s}/notes"
            code = len(codes) + 1
            t = np.arange(200) / 100
            x = np.stack([np.full(200, float(code)), np.sin(2 * np.pi * 3 * t + code)], axis=1)
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            np.savetxt(root / f"{rel}.csv", x, delimiter=",", fmt="%.6f")
            codes[rel] = code
    return codes


def _csv_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["--input", str(root), "--format", "csv", "--fs", "100", "--window", "50", "--step", "50",
            "--normalize", "none", "--output", str(out), *extra]


def _all_windows(out: Path) -> dict[str, dict]:
    return {p.stem: _read(p) for p in sorted(out.glob("*.h5"))}


def test_sort_class_names_is_numeric_only_for_integers() -> None:
    assert sort_class_names(["10", "2", "9", "2"]) == ["2", "9", "10"]
    assert sort_class_names(["10", "2", "b"]) == ["10", "2", "b"]
    assert sort_class_names(["-1", "3", "0"]) == ["-1", "0", "3"]


def test_csv_classes_in_numeric_order_traced_to_the_signal(tmp_path: Path) -> None:
    root = tmp_path / "in"
    codes = _csv_tree(root)
    out = tmp_path / "out"
    assert folder_main(_csv_args(root, out, "--label_regex", r"_g(\d+)$", "--group_regex", r"^(s\d)/",
                                 "--split", "0.5", "0.25", "0.25")) == 0
    skipped = _skipped(out)
    assert set(skipped) == {f"s{s}/notes" for s in range(1, 5)}
    assert all("--label_regex" in r and "does not match" in r for r in skipped.values())
    subjects = {}
    for split, d in _all_windows(out).items():
        names = [str(n) for n in d["attrs"]["class_names"]]
        assert names == ["2", "9", "10"]                       # numeric, not string order
        for rid, lab, win in zip(d["record_id"], d["label"], d["data"]):
            assert win[0, 0] == codes[rid]                     # this window's signal came from file rid
            assert names[lab] == rid.rsplit("_g", 1)[1]
        subjects[split] = {rid.split("/")[0] for rid in d["record_id"]}
        assert len(d["data"]) == 4 * 3 * len(subjects[split])  # 4 windows per file, 3 files per subject
    assert sorted(map(len, subjects.values())) == [1, 1, 2]
    assert set.union(*subjects.values()) == {"s1", "s2", "s3", "s4"}


def test_csv_classes_flag_orders_labels_and_skips_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "in"
    codes = _csv_tree(root)
    out = tmp_path / "out"
    assert folder_main(_csv_args(root, out, "--label_regex", r"_g(\d+)$", "--classes", "10,2")) == 0
    skipped = _skipped(out)
    assert {k for k, v in skipped.items() if "is not in --classes" in v} == {f"s{s}/s{s}_g9" for s in range(1, 5)}
    assert {k for k, v in skipped.items() if "does not match" in v} == {f"s{s}/notes" for s in range(1, 5)}
    seen = set()
    for d in _all_windows(out).values():
        assert [str(n) for n in d["attrs"]["class_names"]] == ["10", "2"]
        for rid, lab, win in zip(d["record_id"], d["label"], d["data"]):
            assert win[0, 0] == codes[rid] and lab == {"10": 0, "2": 1}[rid.rsplit("_g", 1)[1]]
            seen.add(rid)
    assert seen == {f"s{s}/s{s}_g{c}" for s in range(1, 5) for c in ("10", "2")}
    info = json.loads((out / "preprocess_info.json").read_text())
    assert info["class_names"] == ["10", "2"] and not (out / "test.h5").exists()


def test_csv_unlabelled_two_fractions_unchanged_and_three_write_test(tmp_path: Path) -> None:
    root = tmp_path / "in"
    _csv_tree(root)
    two = tmp_path / "two"
    assert folder_main(_csv_args(root, two, "--group_regex", r"^(s\d)/", "--split", "0.5", "0.5")) == 0
    assert sorted(p.name for p in two.glob("*.h5")) == ["train.h5", "val.h5"]
    assert set(json.loads((two / "record_splits.json").read_text())) == {"train", "val"}
    info = json.loads((two / "preprocess_info.json").read_text())
    assert info["task"] == "pretrain" and set(info["splits"]) == {"train", "val"} and info["class_names"] is None
    for d in _all_windows(two).values():
        assert "label" not in d and "class_names" not in d["attrs"]
    assert (two / "skipped.csv").read_text().splitlines() == ["record,reason"]  # notes files are data here
    three = tmp_path / "three"
    assert folder_main(_csv_args(root, three, "--group_regex", r"^(s\d)/", "--split", "0.5", "0.25", "0.25")) == 0
    splits = json.loads((three / "record_splits.json").read_text())
    assert sorted(p.name for p in three.glob("*.h5")) == ["test.h5", "train.h5", "val.h5"]
    owner = {}
    for split, recs in splits.items():
        for rid in recs:
            assert owner.setdefault(rid.split("/")[0], split) == split  # a subject never straddles splits
    assert sorted(list(owner.values()).count(s) for s in ("train", "val", "test")) == [1, 1, 2]
    assert sum(map(len, splits.values())) == 16


def test_a_split_that_gets_no_group_is_said_before_the_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """4 subjects cannot fill 0.8 0.1 0.1: val gets none, and one line says there will be no val.h5."""
    root = tmp_path / "in"
    _csv_tree(root)
    out = tmp_path / "out"
    assert folder_main(_csv_args(root, out, "--group_regex", r"^(s\d)/", "--split", "0.8", "0.1", "0.1")) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: --split 0.8 0.1 0.1: no val.h5 is written: the val split gets none of the 4 groups "
                        "(subjects by --group_regex '^(s\\d)/'): too few for these fractions; give more groups or a "
                        "larger val fraction"]
    assert sorted(p.name for p in out.glob("*.h5")) == ["test.h5", "train.h5"]


def test_bad_flags_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "in"
    _csv_tree(root)
    out = tmp_path / "out"
    cases = [(["--classes", "a,b"], "--classes needs --label_regex"),
             (["--label_regex", "_g(", "--split", "0.5", "0.5"], "--label_regex '_g('"),
             (["--label_regex", r"_g(\d+)", "--classes", "2,9,2"], "2 listed more than once"),
             (["--labels_csv", str(tmp_path / "nope.csv")], "nope.csv: no such file"),
             (["--labels_csv", str(root / "s1/notes.csv"), "--label_regex", "x"], "pass one of them")]
    for extra, msg in cases:
        assert folder_main(_csv_args(root, out, *extra)) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err
    for fractions in (["1.0"], ["0.25"] * 4):
        with pytest.raises(SystemExit) as e:
            folder_main(_csv_args(root, out, "--split", *fractions))
        assert e.value.code == 2
        assert "expected 2 to 3 fractions (TRAIN VAL [TEST])" in capsys.readouterr().err
    assert not list(out.glob("*.h5"))


def _reference_folder(root: Path, table: str) -> Path:
    """5 CSV recordings A1..A5 (channel 0 holds the record's number) and REFERENCE.csv (``table``) beside them."""
    root.mkdir()
    t = np.arange(200) / 100
    for i in range(1, 6):
        x = np.stack([np.full(200, float(i)), np.sin(2 * np.pi * i * t)], axis=1)
        np.savetxt(root / f"A{i}.csv", x, delimiter=",", fmt="%.6f")
    (root / "REFERENCE.csv").write_text(table)
    return root


def test_labels_csv_single_label_skips_unlisted_records_and_reports_unknown_rows(tmp_path: Path, capsys) -> None:
    root = _reference_folder(tmp_path / "in", "Recording,First_label,Second_label\nA1,N,\nA2,AF,\nA3,N,\nA4,AF,\n"
                                              "A9,N,\n")
    out = tmp_path / "out"
    assert folder_main(_csv_args(root, out, "--labels_csv", str(root / "REFERENCE.csv"), "--split", "0.5", "0.5")) == 0
    err = capsys.readouterr().err
    assert "--labels_csv" in err and "1 row(s) name no record under --input (e.g. A9)" in err
    assert _skipped(out) == {"A5": "not in --labels_csv REFERENCE.csv"}  # and REFERENCE.csv is no recording
    seen = {}
    for d in _all_windows(out).values():
        names = [str(n) for n in d["attrs"]["class_names"]]
        assert names == ["AF", "N"] and d["label"].dtype == np.int64
        for rid, lab, win in zip(d["record_id"], d["label"], d["data"]):
            assert win[0, 0] == int(rid[1:])
            seen[rid] = names[lab]
    assert seen == {"A1": "N", "A2": "AF", "A3": "N", "A4": "AF"}


def test_labels_csv_several_labels_per_record_give_multi_hot(tmp_path: Path, capsys) -> None:
    """No header; A2 has two label columns, A3 two rows: multi-label output over AF, N, PAC."""
    root = _reference_folder(tmp_path / "in", "A1,N,\nA2,AF,PAC\nA3,N,\nA3,PAC,\nA4,AF,\nA5,N,\n")
    out = tmp_path / "out"
    assert folder_main(_csv_args(root, out, "--labels_csv", str(root / "REFERENCE.csv"), "--split", "0.5", "0.5")) == 0
    assert "2 record(s) have several labels, so the labels are multi-label" in capsys.readouterr().err
    seen = {}
    for d in _all_windows(out).values():
        names = [str(n) for n in d["attrs"]["class_names"]]
        assert names == ["AF", "N", "PAC"] and d["label"].dtype == np.float32
        for rid, lab in zip(d["record_id"], d["label"]):
            seen[rid] = {n for n, v in zip(names, lab) if v == 1}
    assert seen == {"A1": {"N"}, "A2": {"AF", "PAC"}, "A3": {"N", "PAC"}, "A4": {"AF"}, "A5": {"N"}}
    assert json.loads((out / "preprocess_info.json").read_text())["task"] == "multilabel"


# ------------------------------------------------------------------------------------------------ tiny WFDB tree

def test_wfdb_class_from_the_folder_name(tmp_path: Path) -> None:
    """Class = first folder (no group in the regex: the whole match); 2 fractions: no test.h5."""
    root = tmp_path / "in"
    codes = {}
    for cls in ("walk", "sit", "run"):
        for subj in range(3):
            d = root / cls
            d.mkdir(parents=True, exist_ok=True)
            code = len(codes) + 1
            digital = np.stack([np.full(300, code * 100), (np.arange(300) % 17) * 10], axis=1).astype(np.int16)
            wfdb.wrsamp(f"subj{subj}", fs=100, units=["mV", "mV"], sig_name=["a", "b"], d_signal=digital,
                        fmt=["16", "16"], adc_gain=[100, 100], baseline=[0, 0], write_dir=str(d))
            codes[f"{cls}/subj{subj}"] = code
    (root / "unsorted").mkdir()
    wfdb.wrsamp("x", fs=100, units=["mV"], sig_name=["a"], d_signal=np.zeros((300, 1), np.int16), fmt=["16"],
                adc_gain=[100], baseline=[0], write_dir=str(root / "unsorted"))
    out = tmp_path / "out"
    assert folder_main(["--input", str(root), "--format", "wfdb", "--window", "100", "--step", "100",
                        "--normalize", "none", "--label_regex", r"^(?:walk|sit|run)(?=/)", "--split", "0.67", "0.33",
                        "--output", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.h5")) == ["train.h5", "val.h5"]
    assert "--label_regex" in _skipped(out)["unsorted/x"]
    seen = set()
    for d in _all_windows(out).values():
        names = [str(n) for n in d["attrs"]["class_names"]]
        assert names == ["run", "sit", "walk"]
        for rid, lab, win in zip(d["record_id"], d["label"], d["data"]):
            assert win[0, 0] == pytest.approx(codes[rid]) and names[lab] == rid.split("/")[0]
            seen.add(rid)
    assert seen == set(codes)
    splits = json.loads((out / "record_splits.json").read_text())
    assert len(splits["train"]) == 6 and len(splits["val"]) == 3
    for recs in splits.values():  # stratified: every class in both splits
        assert {r.split("/")[0] for r in recs} == {"walk", "sit", "run"}
