"""load_model on the layouts original files come in, and its errors."""
from __future__ import annotations

import argparse

import pytest
import torch

import physiowave
from physiowave.checkpoint import infer_config
from physiowave.models import LEGACY_CONFIG

from .conftest import randomize_

ARGS = dict(in_channels=4, max_level=2, wave_kernel_size=8, wavelet_names=["db4", "bior4.4"], patch_size=16,
            embed_dim=32,
            # files as the original wrote them
            depth=2, num_heads=2, mlp_ratio=2.0, dropout=0.1, pos_embed_type="1d", **LEGACY_CONFIG)


def _model(**kw) -> physiowave.PhysioWave:
    return randomize_(physiowave.PhysioWave(**{**ARGS, **kw})).eval()


def _same_function(a: physiowave.PhysioWave, b: physiowave.PhysioWave, length: int = 64) -> None:
    x = torch.randn(2, a.in_channels, length)
    with torch.no_grad():
        torch.testing.assert_close(a.reconstruct(x), b.reconstruct(x))
        if "classification" in a.task_heads:
            torch.testing.assert_close(a(x), b(x))


def test_pretraining_file_with_namespace_args(tmp_path):
    model = _model()
    ns = argparse.Namespace(**ARGS, lr=1e-4, masking_strategy="frequency_guided", use_pos_embed=True,
                            train_files="a.h5")
    torch.save({"epoch": 3, "model_state_dict": model.state_dict(), "args": ns, "metrics": {"loss": 0.5}},
               tmp_path / "p.pth")
    loaded = physiowave.load_model(tmp_path / "p.pth")
    assert not loaded.training and loaded.config["num_heads"] == 2 and "classification" not in loaded.task_heads
    _same_function(model, loaded)


def test_finetune_file_with_dict_args_and_numpy_metrics(tmp_path):
    np = pytest.importorskip("numpy")
    model = _model(num_classes=3, head_hidden_dim=24, pooling="max", pos_embed_type="2d")
    args = {**ARGS, "patch_size": 16, "num_classes": 3, "head_hidden_dim": 24, "pooling": "max", "pos_embed_type": "2d"}
    torch.save({"epoch": 1, "model_state_dict": model.state_dict(), "args": args, "val_loss": np.float64(0.3),
                "val_acc": np.float32(0.9)}, tmp_path / "best_model.pth")
    loaded = physiowave.load_model(tmp_path / "best_model.pth")
    assert loaded.config["pooling"] == "max"
    _same_function(model, loaded)


def test_state_dict_layout_and_ddp_prefix(tmp_path):
    model = _model(num_classes=2)
    prefixed = {"module." + k: v for k, v in model.state_dict().items()}
    torch.save({"state_dict": prefixed, "args": {**ARGS, "num_classes": 2}}, tmp_path / "ddp.pth")
    _same_function(model, physiowave.load_model(tmp_path / "ddp.pth"))


def test_bare_state_dict_infers_the_architecture(tmp_path):
    model = _model(num_classes=5, head_hidden_dim=[24, 12])
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    with pytest.warns(UserWarning, match="inferred from shapes"):
        loaded = physiowave.load_model(tmp_path / "bare.pth", num_heads=2)
    cfg = loaded.config
    assert (cfg["in_channels"], cfg["max_level"], cfg["wave_kernel_size"], cfg["patch_size"], cfg["embed_dim"],
            cfg["depth"], cfg["mlp_ratio"], cfg["pos_embed_type"], cfg["num_classes"], cfg["head_hidden_dim"]) == (
        4, 2, 8, 16, 32, 2, 2.0, "1d", 5, [24, 12])
    assert len(cfg["wavelet_names"]) == 2
    _same_function(model, loaded)


def test_infer_config_of_the_full_presets():
    for preset in ("ecg", "emg"):
        model = physiowave.create_model(preset)
        config, assumed = infer_config(model.state_dict())
        for key in ("in_channels", "max_level", "wave_kernel_size", "patch_size", "embed_dim", "depth", "num_heads"):
            assert config[key] == model.config[key], (preset, key)
        assert "num_heads" in assumed


def test_wrong_shape_names_key_and_shapes(tmp_path):
    model = _model()
    state = model.state_dict()
    state["encoder.blocks.1.mlp.0.weight"] = torch.zeros(10, 32)
    torch.save({"model_state_dict": state, "args": ARGS}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"'encoder\.blocks\.1\.mlp\.0\.weight' has shape \(10, 32\), "
                                         r"the model expects \(64, 32\)"):
        physiowave.load_model(tmp_path / "bad.pth")


def test_missing_and_unexpected_keys_are_named(tmp_path):
    state = _model().state_dict()
    del state["encoder.norm.bias"]
    state["extra.weight"] = torch.zeros(1)
    torch.save({"model_state_dict": state, "args": ARGS}, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match=r"missing keys \['encoder.norm.bias'\].*unexpected keys \['extra.weight'\]"):
        physiowave.load_model(tmp_path / "odd.pth")


class _Evil:
    def __reduce__(self):
        return (exec, ("raise SystemExit('executed code from a checkpoint')",))


def test_arbitrary_objects_are_never_unpickled(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model_state_dict": _model().state_dict(), "args": ARGS, "payload": _Evil()}, path)
    with pytest.raises(ValueError, match="cannot be read as a weights-only checkpoint: it holds a pickled exec"):
        physiowave.load_model(path)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        physiowave.load_model("/nonexistent/ecg.pth")


def test_head_without_flags_in_args_is_read_off_the_weights(tmp_path):
    model = _model(num_classes=4, head_hidden_dim=20)
    torch.save({"model_state_dict": model.state_dict(), "args": argparse.Namespace(**ARGS)}, tmp_path / "h.pth")
    loaded = physiowave.load_model(tmp_path / "h.pth")
    assert loaded.config["num_classes"] == 4 and loaded.config["head_hidden_dim"] == [20]
    _same_function(model, loaded)
