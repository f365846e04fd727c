"""ONNX export (physiowave.export, ``physiowave export``): ONNX Runtime equals PyTorch on real windows, dynamic
batch, features mode, input normalisation inside/outside the graph, the missing-extra error and one-line errors."""
from __future__ import annotations

import builtins

import h5py
import numpy as np
import pytest
import torch

from physiowave import load_model
from physiowave.cli import main as cli
from physiowave.export import (EXTRA_HINT, ExportCheckError, MissingExtraError, export_onnx, max_rel_diff,
                               require_export_extra)
from physiowave.inference import Skipped, find_inputs, load_trained, read_units
from physiowave.models.input_norm import normalize_input

ECG = "data/real/torch_ecg_cinc2021"
TINY = ["--max_level", "2", "--wave_kernel_size", "8", "--wavelet_names", "db4", "--patch_size", "32", "--embed_dim",
        "32", "--depth", "1", "--num_heads", "4", "--num_workers", "0", "--device", "cpu"]


def _extra():
    for name in ("onnx", "onnxruntime", "onnxscript"):
        pytest.importorskip(name, reason=f"the export extra is not installed ({EXTRA_HINT})")


def _real_windows(ckpt, shared, length: int, n: int = 12) -> np.ndarray:
    trained = load_trained(ckpt, "cpu", length=length)
    units = read_units(find_inputs([shared / ECG]), trained.preparation, trained.model.in_channels, Skipped())
    x = np.concatenate([u.windows for u in units])
    x = x[np.linspace(0, len(x) - 1, n).astype(int)]  # windows of several records
    assert np.isfinite(x).all() and x.std() > 0
    return x


def _run(path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.astype(np.float32)})[0]


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory) -> dict:
    """A tiny model fine-tuned with the engine (12 channels, length 256, rms input norm, bands pooling)."""
    from physiowave.engine import main
    d = tmp_path_factory.mktemp("ft")
    rng = np.random.default_rng(0)
    files = {}
    for name, n in (("train", 40), ("val", 16)):
        y = rng.integers(0, 3, n)
        t = np.arange(256) / 64
        x = rng.normal(0, 0.3, (n, 12, 256)) + np.sin(2 * np.pi * (y[:, None, None] + 1) * t)
        files[name] = str(d / f"{name}.h5")
        with h5py.File(files[name], "w") as f:
            f["data"] = (x * 100).astype(np.float32)  # units far from 1: the rms normalisation matters
            f["label"] = y
    out = d / "run"
    assert main("finetune", ["--train_file", files["train"], "--val_file", files["val"], "--epochs", "1",
                             "--batch_size", "16", "--output_dir", str(out), *TINY]) == 0
    return {"ckpt": out / "best_model.pth", **files}


# --------------------------------------------------------------------------------------------- the real export
def test_compat_fixture_logits_equal_pytorch_on_real_records(shared, tmp_path):
    _extra()
    ckpt = shared / "compat" / "ecg_small.pth"
    model = load_model(ckpt)
    x = _real_windows(ckpt, shared, 512)
    out = tmp_path / "ecg_small.onnx"
    report = export_onnx(model, out, 512, windows=x, check_source="real ECG")
    assert out.is_file() and not list(tmp_path.glob(".*partial"))
    assert report.max_rel_diff <= 1e-4 and report.windows == len(x) and report.output_shape == ["batch", 5]
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    for b in (1, 5, len(x)):  # dynamic batch
        got = _run(out, x[:b])
        assert got.shape == (b, 5)
        assert max_rel_diff(got, ref[:b]) <= 1e-4
    # the exported graph computes the original function (the fixture's expected logits)
    expected = torch.load(shared / "compat" / "ecg_small_expected.pt", weights_only=True)
    got = _run(out, expected["x"].numpy())
    assert max_rel_diff(got, expected["logits"].numpy()) <= 1e-4
    # the model still runs in PyTorch as before (export leaves no traced tensors in its caches)
    with torch.inference_mode():
        assert torch.allclose(model(torch.from_numpy(x)), torch.from_numpy(ref))


def test_finetuned_cli_logits_and_features(shared, finetuned, tmp_path, capsys):
    _extra()
    ckpt = finetuned["ckpt"]
    model = load_model(ckpt)
    assert model.config["input_norm"] == "rms" and model.config["pooling"] == "bands"
    x = _real_windows(ckpt, shared, 256)
    for what, width in (("logits", 3), ("features", model.num_bands * 32)):
        out = tmp_path / f"{what}.onnx"
        assert cli(["export", str(ckpt), "-o", str(out), "--what", what,
                    "--check_inputs", str(shared / ECG), "--check_windows", "6"]) == 0  # length recorded: no --length
        line = capsys.readouterr().out
        assert "max relative difference" in line and "input_norm inside the graph" in line
        with torch.inference_mode():
            ref = (model(torch.from_numpy(x)) if what == "logits" else model.features(torch.from_numpy(x))).numpy()
        for b in (1, 5):
            got = _run(out, x[:b])
            assert got.shape == (b, width)
            assert max_rel_diff(got, ref[:b]) <= 1e-4, what
        # raw input in any units: the graph normalises (as the model does)
        assert max_rel_diff(_run(out, x[:5] * 1000), ref[:5]) <= 1e-4


