"""Original checkpoints give the original outputs (docs/architecture.md §13; fixtures: ../shared/compat/README.md)."""
from __future__ import annotations

import json

import pytest
import torch

import physiowave
import physiowave.models


def _rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def test_ecg_small_fixture_matches_original_outputs(shared):
    model = physiowave.load_model(shared / "compat" / "ecg_small.pth")
    assert not model.training
    expected = torch.load(shared / "compat" / "ecg_small_expected.pt", weights_only=True)
    x = expected["x"]
    with torch.no_grad():
        assert _rel_err(model.decompose(x), expected["wavelet_spec"]) <= 1e-4
        assert _rel_err(model.encode(x), expected["features"]) <= 1e-4
        assert _rel_err(model(x), expected["logits"]) <= 1e-4


def test_original_state_dict_loads_strictly_into_constructor_model(shared):
    ckpt = torch.load(shared / "compat" / "ecg_small.pth", weights_only=True)
    model = physiowave.PhysioWave(**{**physiowave.models.LEGACY_CONFIG, **{k: v for k, v in ckpt["args"].items()
                                     if k not in {"use_pos_embed", "masking_strategy", "importance_ratio",
                                                  "mask_ratio"}}})
    result = model.load_state_dict(ckpt["model_state_dict"])  # strict by default
    assert not result.missing_keys and not result.unexpected_keys


@pytest.mark.parametrize("preset,hidden", [("ecg", 1024), ("emg", 512)])
def test_presets_have_the_upstream_keys_and_shapes(shared, preset, hidden):
    upstream = json.loads((shared / "compat" / "upstream_state_dict_shapes.json").read_text())[preset]
    shapes = upstream["state_dict_shapes"]
    full = physiowave.create_model(preset, num_classes=5, head_hidden_dim=hidden)
    assert {k: list(v.shape) for k, v in full.state_dict().items()} == shapes
    pretrain = physiowave.create_model(preset)
    assert {k: list(v.shape) for k, v in pretrain.state_dict().items()} == {
        k: v for k, v in shapes.items() if not k.startswith("task_heads.classification.")}
    assert sum(p.numel() for p in pretrain.parameters()) == upstream["num_parameters_pretrain_model"]
