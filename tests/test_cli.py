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


@pytest.fixture(scope="module")
def myo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo's Myo recordings preprocessed by the CLI, a 1-epoch fine-tuned and a 1-epoch pretrained checkpoint."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("myo")
    data = root / "data"
    assert preprocess(["folder", "--input", str(MYO), "--format", "csv", "--fs", "200", "--label_regex", r"C_(\d+)",
                       "--group_regex", r"R_(\d+)", "--split", "0.5", "0.25", "0.25", "--window", "128", "--step", "48",
                       "--normalize", "zscore", "--norm_scope", "record", "--output", str(data)]) == 0
    h5 = {s: str(data / f"{s}.h5") for s in ("train", "val", "test")}
    assert train("finetune", ["--train_file", h5["train"], "--val_file", h5["val"], "--test_file", h5["test"],
                              "--epochs", "1", "--lr", "3e-3", "--output_dir", str(root / "ft"), *TINY]) == 0
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
    assert summary["architecture"]["embed_dim"] == args["embed_dim"] and summary["classes"] == [f"class_{i}" for i in range(5)]
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
    assert cli(["embed", str(myo["pretrained"]), *map(str, records), "-o", str(out), "--tokens", "--batch_size", "7"]) == 0
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


def test_predict_with_an_original_checkpoint_uses_flags_and_says_what_it_assumed(shared: Path, tmp_path, capsys) -> None:
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
    monkeypatch.setattr(figures, "save_figure", lambda fig, path, dpi=100: (sizes.append(figures.figure_size_px(fig, dpi)),
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
    torch.save({"model_state_dict": model.state_dict(), "args": ns}, tmp_path / "pretrain.pth")  # original pretraining layout
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