def test_finetuned_without_norm_expects_normalised_windows(shared, finetuned, tmp_path):
    _extra()
    ckpt = finetuned["ckpt"]
    model = load_model(ckpt)
    x = _real_windows(ckpt, shared, 256, n=5)
    out = tmp_path / "nonorm.onnx"
    report = export_onnx(model, out, 256, with_norm=False, windows=x)
    assert report.max_rel_diff <= 1e-4 and not report.with_norm
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
        xn = normalize_input(torch.from_numpy(x), "rms").numpy()
    assert max_rel_diff(_run(out, xn), ref) <= 1e-4
    assert max_rel_diff(_run(out, x), ref) > 1e-2  # raw windows are not what this graph takes


def test_cli_checks_on_the_checkpoints_own_data_by_default(finetuned, tmp_path, capsys):
    _extra()
    out = tmp_path / "m.onnx"
    assert cli(["export", str(finetuned["ckpt"]), "-o", str(out), "--check_windows", "4"]) == 0
    assert "the checkpoint's data" in capsys.readouterr().out and out.is_file()


def test_check_failure_writes_nothing(shared, tmp_path, monkeypatch):
    """Break the comparison on purpose: a graph that differs from PyTorch is an error and leaves no file."""
    _extra()
    import physiowave.export as ex
    real = ex.run_onnx
    monkeypatch.setattr(ex, "run_onnx", lambda path, x, threads=None: real(path, x) * 1.001)
    out = tmp_path / "bad.onnx"
    with pytest.raises(ExportCheckError, match="max relative difference"):
        export_onnx(load_model(shared / "compat" / "ecg_small.pth"), out, 512)
    assert not list(tmp_path.iterdir())
    monkeypatch.setattr(ex, "run_onnx", lambda path, x, threads=None: real(path, x) * 1.00001)  # within 1e-4
    assert export_onnx(load_model(shared / "compat" / "ecg_small.pth"), out, 512).max_rel_diff < 1e-4


def test_max_rel_diff_is_per_window():
    b = np.array([[1000.0, 1.0], [1.0, 1.0]])
    a = b + np.array([[0.0, 0.0], [0.01, 0.0]])
    assert max_rel_diff(a, b) == pytest.approx(0.01)  # not 1e-5: window 1 is judged on its own scale
    assert max_rel_diff(np.zeros((1, 2)), np.zeros((1, 2))) == 0
    assert max_rel_diff(np.full((1, 2), np.nan), np.zeros((1, 2))) == float("inf")


# --------------------------------------------------------------------------------------------- errors
def test_missing_extra_is_one_line(monkeypatch, capsys, shared, tmp_path):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.split(".")[0] == "onnxruntime":
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.delitem(__import__("sys").modules, "onnxruntime", raising=False)
    with pytest.raises(MissingExtraError, match=r"missing: onnxruntime: pip install physiowave\[export\]"):
        require_export_extra()
    assert cli(["export", str(shared / "compat" / "ecg_small.pth"), "-o", str(tmp_path / "m.onnx"),
                "--length", "512"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install physiowave[export]" in err and "onnxruntime" in err
    assert not list(tmp_path.iterdir())


def test_missing_onnxscript_via_sys_modules(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "onnxscript", None)  # import raises ImportError
    with pytest.raises(MissingExtraError, match="missing: onnxscript"):
        require_export_extra("dynamo")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    require_export_extra("torchscript")  # the TorchScript exporter needs no onnxscript


@pytest.mark.parametrize("argv, message", [
    (["--length", "512", "-o", "model.txt"], "expected an ONNX file name (.onnx)"),
    ([], "records no training input length: pass --length"),
    (["--length", "500"], "must be a positive multiple of the model's patch_size 64"),
    (["--length", "512", "--what", "probabilities"], "invalid choice"),
])
def test_cli_one_line_errors(shared, tmp_path, capsys, argv, message):
    _extra()
    argv = [a if a != "model.txt" else str(tmp_path / a) for a in argv]
    if "-o" not in argv:
        argv += ["-o", str(tmp_path / "m.onnx")]
    assert cli(["export", str(shared / "compat" / "ecg_small.pth"), *argv]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*"))


def test_features_of_a_pretraining_checkpoint_and_no_head_error(tmp_path):
    _extra()
    from physiowave.models import create_model
    model = create_model("ecg_small", input_norm="rms", pooling="bands").eval()  # no classification head
    with pytest.raises(ValueError, match="no classification head"):
        export_onnx(model, tmp_path / "m.onnx", 256)
    report = export_onnx(model, tmp_path / "f.onnx", 256, what="features", exporter="torchscript")
    assert report.max_rel_diff <= 1e-4 and report.output_shape == ["batch", model.num_bands * 64]
