"""The ``physiowave`` command (info, embed, predict, plot) on tiny checkpoints trained on real recordings.

Values are checked against an independent path: the windows the preprocessing CLI wrote (traced by
``record_id``/``start``) run through ``load_model`` by hand.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from physiowave import load_model
from physiowave.cli import main as cli
from physiowave.engine import main as train
from physiowave.models.heads import pool_tokens
from physiowave.preprocess.__main__ import main as preprocess

MYO = Path(__file__).resolve().parents[1] / "demo" / "data" / "myo"
TINY = ["--embed_dim", "32", "--depth", "1", "--num_heads", "2", "--patch_size", "16", "--max_level", "2",
        "--batch_size", "16", "--num_workers", "0", "--device", "cpu", "--seed", "0"]


def finetuned_myo(root: Path) -> dict[str, str]:
    """The demo's Myo recordings preprocessed by the CLI into ``root/data`` (200 Hz, 128-sample windows, record
    z-score) and a 1-epoch fine-tuned run in ``root/ft`` → the split files {train, val, test}."""
    data = root / "data"
    assert preprocess(["folder", "--input", str(MYO), "--format", "csv", "--fs", "200", "--label_regex", r"C_(\d+)",
                       "--group_regex", r"R_(\d+)", "--split", "0.5", "0.25", "0.25", "--window", "128", "--step", "48",
                       "--normalize", "zscore", "--norm_scope", "record", "--output", str(data)]) == 0
    h5 = {s: str(data / f"{s}.h5") for s in ("train", "val", "test")}
    assert train("finetune", ["--train_file", h5["train"], "--val_file", h5["val"], "--test_file", h5["test"],
                              "--epochs", "1", "--lr", "3e-3", "--output_dir", str(root / "ft"), *TINY]) == 0
    return h5


@pytest.fixture(scope="module")
def myo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo's Myo recordings preprocessed by the CLI, a 1-epoch fine-tuned and a 1-epoch pretrained checkpoint."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("myo")
    data = root / "data"
    h5 = finetuned_myo(root)
    assert train("pretrain", ["--train_files", h5["train"], "--max_length", "128", "--epochs", "1",
                              "--output_dir", str(root / "pre"), *TINY]) == 0
    return {"data": data, "finetuned": root / "ft" / "best_model.pth", "pretrained": root / "pre" / "best_model.pth",
            "run": root / "ft", **{k: Path(v) for k, v in h5.items()}}


def _windows(h5_files: list[Path]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """record_id → (windows [n, C, T], starts [n], labels [n]) as the preprocessing CLI wrote them."""
    out: dict[str, list] = {}
    for path in h5_files:
        with h5py.File(path, "r") as f:
            ids = f["record_id"][:].astype(str)
            for i, r in enumerate(ids):
                out.setdefault(r, []).append((f["data"][i], f["start"][i], f["label"][i]))
    return {r: tuple(np.stack(v) for v in zip(*rows)) for r, rows in out.items()}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------------------------------- info
def test_info_on_the_original_compat_checkpoint_reports_its_args(shared: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = shared / "compat" / "ecg_small.pth"
    args = torch.load(ckpt, map_location="cpu", weights_only=True)["args"]
    assert cli(["info", str(ckpt), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["args"] == json.loads(json.dumps(args))
    assert summary["parameters"]["total"] == sum(p.numel() for p in load_model(ckpt).parameters())
    assert summary["architecture"]["embed_dim"] == args["embed_dim"]
    assert summary["classes"] == [f"class_{i}" for i in range(5)]
    assert "fs" in summary["assumed"] and "original" in summary["written_by"]
    assert cli(["info", str(ckpt)]) == 0
    text = capsys.readouterr().out
    for key, value in args.items():
        assert f"  {key}: {value}" in text


def test_info_on_a_trained_checkpoint_shows_classes_and_recorded_preprocessing(myo, capsys) -> None:
    assert cli(["info", str(myo["finetuned"]), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["classes"] == ["0", "1", "2", "3", "4"] and s["task"] == "single-label classification"
    prep = s["preprocessing"]
    assert (prep["fs"], prep["window"], prep["step"], prep["normalize"], prep["norm_scope"], prep["input_fs"]) == \
        (200.0, 128, 48, "zscore", "record", 200.0)
    assert s["assumed"] == {} and s["training"]["epoch"] == 1
    assert s["written_by"].startswith("physiowave ")


# ----------------------------------------------------------------------------------------------------- embed
def test_embed_of_raw_csv_records_equals_model_encode_pooled(myo, tmp_path: Path) -> None:
    records = sorted(MYO.glob("R_3_*.csv"))[:2]
    out = tmp_path / "emb.h5"
    assert cli(["embed", str(myo["pretrained"]), *map(str, records), "-o", str(out), "--tokens", "--batch_size",
                "7"]) == 0
    model = load_model(myo["pretrained"])
    windows = _windows([myo["train"], myo["val"], myo["test"]])
    with h5py.File(out, "r") as f:
        ids, starts, emb, tokens = f["record_id"][:].astype(str), f["start"][:], f["embedding"][:], f["tokens"][:]
    assert list(dict.fromkeys(ids)) == [r.stem for r in records]
    for record in (r.stem for r in records):
        x, ref_starts, _ = windows[record]
        rows = ids == record
        np.testing.assert_array_equal(starts[rows], ref_starts)
        with torch.no_grad():
            t = model.encode(torch.from_numpy(x))
        np.testing.assert_allclose(emb[rows], pool_tokens(t, "mean").numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(tokens[rows], t.numpy(), rtol=1e-4, atol=1e-5)


def test_embed_per_record_npy_is_the_mean_of_the_window_embeddings(myo, tmp_path: Path) -> None:
    record = str(MYO / "R_1_C_4_EMG.csv")
    assert cli(["embed", str(myo["pretrained"]), record, "-o", str(tmp_path / "w.h5")]) == 0
    assert cli(["embed", str(myo["pretrained"]), record, "-o", str(tmp_path / "r.npy"), "--per_record"]) == 0
    with h5py.File(tmp_path / "w.h5", "r") as f:
        per_window = f["embedding"][:]
    per_record = np.load(tmp_path / "r.npy")
    assert per_record.shape == (1, per_window.shape[1])
    np.testing.assert_allclose(per_record[0], per_window.mean(0), rtol=1e-5, atol=1e-6)


def test_embed_rejects_tokens_with_npy_in_one_line(myo, tmp_path, capsys) -> None:
    assert cli(["embed", str(myo["pretrained"]), str(MYO), "-o", str(tmp_path / "e.npy"), "--tokens"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --tokens") and "\n" not in err and not (tmp_path / "e.npy").exists()


# ----------------------------------------------------------------------------------------------------- predict
def test_predict_on_raw_records_equals_the_scripted_evaluation_of_their_windows(myo, tmp_path: Path) -> None:
    test_records = json.loads((myo["data"] / "record_splits.json").read_text())["test"]
    out = tmp_path / "pred.csv"
    assert cli(["predict", str(myo["finetuned"]), *(str(MYO / f"{r}.csv") for r in test_records), "-o", str(out)]) == 0
    rows = _rows(out)
    model = load_model(myo["finetuned"])
    windows = _windows([myo["test"]])
    assert [r["record"] for r in rows] == test_records
    for row in rows:
        x, _, _ = windows[row["record"]]
        with torch.no_grad():
            probs = model(torch.from_numpy(x)).softmax(-1).mean(0).numpy()
        got = np.array([float(row[f"prob_{k}"]) for k in range(5)])
        np.testing.assert_allclose(got, probs, rtol=1e-4, atol=1e-6)
        assert int(row["windows"]) == len(x) and row["predicted"] == str(int(probs.argmax()))


def test_predict_per_window_on_hdf5_matches_its_windows(myo, tmp_path: Path) -> None:
    out = tmp_path / "pred.csv"
    assert cli(["predict", str(myo["finetuned"]), str(myo["test"]), "-o", str(out), "--per_window"]) == 0
    rows = _rows(out)
    with h5py.File(myo["test"], "r") as f:
        x, ids, starts = f["data"][:], f["record_id"][:].astype(str), f["start"][:]
    with torch.no_grad():
        probs = load_model(myo["finetuned"])(torch.from_numpy(x)).softmax(-1).numpy()
    assert [(r["record"], int(r["start"])) for r in rows] == list(zip(ids, starts))
    np.testing.assert_allclose([[float(r[f"prob_{k}"]) for k in range(5)] for r in rows], probs, rtol=1e-4, atol=1e-6)


def test_predict_skips_unreadable_records_and_fails_without_a_head(myo, tmp_path, capsys) -> None:
    bad = tmp_path / "broken.csv"
    bad.write_text("a,b\n1,x\n")
    out = tmp_path / "pred.csv"
    assert cli(["predict", str(myo["finetuned"]), str(bad), str(MYO / "R_0_C_0_EMG.csv"), "-o", str(out)]) == 0
    assert [r["record"] for r in _rows(out)] == ["R_0_C_0_EMG"]
    assert "skipped broken: " in capsys.readouterr().err
    assert cli(["predict", str(myo["pretrained"]), str(MYO), "-o", str(tmp_path / "p2.csv")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "no classification head" in err[-1]
    assert cli(["predict", str(myo["finetuned"]), str(tmp_path / "missing.hea"), "-o", str(out)]) == 1
    assert "missing" in capsys.readouterr().err


def test_predict_with_an_original_checkpoint_uses_flags_and_says_what_it_assumed(
        shared: Path, tmp_path, capsys) -> None:
    ckpt = shared / "compat" / "ecg_small.pth"
    records = sorted((shared / "data" / "real" / "torch_ecg_cinc2021").glob("HR0600[0-1].hea"))
    out = tmp_path / "pred.csv"
    assert cli(["predict", str(ckpt), *map(str, records), "-o", str(out), "--fs", "250", "--window", "512",
                "--step", "512"]) == 0
    err = capsys.readouterr().err
    assert "assumed" in err and "normalize" in err and "fs =" not in err  # --fs was given: not assumed
    from physiowave.preprocess.readers import read_challenge
    from physiowave.preprocess.signal import normalize, resample

    model = load_model(ckpt)
    for row, record in zip(_rows(out), records):
        x = resample(read_challenge(record).signal, 500, 250)  # 10 s → 2500 samples → 4 full windows + 1 padded
        starts = [0, 512, 1024, 1536, 2048]
        w = np.stack([np.pad(normalize(x[:, s:s + 512], "zscore"), ((0, 0), (0, max(0, s + 512 - x.shape[1]))))
                      for s in starts]).astype(np.float32)
        with torch.no_grad():
            probs = model(torch.from_numpy(w)).softmax(-1).mean(0).numpy()
        assert int(row["windows"]) == len(starts)
        np.testing.assert_allclose([float(row[f"prob_class_{k}"]) for k in range(5)], probs, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------------- plot
@pytest.mark.parametrize("kind", ["bands", "filters", "selector", "reconstruction", "confusion", "roc", "history"])
def test_plot_writes_a_png_of_the_figure_size(kind: str, myo, tmp_path: Path, monkeypatch) -> None:
    from physiowave import figures

    sizes: list[tuple[int, int]] = []
    save = figures.save_figure
    monkeypatch.setattr(figures, "save_figure", lambda fig, path,
                        dpi=100: (sizes.append(figures.figure_size_px(fig, dpi)),
                                                                          save(fig, path, dpi))[1])
    ckpt = str(myo["pretrained"] if kind in ("bands", "filters", "selector", "reconstruction") else myo["finetuned"])
    inputs = {"bands": [str(MYO / "R_0_C_1_EMG.csv"), "--channel", "3"], "filters": [],
              "selector": [str(myo["test"])], "reconstruction": [str(MYO / "R_0_C_1_EMG.csv")],
              "confusion": [str(myo["test"])], "roc": [str(myo["test"])]}
    args = [str(myo["run"])] if kind == "history" else [ckpt, *inputs[kind]]
    out = tmp_path / f"{kind}.png"
    assert cli(["plot", kind, *args, "-o", str(out), "--dpi", "50"]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == sizes[0] and width > 100 and height > 100


def test_plot_confusion_counts_the_argmax_of_each_labelled_window(myo, tmp_path: Path, monkeypatch) -> None:
    from physiowave import figures

    seen = {}
    monkeypatch.setattr(figures, "confusion_matrix", lambda m, names, **kw: seen.setdefault("m", m) is None or
                        figures.training_curves({"epoch": [1], "train_loss": [1.0]}))
    assert cli(["plot", "confusion", str(myo["finetuned"]), str(myo["test"]), "-o", str(tmp_path / "c.png")]) == 0
    with h5py.File(myo["test"], "r") as f:
        x, y = f["data"][:], f["label"][:]
    with torch.no_grad():
        pred = load_model(myo["finetuned"])(torch.from_numpy(x)).argmax(-1).numpy()
    expected = np.zeros((5, 5), int)
    np.add.at(expected, (y, pred), 1)
    np.testing.assert_array_equal(seen["m"], expected)


def test_checkpoints_record_the_preprocessing_of_their_training_data(myo) -> None:
    ckpt = torch.load(myo["finetuned"], map_location="cpu", weights_only=False)
    prep = ckpt["data"]["preprocessing"]
    assert prep["window"] == 128 and prep["fs"] == 200.0 and prep["label_regex"] == r"C_(\d+)"
    assert ckpt["data"]["class_names"] == ["0", "1", "2", "3", "4"]


def test_info_reads_namespace_args_and_bare_state_dicts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import argparse

    from physiowave import PhysioWave

    model = PhysioWave(in_channels=8, embed_dim=32, depth=1, num_heads=2, patch_size=16, max_level=2, input_norm="none",
                       objective="original")  # an original file's function: its args predate these settings
    ns = argparse.Namespace(in_channels=8, embed_dim=32, depth=1, num_heads=2, patch_size=16, max_level=2,
                            max_length=256, lr=3e-4)
    # original pretraining layout
    torch.save({"model_state_dict": model.state_dict(), "args": ns}, tmp_path / "pretrain.pth")
    assert cli(["info", str(tmp_path / "pretrain.pth"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["args"] == vars(ns) and s["preprocessing"]["length"] == 256 and s["classes"] is None
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    with pytest.warns(UserWarning, match="inferred from shapes"):
        assert cli(["info", str(tmp_path / "bare.pth"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"]["total"] == sum(p.numel() for p in model.parameters())
    # CSV needs a rate that this file does not record: every record is skipped → one line naming the flag
    assert cli(["embed", str(tmp_path / "pretrain.pth"), str(MYO), "-o", str(tmp_path / "e.h5")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: no usable input: 20 record(s) skipped") and "--input_fs" in err
    assert not (tmp_path / "e.h5").exists()


# ----------------------------------------------------------------------------------------------- broken windows
def _csv_with_nan_run(path: Path, source: Path, rows: slice, column: int = 2) -> Path:
    """``source`` (Myo CSV, 200 Hz) with a NaN run at ``rows`` of one column: longer than --max_nan_gap (0.1 s)."""
    data = np.loadtxt(source, delimiter=",")
    data[rows, column] = np.nan
    np.savetxt(path, data, delimiter=",", fmt="%.6g")
    return path


def _wfdb_with_nan_run(folder: Path, name: str, source: Path, rows: slice, column: int = 2) -> Path:
    """The same as a WFDB format-16 record (.hea + .dat), the run stored as -32768 ("no sample")."""
    data = np.loadtxt(source, delimiter=",")
    digital = np.round(data * 10).astype(np.int16)
    digital[rows, column] = -32768
    (folder / f"{name}.dat").write_bytes(digital.astype("<i2").tobytes())
    lines = [f"{name} {data.shape[1]} 200 {data.shape[0]}"]
    lines += [f"{name}.dat 16 10(0)/mV 16 0 {digital[0, c]} 0 0 ch{c}" for c in range(data.shape[1])]
    (folder / f"{name}.hea").write_text("\n".join(lines) + "\n")
    return folder / f"{name}.hea"


def _starts_touching(starts: np.ndarray, rows: slice, window: int = 128) -> list[int]:
    return [int(s) for s in starts if s < rows.stop and s + window > rows.start]


@pytest.mark.parametrize("kind", ["csv", "wfdb"])
def test_predict_skips_the_windows_of_a_long_nan_run_and_predicts_the_others(kind, myo, tmp_path, capsys) -> None:
    source, rows = MYO / "R_0_C_0_EMG.csv", slice(300, 330)   # 30 samples = 0.15 s > --max_nan_gap 0.1
    broken = (_csv_with_nan_run(tmp_path / "rec.csv", source, rows) if kind == "csv"
              else _wfdb_with_nan_run(tmp_path, "rec", source, rows))
    clean = tmp_path / f"clean{broken.suffix}"
    if kind == "csv":
        clean.write_bytes(source.read_bytes())
    else:
        clean = _wfdb_with_nan_run(tmp_path, "clean", source, slice(0, 0))
    out, ref = tmp_path / "pred.csv", tmp_path / "ref.csv"
    # per-window statistics: windows away from the run are exactly those of the clean record
    flags = ["--per_window", "--norm_scope", "window"]
    assert cli(["predict", str(myo["finetuned"]), str(clean), "-o", str(ref), *flags]) == 0
    capsys.readouterr()
    assert cli(["predict", str(myo["finetuned"]), str(broken), "-o", str(out), *flags]) == 0
    captured = capsys.readouterr()
    reference, rows_out = _rows(ref), _rows(out)
    all_starts = np.array([int(r["start"]) for r in reference])
    skipped = _starts_touching(all_starts, rows)
    assert skipped and len(skipped) < len(all_starts)
    assert [int(r["start"]) for r in rows_out] == [s for s in all_starts.tolist() if s not in skipped]
    for row in rows_out:
        assert "nan" not in ",".join(row.values()).lower()
        want = next(r for r in reference if r["start"] == row["start"])
        if int(row["start"]) + 128 <= rows.start - 48 or int(row["start"]) >= rows.stop + 48:
            assert {k: v for k, v in row.items() if k != "record"} == {k: v for k, v in want.items() if k != "record"}
    last = captured.out.strip().splitlines()[-1]
    assert f"{len(skipped)} windows skipped: " in last and f"{broken.stem}@{skipped[0]} has NaN" in last
    # per record: the record is predicted from its other windows only
    assert cli(["predict", str(myo["finetuned"]), str(broken), "-o", str(out)]) == 0
    assert [(r["record"], int(r["windows"])) for r in _rows(out)] == [(broken.stem, len(all_starts) - len(skipped))]
    # --max_nan_gap (a flag of the command) decides what is long: 0.2 s interpolates the run, as preprocessing would
    assert cli(["predict", str(myo["finetuned"]), str(broken), "-o", str(out), "--max_nan_gap", "0.2"]) == 0
    assert int(_rows(out)[0]["windows"]) == len(all_starts) and "0 skipped" in capsys.readouterr().out


def test_predict_skips_hdf5_windows_with_nan_or_inf_and_names_them(myo, tmp_path, capsys) -> None:
    import shutil

    shutil.copytree(myo["data"], tmp_path / "data")  # the whole output folder: its completion marker too
    h5 = tmp_path / "data" / myo["test"].name
    with h5py.File(h5, "r+") as f:
        ids, starts = f["record_id"][:].astype(str), f["start"][:]
        lone = ids[-1]                             # every window of this record broken
        lone_rows = np.flatnonzero(ids == lone)
        other = 1                                  # one window of another record
        assert ids[other] != lone
        f["data"][other, 1, 5] = np.nan
        for i in lone_rows:
            f["data"][i, 0, 7] = np.inf
        x = f["data"][:]
    out = tmp_path / "pred.csv"
    assert cli(["predict", str(myo["finetuned"]), str(h5), "-o", str(out), "--per_window"]) == 0
    captured = capsys.readouterr()
    got = [(r["record"], int(r["start"])) for r in _rows(out)]
    bad = {other, *lone_rows.tolist()}
    assert got == [(ids[i], int(starts[i])) for i in range(len(ids)) if i not in bad]
    with torch.no_grad():
        probs = load_model(myo["finetuned"])(torch.from_numpy(x[[i for i in range(len(ids)) if i not in bad]]))
    np.testing.assert_allclose([[float(r[f"prob_{k}"]) for k in range(5)] for r in _rows(out)],
                               probs.softmax(-1).numpy(), rtol=1e-4, atol=1e-6)
    last = captured.out.strip().splitlines()[-1]
    assert f"{len(bad)} windows skipped" in last and f"{ids[other]}@{starts[other]} has NaN" in last
    assert f"{lone}@{starts[lone_rows[0]]} has inf" in last
    assert f"skipped {lone}: no usable window" in captured.err
    # per record: no row for the record without a usable window, one window fewer for the other
    assert cli(["predict", str(myo["finetuned"]), str(h5), "-o", str(out)]) == 0
    counts = {r["record"]: int(r["windows"]) for r in _rows(out)}
    assert lone not in counts and counts[ids[other]] == int((ids == ids[other]).sum()) - 1


def test_embed_and_plot_leave_out_broken_windows(myo, tmp_path, capsys) -> None:
    broken = _csv_with_nan_run(tmp_path / "rec.csv", MYO / "R_0_C_0_EMG.csv", slice(0, 200))
    out = tmp_path / "e.h5"
    assert cli(["embed", str(myo["pretrained"]), str(broken), "-o", str(out)]) == 0
    with h5py.File(out, "r") as f:
        starts, emb = f["start"][:], f["embedding"][:]
    assert 0 not in starts and np.isfinite(emb).all()
    assert "windows skipped: rec@0 has NaN" in capsys.readouterr().out
    # the first usable window is shown (window 0 holds NaN)
    assert cli(["plot", "bands", str(myo["pretrained"]), str(broken), "-o", str(tmp_path / "b.png")]) == 0
    assert "rec@0 has NaN" in capsys.readouterr().err


def test_no_usable_window_is_one_line_naming_the_first(myo, tmp_path, capsys) -> None:
    broken = _csv_with_nan_run(tmp_path / "rec.csv", MYO / "R_0_C_0_EMG.csv", slice(None), column=0)
    assert cli(["predict", str(myo["finetuned"]), str(broken), "-o", str(tmp_path / "p.csv")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: no usable input") and "rec@0 has NaN" in err
    assert not (tmp_path / "p.csv").exists()


# ----------------------------------------------------------------------------------------------- output and flags
def test_output_into_a_missing_folder_is_created(myo, tmp_path) -> None:
    record = str(MYO / "R_0_C_0_EMG.csv")
    out = tmp_path / "new" / "dir" / "p.csv"
    assert cli(["predict", str(myo["finetuned"]), record, "-o", str(out)]) == 0 and len(_rows(out)) == 1
    assert cli(["embed", str(myo["pretrained"]), record, "-o", str(tmp_path / "e1" / "e.npy")]) == 0
    assert cli(["plot", "filters", str(myo["pretrained"]), "-o", str(tmp_path / "p1" / "f.svg")]) == 0
    assert (tmp_path / "p1" / "f.svg").read_text().lstrip().startswith("<?xml")


@pytest.fixture
def no_model(monkeypatch):
    """Checks that must come before any work: loading the checkpoint fails the test."""
    from physiowave.cli import common

    def fail(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded before the flags were checked")

    monkeypatch.setattr(common, "load_trained", fail)


@pytest.mark.parametrize("argv, flag", [
    (["plot", "bands", "CKPT", "REC", "-o", "OUT/b.h5"], "-o"),
    (["plot", "filters", "CKPT", "-o", "OUT/f.csv"], "-o"),
    (["embed", "CKPT", "REC", "-o", "OUT/e.csv"], "-o"),
    (["embed", "CKPT", "REC", "-o", "OUT/e.npy", "--tokens"], "--tokens"),
    (["predict", "CKPT", "REC", "-o", "BLOCKER/p.csv"], "-o"),
    (["predict", "CKPT", "REC", "-o", "OUT/p.csv", "--fs", "-5"], "--fs"),
    (["predict", "CKPT", "REC", "-o", "OUT/p.csv", "--input_fs", "0"], "--input_fs"),
    (["predict", "CKPT", "REC", "-o", "OUT/p.csv", "--batch_size", "0"], "--batch_size"),
    (["predict", "CKPT", "REC", "-o", "OUT/p.csv", "--length", "-1"], "--length"),
    (["predict", "CKPT", "REC", "-o", "OUT/p.csv", "--window", "0"], "--window"),
    (["predict", "CKPT", "REC", "-o", "OUT/p.csv", "--min_real", "1.5"], "--min_real"),
    (["predict", "CKPT", "REC", "-o", "OUT/p.csv", "--bandpass", "40", "1"], "--bandpass"),
    (["predict", "CKPT", "REC", "-o", "OUT/p.csv", "--max_nan_gap", "-1"], "--max_nan_gap"),
    (["predict", "CKPT", "REC", "-o", "OUT/p.csv", "--threshold", "2"], "--threshold"),
    (["embed", "CKPT", "REC", "-o", "OUT/e.h5", "--step", "-3"], "--step"),
    (["plot", "selector", "CKPT", "REC", "-o", "OUT/s.png", "--max_windows", "0"], "--max_windows"),
    (["plot", "reconstruction", "CKPT", "REC", "-o", "OUT/r.png", "--mask_ratio", "1"], "--mask_ratio"),
    (["plot", "filters", "CKPT", "-o", "OUT/f.png", "--fs", "-5"], "--fs"),
    (["plot", "filters", "CKPT", "-o", "OUT/f.png", "--dpi", "0"], "--dpi"),
    (["predict", "CKPT", "REC", "-o", "OUT/p.csv", "--notch", "55"], "--notch"),      # argparse errors
    (["predict", "CKPT", "REC", "--fs", "x", "-o", "OUT/p.csv"], "--fs"),
    (["predict", "CKPT", "REC"], "-o"),
    (["predict", "CKPT", "REC", "-o", "OUT/p.csv", "--no_such_flag"], "--no_such_flag"),
])
def test_bad_flags_and_outputs_are_one_line_errors_before_any_work(argv, flag, no_model, tmp_path, capsys) -> None:
    (tmp_path / "blocker").write_text("a file where a folder is needed")
    subs = {"CKPT": str(tmp_path / "model.pth"), "REC": str(MYO / "R_0_C_0_EMG.csv"), "OUT": str(tmp_path / "out"),
            "BLOCKER": str(tmp_path / "blocker")}
    argv = [next((a.replace(k, v) for k, v in subs.items() if a.startswith(k)), a) for a in argv]
    assert cli(argv) == 1
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: ") and "\n" not in err and flag in err and not captured.out
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _parser(*path: str):
    """The parser of ``physiowave <path...>`` (e.g. "plot", "bands")."""
    import argparse

    from physiowave.cli import build_parser

    parser = build_parser()
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


def _flags(text: str) -> set[str]:
    import re

    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_]*", text))


def test_every_flag_the_messages_name_is_a_flag_of_the_command(myo, tmp_path, capsys) -> None:
    """Run the commands where they print hints (assumed values, unusable records, broken windows, bad flags) and
    check each --flag they name against the command's own parser."""
    import argparse

    from physiowave import PhysioWave

    model = PhysioWave(in_channels=8, embed_dim=32, depth=1, num_heads=2, patch_size=16, max_level=2, input_norm="none",
                       objective="original")
    bare = tmp_path / "bare.pth"  # records no preprocessing: everything is assumed
    torch.save({"model_state_dict": model.state_dict(),
                "args": argparse.Namespace(in_channels=8, embed_dim=32, depth=1, num_heads=2, patch_size=16,
                                           max_level=2, max_length=128)}, bare)
    broken = _csv_with_nan_run(tmp_path / "rec.csv", MYO / "R_0_C_0_EMG.csv", slice(300, 330))
    short = tmp_path / "short.csv"
    short.write_text("\n".join(",".join(["1"] * 8) for _ in range(20)) + "\n")
    three = tmp_path / "three.csv"
    three.write_text("\n".join("1,2,3" for _ in range(300)) + "\n")
    out = str(tmp_path / "o.csv")
    runs = {
        ("embed",): [[str(bare), str(broken), "-o", str(tmp_path / "e.h5")],
                     [str(bare), str(broken), "-o", str(tmp_path / "e.h5"), "--input_fs", "200", "--window", "128"]],
        ("predict",): [[str(myo["finetuned"]), str(broken), str(short), str(three), "-o", out, "--per_window"],
                       [str(myo["finetuned"]), str(broken), "-o", out, "--bandpass", "0.5", "150"],
                       [str(myo["finetuned"]), str(broken), "-o", out, "--window", "100000", "--tail", "drop"],
                       [str(myo["finetuned"]), str(broken), "-o", out, "--window", "0"],
                       [str(myo["finetuned"]), str(broken), "-o", out, "--min_real", "7"],
                       [str(myo["finetuned"]), str(broken), "-o", out, "--channels", "ch9"]],
        ("plot", "bands"): [[str(bare), str(broken), "-o", str(tmp_path / "b.png"), "--input_fs", "200",
                             "--window_index", "99"],
                            [str(bare), str(broken), "-o", str(tmp_path / "b.png"), "--input_fs", "200",
                             "--channel", "x"]],
    }
    for path, argvs in runs.items():
        known = set(_parser(*path)._option_string_actions)
        named: set[str] = set()
        for argv in argvs:
            cli([*path, *argv])
            captured = capsys.readouterr()
            named |= _flags(captured.out + captured.err)
        assert named, path
        assert named <= known, (path, named - known)
    # and in the source: every string of these modules that names a flag (other programs' flags are attributed)
    import ast
    import inspect

    from physiowave import inference
    from physiowave.cli import common, embed, plot, predict
    from physiowave.preprocess import readers, signal, transform

    texts = {"predict": [inference, common, predict, signal, transform, readers.read_recording],
             "embed": [inference, embed]}
    texts["plot"] = [plot]
    for command, objects in texts.items():
        known = set(_parser(command)._option_string_actions) if command != "plot" else set().union(
            *(_parser("plot", k)._option_string_actions for k in plot.KINDS))
        for obj in objects:
            for node in ast.walk(ast.parse(inspect.getsource(obj))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and "finetune.py" not in node.value:
                    unknown = _flags(node.value) - known
                    assert not unknown, (command, getattr(obj, "__name__", obj), node.value)


# ------------------------------------------------------------------------------------- hostile files and outputs
def _one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    errors = [line for line in captured.err.replace("\r", "\n").splitlines() if "error" in line.lower()]
    assert (len(errors) == 1 and errors[0].startswith("error: ")
            and "Traceback" not in captured.err), captured.err[-2000:]
    return errors[0]


def test_a_checkpoint_with_a_nan_weight_is_refused(myo, tmp_path, capsys) -> None:
    ckpt = torch.load(myo["finetuned"], map_location="cpu", weights_only=False)
    key = next(k for k in ckpt["model_state_dict"] if k.endswith("weight"))
    ckpt["model_state_dict"][key].view(-1)[0] = float("nan")
    bad = tmp_path / "nan.pth"
    torch.save(ckpt, bad)
    out = tmp_path / "p.csv"
    assert cli(["predict", str(bad), str(MYO / "R_0_C_0_EMG.csv"), "-o", str(out)]) == 1
    assert "holds NaN or inf values" in _one_line_error(capsys) and not out.exists()


@pytest.mark.parametrize("field, value, expect", [
    ("architecture.depth", 10_000_000, "depth 10000000: outside its limits [1, 128]"),
    ("architecture.embed_dim", "32", "embed_dim '32': expected an integer"),
    ("architecture.mlp_ratio", None, "mlp_ratio None: expected a number"),
    ("input.fs", "abc", "field input.fs is 'abc'; expected a number"),
    ("thresholds", "x", "field thresholds is 'x'; expected a list of numbers")])
def test_a_hostile_config_json_is_refused_before_anything_is_built(field, value, expect, myo, tmp_path, capsys) -> None:
    folder = tmp_path / "model"
    assert cli(["convert", str(myo["finetuned"]), "-o", str(folder)]) == 0
    config = json.loads((folder / "config.json").read_text())
    *parents, last = field.split(".")
    node = config
    for key in parents:
        node = node[key]
    node[last] = value
    (folder / "config.json").write_text(json.dumps(config))
    assert cli(["predict", str(folder), str(MYO / "R_0_C_0_EMG.csv"), "-o", str(tmp_path / "p.csv")]) == 1
    assert expect in _one_line_error(capsys)


def test_outputs_never_replace_or_sit_among_their_inputs(myo, tmp_path, capsys) -> None:
    record = tmp_path / "rec.csv"
    record.write_bytes((MYO / "R_0_C_0_EMG.csv").read_bytes())
    h5 = tmp_path / "windows.h5"
    h5.write_bytes(myo["test"].read_bytes())
    before = record.read_bytes(), h5.read_bytes()
    cases = [(["predict", str(myo["finetuned"]), str(record), "-o", str(record)], "is the input"),
             (["embed", str(myo["finetuned"]), str(h5), "-o", str(h5)], "is the input"),
             (["embed", str(myo["finetuned"]), str(tmp_path), "-o", str(tmp_path / "emb.h5")],
              "inside the input folder"),
             (["predict", str(myo["finetuned"]), str(record), "-o", str(myo["finetuned"])], "is the input")]
    for argv, expect in cases:
        assert cli(argv) == 1
        assert expect in _one_line_error(capsys), argv
    assert (record.read_bytes(), h5.read_bytes()) == before
    run = tmp_path / "run"  # convert --overwrite into the folder that holds the checkpoint
    run.mkdir()
    (run / "best_model.pth").write_bytes(myo["finetuned"].read_bytes())
    assert cli(["convert", str(run / "best_model.pth"), "-o", str(run), "--overwrite"]) == 1
    assert "holds the input" in _one_line_error(capsys)
    assert (run / "best_model.pth").read_bytes() == myo["finetuned"].read_bytes()


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs folder (root only): a full disk for real."""
    import subprocess
    folder = tmp_path / "disk"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("name", ["emb.h5", "emb.npy", "tok.h5"])
def test_embed_on_a_full_disk_is_one_line_and_leaves_no_file(name, myo, tiny_disk, capsys) -> None:
    (tiny_disk / "filler").write_bytes(b"\0" * 200_000)
    out = tiny_disk / name
    tokens = ["--tokens"] if name.startswith("tok") else []
    assert cli(["embed", str(myo["finetuned"]), str(myo["train"]), "-o", str(out), *tokens]) == 1
    err = _one_line_error(capsys)
    assert "No space left" in err or "disk is full" in err, err
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler"]


def test_csv_cells_that_look_like_formulas_are_written_as_text(myo) -> None:
    from physiowave.cli.predict import predict, to_csv
    from physiowave.fileio import csv_text
    from physiowave.inference import load_trained
    assert [csv_text(v) for v in ["=cmd()", "@SUM(A1)", "+x", "-x", "-0.5", "ok", 3]] == \
        ["'=cmd()", "'@SUM(A1)", "'+x", "'-x", "-0.5", "ok", 3]
    trained = load_trained(myo["finetuned"])
    trained.class_names = [f"=c{i}" for i in range(len(trained.class_names or [0, 0, 0]))]
    pred, _ = predict(trained, [str(MYO / "R_0_C_0_EMG.csv")], 16)
    rows = list(csv.reader(to_csv(pred, trained, False, None).splitlines()))
    assert rows[1][-1].startswith("'=c") and all(not cell.startswith("=") for row in rows for cell in row)
