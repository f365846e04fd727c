"""Presets by name, parameter counts of the published checkpoints, forward shapes."""
from __future__ import annotations

import pytest
import torch

import physiowave
from physiowave.models import PRESETS


@pytest.mark.parametrize("preset,count", [("ecg", 14_425_641), ("emg", 4_854_486)])
def test_parameter_counts_of_published_checkpoints(preset, count):
    model = physiowave.create_model(preset)
    assert sum(p.numel() for p in model.parameters()) == count
    assert "classification" not in model.task_heads


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_forward_shapes(preset):
    model = physiowave.create_model(preset, num_classes=3).eval()
    C, P, L = model.in_channels, model.patch_size, model.config["max_level"]
    x = torch.randn(2, C, 2 * P)
    with torch.no_grad():
        assert model.decompose(x).shape == (2, (L + 1) * C, 2 * P)
        tokens = model.encode(x)
        assert tokens.shape == (2, (L + 1) * C * 2, model.config["embed_dim"])
        assert model.reconstruct(x).shape == (2, tokens.shape[1], P)
        assert model(x).shape == (2, 3)


def test_overrides_and_unknown_preset():
    model = physiowave.create_model("emg", depth=2, num_classes=6, patch_size=(1, 32))
    assert len(model.encoder.blocks) == 2 and model.patch_size == 32
    assert model.task_heads["classification"].head[-1].out_features == 6
    with pytest.raises(ValueError, match="unknown preset 'eeg'"):
        physiowave.create_model("eeg")
    with pytest.raises(ValueError, match=r"\(1, P\)"):
        physiowave.create_model("emg", patch_size=(2, 32))
