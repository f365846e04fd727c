"""Multi-modal fusion through the training scripts: a synthetic two-modality task where one modality carries the
label, branches from checkpoints, frozen branches, missing modalities, resume, multi-label, DDP and errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from physiowave import FusionModel, load_model
from physiowave.checkpoint import read_checkpoint
from physiowave.data import MultiModalDataset, parse_modality
from physiowave.engine import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--max_level", "2", "--wave_kernel_size", "8", "--wavelet_names", "db4", "--patch_size", "32", "--embed_dim",
        "32", "--depth", "1", "--num_heads", "4", "--num_workers", "0", "--device", "cpu", "--label_smoothing", "0",
        "--batch_size", "16"]
MODALITIES = ["--modality", "sig:data_sig", "--modality", "noise:data_noise"]


def _task(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class k: a sine of frequency k+1 on both 'sig' channels [n, 2, 128]; 'noise' [n, 3, 200] is pure noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    t = np.arange(128) / 64
    sig = rng.normal(0, 0.5, (n, 2, 128)) + np.sin(2 * np.pi * (y[:, None, None] + 1) * t)
    return sig.astype(np.float32), rng.normal(0, 1, (n, 3, 200)).astype(np.float32), y


def _write(path: Path, n: int, seed: int, flagged: int = 0, nan: int = 0) -> str:
    """``flagged`` samples marked absent in ``present_noise``, then ``nan`` samples stored all-NaN."""
    sig, noise, y = _task(n, seed)
    noise[flagged:flagged + nan] = np.nan
    with h5py.File(path, "w") as f:
        f["data_sig"], f["data_noise"], f["label"] = sig, noise, y
        if flagged:
            f["present_noise"] = (np.arange(n) >= flagged).astype(np.uint8)
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("fusion")
    return {"train": _write(d / "train.h5", 192, 0), "val": _write(d / "val.h5", 64, 1),
            "test": _write(d / "test.h5", 64, 2, flagged=8, nan=8)}


def _files(data: dict[str, str]) -> list[str]:
    return ["--train_file", data["train"], "--val_file", data["val"], "--test_file", data["test"]]


@pytest.fixture(scope="module")
def fused(data, tmp_path_factory) -> Path:
    """The fused model trained from scratch on both modalities (10 epochs)."""
    out = tmp_path_factory.mktemp("fused")
    assert main("finetune",
                [*_files(data), *MODALITIES, *TINY, "--epochs", "10", "--lr", "1e-3", "--output_dir", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def sig_checkpoint(data, tmp_path_factory) -> Path:
    """A single-modality model trained on 'sig' alone (its data key), 2 epochs."""
    out = tmp_path_factory.mktemp("single")
    assert main("finetune", ["--train_file", data["train"], "--val_file", data["val"], "--data_key", "data_sig", *TINY,
                             "--epochs", "2", "--lr", "1e-3", "--output_dir", str(out)]) == 0
    return out / "best_model.pth"


def _state(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["model_state_dict"]


def _test_inputs(path: str) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    ds = MultiModalDataset(path, [parse_modality("sig:data_sig"), parse_modality("noise:data_noise")])
    items = [ds[i] for i in range(len(ds))]
    return {k: torch.stack([x[k] for x, _ in items]) for k in ("sig", "noise")}, np.array([int(y) for _, y in items])


# ------------------------------------------------------------------------------------------------- learning
def test_fused_model_learns_the_informative_modality_and_weights_it_up(fused, data):
    test = json.loads((fused / "test_results.json").read_text())
    assert test["acc"] >= 0.9, test["acc"]  # chance is 1/3
    weights = test["modality_weights"]
    assert weights["sig"] > weights["noise"] + 0.1 and sum(weights.values()) == pytest.approx(1.0)
    history = json.loads((fused / "training_history.json").read_text())
    sig = history["modality_weight_sig"]
    assert len(sig) == 10 and sig[-1] > sig[0] > 0.49  # logged every epoch, rising from uniform
    assert history["modality_weight_noise"][-1] == pytest.approx(1 - sig[-1])
    best = read_checkpoint(fused / "best_model.pth")
    w = torch.softmax(best["model_state_dict"]["fusion.modality_logits"], 0)
    assert w[0].item() == pytest.approx(weights["sig"], rel=1e-6)  # results JSON = the tested (best) model's weights
    assert "modality weights: sig" in (fused / "training_summary.txt").read_text()


def test_complementary_modalities_are_fused(tmp_path):
    """4 classes = 2 bits, one bit per modality (different channels and lengths): either modality alone is right at
    most half the time; only a model that combines both can be right more often."""
    files = []
    for name, n, seed in (("train", 256, 0), ("val", 64, 1)):
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 4, n)
        ta, tb = np.arange(128) / 64, np.arange(256) / 128
        a = rng.normal(0, 0.5, (n, 2, 128)) + np.sin(2 * np.pi * (1 + 2 * (y % 2))[:, None, None] * ta)
        b = rng.normal(0, 0.5, (n, 3, 256)) + np.sin(2 * np.pi * (2 + 2 * (y // 2))[:, None, None] * tb)
        with h5py.File(tmp_path / f"{name}.h5", "w") as f:
            f["data_a"], f["data_b"], f["label"] = a.astype(np.float32), b.astype(np.float32), y
        files.append(str(tmp_path / f"{name}.h5"))
    out = tmp_path / "out"
    assert main("finetune", ["--train_file", files[0], "--val_file", files[1], "--test_file", files[1], "--modality",
                             "a:data_a", "--modality", "b:data_b", *TINY, "--epochs", "10", "--lr", "1e-3",
                             "--output_dir", str(out)]) == 0
    test = json.loads((out / "test_results.json").read_text())
    assert test["acc"] >= 0.9, test["acc"]
    assert 0.35 < test["modality_weights"]["a"] < 0.65  # both modalities are needed: neither is weighted away


def test_samples_missing_a_modality_get_finite_correct_predictions(fused, data):
    model = load_model(fused / "best_model.pth")
    assert isinstance(model, FusionModel)
    x, y = _test_inputs(data["test"])
    assert torch.isnan(x["noise"][:16]).all() and not torch.isnan(x["noise"][16:]).any()  # 8 flagged + 8 stored NaN
    with torch.no_grad():
        logits = model(x)
        width = model.fusion.projections["sig"][0].normalized_shape[0]  # the sig branch's pooled features come first
        alone = model.fusion.classifier.classify(model.fusion.projections["sig"](model.features(x)[:16, :width]))
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits[:16], alone)  # weights renormalised: the sig branch alone decides
    assert (logits[:16].argmax(1).numpy() == y[:16]).mean() >= 0.85


def test_physiowave_info_describes_a_fusion_checkpoint_and_predict_declines(fused, data, tmp_path, capsys):
    from physiowave.cli import main as cli

    assert cli(["info", str(fused / "best_model.pth"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    test = json.loads((fused / "test_results.json").read_text())
    assert info["modality_weights"] == pytest.approx(test["modality_weights"], rel=1e-6)
    assert info["parameters"]["total"] == sum(p.numel() for p in load_model(fused / "best_model.pth").parameters())
    assert info["data"]["modalities"]["noise"]["length"] == 200 and info["preprocessing"] is None
    assert cli(["predict", str(fused / "best_model.pth"), data["test"], "-o", str(tmp_path / "p.csv")]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "multi-modal fusion checkpoint (sig, noise)" in err[0]
    assert not (tmp_path / "p.csv").exists()


def test_branch_from_checkpoint_gives_exactly_its_encode_and_frozen_branches_stay_bit_identical(
        data, sig_checkpoint, tmp_path):
    out = tmp_path / "probe"
    assert main("finetune",
                [*_files(data), "--modality", f"sig:data_sig:{sig_checkpoint}", "--modality", "noise:data_noise",
                             *TINY, "--epochs", "4", "--lr", "1e-2", "--freeze_encoder", "--save_freq", "1",
                             "--output_dir", str(out)]) == 0
    single = load_model(sig_checkpoint)
    x, _ = _test_inputs(data["test"])
    for name in ("checkpoint_epoch_1.pth", "latest_model.pth"):
        branch = load_model(out / name).branches["sig"]
        with torch.no_grad():
            assert torch.equal(branch.encode(x["sig"]), single.encode(x["sig"])), name
    first, last = _state(out / "checkpoint_epoch_1.pth"), _state(out / "latest_model.pth")
    branches = [k for k in last if k.startswith("branches.")]
    assert any(k.startswith("branches.noise.") for k in branches)  # the fresh branch is frozen too
    assert all(torch.equal(first[k], last[k]) for k in branches)
    assert not torch.equal(first["fusion.modality_logits"], last["fusion.modality_logits"])  # the fusion trains
    assert json.loads((out / "test_results.json").read_text())["acc"] >= 0.8


def test_freeze_branch_keeps_that_branch_and_trains_the_other(data, sig_checkpoint, tmp_path):
    out = tmp_path / "fb"
    assert main("finetune",
                [*_files(data), "--modality", f"sig:data_sig:{sig_checkpoint}", "--modality", "noise:data_noise",
                             *TINY, "--epochs", "2", "--lr", "1e-3", "--freeze_branch", "sig", "--save_freq", "1",
                             "--output_dir", str(out)]) == 0
    single = _state(sig_checkpoint)
    first, last = _state(out / "checkpoint_epoch_1.pth"), _state(out / "latest_model.pth")
    sig = [k for k in last if k.startswith("branches.sig.")]
    assert sig and all(torch.equal(last[k], single[k.removeprefix("branches.sig.")]) for k in sig)
    noise = [k for k in last if k.startswith("branches.noise.encoder.")]
    assert any(not torch.equal(first[k], last[k]) for k in noise)


def test_branch_from_an_earlier_fusion_checkpoint(data, fused, tmp_path):
    out = tmp_path / "again"
    assert main("finetune", [*_files(data), "--modality", f"sig:data_sig:{fused / 'best_model.pth'}", "--modality",
                             "extra:data_noise", *TINY, "--epochs", "1", "--freeze_encoder", "--output_dir",
                             str(out)]) == 0
    before, after = _state(fused / "best_model.pth"), _state(out / "latest_model.pth")
    sig = [k for k in before if k.startswith("branches.sig.")]
    assert sig and all(torch.equal(before[k], after[k]) for k in sig)


# ------------------------------------------------------------------------------------------------- the other paths
def test_resumed_fusion_run_equals_uninterrupted(data, tmp_path):
    args = [*_files(data), *MODALITIES, *TINY, "--lr", "1e-3", "--scheduler", "none", "--use_augmentation"]
    assert main("finetune", [*args, "--epochs", "3", "--output_dir", str(tmp_path / "full")]) == 0
    assert main("finetune", [*args, "--epochs", "1", "--output_dir", str(tmp_path / "part")]) == 0
    assert main("finetune", [*args, "--epochs", "3", "--output_dir", str(tmp_path / "part"), "--resume", "auto"]) == 0
    a, b = _state(tmp_path / "full" / "latest_model.pth"), _state(tmp_path / "part" / "latest_model.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)
    ha = json.loads((tmp_path / "full" / "training_history.json").read_text())
    hb = json.loads((tmp_path / "part" / "training_history.json").read_text())
    assert ha["modality_weight_sig"] == hb["modality_weight_sig"] and ha["val_loss"] == hb["val_loss"]


def test_multilabel_concat_fusion_of_channel_ranges(tmp_path):
    """One 'data' array [N, 5, 128]: channels 0-1 carry the labels (sines of frequency k+1), 2-4 are noise."""
    files = []
    for name, n, seed in (("train", 160, 0), ("val", 64, 1)):
        rng = np.random.default_rng(seed)
        y = (rng.random((n, 3)) < 0.4).astype(np.float32)
        t = np.arange(128) / 64
        sig = rng.normal(0, 0.3,
                         (n, 2, 128)) + sum(y[:, k, None, None] * np.sin(2 * np.pi * (k + 1) * t) for k in range(3))
        with h5py.File(tmp_path / f"{name}.h5", "w") as f:
            f["data"] = np.concatenate([sig, rng.normal(0, 1, (n, 3, 128))], 1).astype(np.float32)
            f["label"] = y
        files.append(str(tmp_path / f"{name}.h5"))
    out = tmp_path / "ml"
    assert main("multilabel", ["--train_file", files[0], "--val_file", files[1], "--test_file", files[1], "--modality",
                               "sig:0-1", "--modality", "noise:2-4", "--fusion", "concat", *TINY, "--epochs", "8",
                               "--lr", "1e-3", "--output_dir", str(out)]) == 0
    test = json.loads((out / "test_results.json").read_text())
    assert test["f1_macro"] > 0.8 and "modality_weights" not in test
    config = json.loads((out / "args.json").read_text())["model_config"]
    assert config["fusion"] == "concat"
    assert {n: c["in_channels"] for n, c in config["modalities"].items()} == {"sig": 2, "noise": 3}


def test_two_process_fusion_evaluation_equals_one_process(fused, data, tmp_path):
    common = ["finetune.py", *_files(data), *MODALITIES, "--resume", str(fused / "best_model.pth"), "--eval",
              "--batch_size", "5", "--num_workers", "0", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    results = []
    for name, launcher in (("one", []), ("two", ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"])):
        proc = subprocess.run([sys.executable, *launcher, *common, "--output_dir", str(tmp_path / name)], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr[-2000:]
        results.append(json.loads((tmp_path / name / "test_results.json").read_text()))
    one, two = results
    assert one["confusion_matrix"] == two["confusion_matrix"] and sum(map(sum, one["confusion_matrix"])) == 64
    assert one["modality_weights"] == two["modality_weights"] and one["loss"] == pytest.approx(two["loss"], rel=1e-5)


# ------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("case", ["pretrained_path", "max_length", "missing_key", "channels", "wrong_channels",
                                  "fusion_branch", "resume_names", "freeze_unknown", "fusion_alone"])
def test_bad_fusion_input_gives_one_line_error(case, data, sig_checkpoint, fused, tmp_path, capsys):
    base = ["--train_file", data["train"], "--val_file", data["val"], *TINY, "--epochs", "1", "--output_dir",
            str(tmp_path)]
    argv, expected = {
        "pretrained_path": ([*MODALITIES, "--pretrained_path", str(sig_checkpoint)],
                            "--pretrained_path does not apply"),
        "max_length": ([*MODALITIES, "--max_length", "128"], "--max_length does not apply"),
        "missing_key": (["--modality", "sig:data_sig", "--modality", "emg:data_emg"],
                        "no dataset 'data_emg' for modality 'emg'"),
        "channels": (["--modality", "sig:data_sig", "--modality", "x:0-3", "--data_key", "data_noise"],
                     "asks for channel 3"),
        "wrong_channels": (["--modality", f"noise:data_noise:{sig_checkpoint}"],
                           "trained on 2 channels, the modality has 3"),
        "fusion_branch": (["--modality", f"emg:data_sig:{fused / 'best_model.pth'}"],
                          "fusion checkpoint without a 'emg' branch"),
        "resume_names": (["--modality", "sig:data_sig", "--resume", str(fused / "best_model.pth")],
                         "needs --modality flags for sig, noise"),
        "freeze_unknown": ([*MODALITIES, "--freeze_branch", "ecg"], "--freeze_branch ecg: no such --modality"),
        "fusion_alone": (["--fusion", "concat"], "--fusion applies to multi-modal fusion"),
    }[case]
    try:
        code = main("finetune", [*base, *argv])
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    assert code not in (0, None)
    err = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines()
           if "error: " in line or "Traceback" in line]
    assert len(err) == 1 and expected in err[0], err


# ------------------------------------------------------------------------------------------------- real data
def test_original_checkpoint_branch_on_real_ecg_and_emg(shared, tmp_path):
    """Real 12-lead ECG [12, 2048] (CinC 2021) with real Myo EMG [8, 200] (the bundled demo recordings) as two
    modalities; the ECG branch starts from the original-format compat checkpoint and stays exactly that model."""
    import scipy.io

    mats = sorted((shared / "data/real/torch_ecg_cinc2021").glob("*.mat"))[:20]
    ecg = np.stack([scipy.io.loadmat(m)["val"][:, :2048].astype(np.float32) / 1000 for m in mats])
    csvs = sorted((ROOT / "demo/data/myo").glob("*.csv"))
    emg = np.stack([np.loadtxt(c, delimiter=",", dtype=np.float32)[:200].T for c in csvs])  # [20, 8, 200]
    label = np.arange(20) % 2
    path = tmp_path / "ecg_emg.h5"
    with h5py.File(path, "w") as f:
        f["data_ecg"], f["data_emg"], f["label"] = ecg, emg, label
    ckpt = shared / "compat" / "ecg_small.pth"
    out = tmp_path / "out"
    assert main("finetune", ["--train_file", str(path), "--val_file", str(path), "--modality", f"ecg:data_ecg:{ckpt}",
                             "--modality", "emg:data_emg", *TINY, "--patch_size", "40", "--freeze_encoder", "--epochs",
                             "1", "--output_dir", str(out)]) == 0
    fused, original = load_model(out / "latest_model.pth"), load_model(ckpt)
    with torch.no_grad():
        assert torch.equal(fused.branches["ecg"].encode(torch.from_numpy(ecg[:4])),
                           original.encode(torch.from_numpy(ecg[:4])))
    config = fused.config["modalities"]
    assert (config["ecg"]["embed_dim"], config["ecg"]["patch_size"]) == (64, 64)  # the checkpoint's own architecture
    # the flags
    assert (config["emg"]["embed_dim"], config["emg"]["patch_size"], config["emg"]["in_channels"]) == (32, 40, 8)


def test_load_model_without_head_gives_a_fusion_ready_branch(shared):
    ckpt = shared / "compat" / "ecg_small.pth"
    full, encoder = load_model(ckpt), load_model(ckpt, num_classes=None)
    assert "classification" in full.task_heads and "classification" not in encoder.task_heads
    x = torch.randn(2, 12, 512)
    with torch.no_grad():
        assert torch.equal(encoder.encode(x), full.encode(x))
    with pytest.raises(ValueError, match="num_classes=None"):
        FusionModel({"ecg": full}, num_classes=2)
    assert FusionModel({"ecg": encoder}, num_classes=2)({"ecg": x}).shape == (2, 2)
