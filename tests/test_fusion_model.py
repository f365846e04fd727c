"""physiowave.models.fusion: shapes, padding, weighted/concat fusion against hand computations, missing modalities,
gradients, config round trip, frozen branches, errors, and learning which modality matters."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from physiowave.models import FusionModel, PhysioWave
from physiowave.models.fusion import FusionHead, modality_present
from physiowave.models.heads import pool_tokens

from .conftest import randomize_

@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine OpenMP waits make them many times
    slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = dict(max_level=2, wave_kernel_size=8, wavelet_names=["db4"], depth=1, num_heads=2)


def branch(channels: int, patch: int = 16, dim: int = 16, **kw) -> PhysioWave:
    return PhysioWave(in_channels=channels, patch_size=patch, embed_dim=dim, **{**TINY, **kw})


def two_modalities(fusion: str = "weighted", **kw) -> FusionModel:
    """``a``: 2 channels, patch 16, D 16; ``b``: 3 channels, patch 32, D 32; eval mode, perturbed parameters."""
    model = FusionModel({"a": branch(2), "b": branch(3, patch=32, dim=32)}, num_classes=3, fusion=fusion, **kw)
    return randomize_(model).eval()


def three_modalities() -> FusionModel:
    model = FusionModel({"a": branch(2), "b": branch(3, patch=32, dim=32), "c": branch(1, dim=24)}, num_classes=4,
                        fusion_dim=20)
    return randomize_(model).eval()


def inputs(batch: int = 3, with_c: bool = False) -> dict[str, torch.Tensor]:
    x = {"a": torch.randn(batch, 2, 64), "b": torch.randn(batch, 3, 128)}
    if with_c:
        x["c"] = torch.randn(batch, 1, 48)
    return x


def set_logits(model: FusionModel, values: list[float]) -> torch.Tensor:
    with torch.no_grad():
        model.fusion.modality_logits.copy_(torch.tensor(values))
    return torch.softmax(torch.tensor(values), dim=0)


def branch_features(model: FusionModel, name: str, x: torch.Tensor) -> torch.Tensor:
    """Pooled features ``[B, D]`` of one branch, with the input zero-padded by hand to a multiple of the patch."""
    b = model.branches[name]
    pad = math.ceil(x.shape[-1] / b.patch_size) * b.patch_size - x.shape[-1]
    x = torch.cat([torch.nan_to_num(x, nan=0.0), torch.zeros(*x.shape[:-1], pad)], dim=-1)
    return pool_tokens(b.encode(x), model.pooling)


def project(model: FusionModel, name: str, f: torch.Tensor) -> torch.Tensor:
    """LayerNorm + Linear of one modality, written out from the parameters."""
    norm, linear = model.fusion.projections[name]
    z = F.layer_norm(f, (f.shape[-1],), norm.weight, norm.bias, norm.eps)
    return z @ linear.weight.T + linear.bias


def projected(model: FusionModel, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: project(model, n, branch_features(model, n, x[n])) for n in model.names}


# ---------------------------------------------------------------------------------------------- shapes and padding
@pytest.mark.parametrize("fusion, width", [("weighted", 32), ("concat", 64)])
def test_output_shapes_with_different_channels_lengths_and_widths(fusion, width):
    model = two_modalities(fusion)
    x = inputs(batch=5)
    assert model(x).shape == (5, 3)
    features = model.features(x)
    assert features.shape == (5, 16 + 32)
    assert model.fusion.fuse(features).shape == (5, width)  # fusion_dim defaults to the widest branch
    assert model.names == ["a", "b"]


def test_fusion_dim_sets_the_common_width():
    model = three_modalities()
    x = inputs(batch=2, with_c=True)
    assert model.fusion.fuse(model.features(x)).shape == (2, 20)
    assert model(x).shape == (2, 4)


def test_lengths_not_a_multiple_of_the_patch_are_right_zero_padded():
    model = two_modalities()
    x = {"a": torch.randn(2, 2, 50), "b": torch.randn(2, 3, 70)}
    padded = {"a": F.pad(x["a"], (0, 14)), "b": F.pad(x["b"], (0, 26))}
    with torch.no_grad():
        out, ref = model(x), model(padded)
        # left padding (or no padding) would give something else
        other = model({"a": F.pad(x["a"], (14, 0)), "b": F.pad(x["b"], (26, 0))})
    torch.testing.assert_close(out, ref)
    assert not torch.allclose(out, other, atol=1e-4)


def test_modality_present():
    x = torch.randn(4, 2, 8)
    x[1] = float("nan")
    x[2, 0] = float("nan")  # one channel missing is still present
    x[3, :, :3] = float("nan")
    assert modality_present(x).tolist() == [True, False, True, True]


# ---------------------------------------------------------------------------------------------- weighted fusion
def test_weighted_fusion_equals_the_hand_computation():
    model = two_modalities()
    w = set_logits(model, [0.9, -0.6])
    x = inputs(batch=4)
    with torch.no_grad():
        z = projected(model, x)
        fused = w[0] * z["a"] + w[1] * z["b"]
        torch.testing.assert_close(model.fusion.fuse(model.features(x)), fused)
        torch.testing.assert_close(model(x), model.fusion.classifier.classify(fused))
    weights = model.modality_weights()
    assert list(weights) == ["a", "b"]
    assert weights["a"] == pytest.approx(float(w[0])) and weights["b"] == pytest.approx(float(w[1]))


@pytest.mark.parametrize("pooling", ["max", "first"])
def test_branch_pooling_is_used(pooling):
    model = two_modalities(pooling=pooling)
    set_logits(model, [0.3, -0.2])
    x = inputs(batch=2)
    with torch.no_grad():
        z = projected(model, x)  # branch_features pools with model.pooling
        w = model.fusion.weights()
        torch.testing.assert_close(model.fusion.fuse(model.features(x)), w[0] * z["a"] + w[1] * z["b"])


def test_modality_weights_sum_to_one_and_are_none_for_concat():
    model = three_modalities()
    set_logits(model, [1.0, -2.0, 0.5])
    weights = model.modality_weights()
    assert set(weights) == {"a", "b", "c"}
    assert sum(weights.values()) == pytest.approx(1.0)
    assert weights["a"] > weights["c"] > weights["b"]
    fresh = FusionModel({"a": branch(2), "b": branch(1)}, num_classes=2)
    assert fresh.modality_weights() == pytest.approx({"a": 0.5, "b": 0.5})  # uniform at the start
    assert two_modalities("concat").modality_weights() is None
    assert not hasattr(two_modalities("concat").fusion, "modality_logits")


# ---------------------------------------------------------------------------------------------- missing modalities
def test_missing_modality_of_two_leaves_the_present_projection_alone():
    model = two_modalities()
    set_logits(model, [0.9, -0.6])
    x = inputs(batch=3)
    xm = {k: v.clone() for k, v in x.items()}
    xm["b"][1] = float("nan")
    with torch.no_grad():
        features = model.features(xm)
        assert torch.isnan(features[1, 16:]).all() and not torch.isnan(features[1, :16]).any()
        assert not torch.isnan(features[[0, 2]]).any()
        fused = model.fusion.fuse(features)
        z = projected(model, x)
        torch.testing.assert_close(fused[1], z["a"][1])
        torch.testing.assert_close(model(xm)[1], model.fusion.classifier.classify(z["a"][1:2])[0])
        full = model(x)  # the other samples are unaffected
        torch.testing.assert_close(model(xm)[[0, 2]], full[[0, 2]])
        assert not torch.allclose(model(xm)[1], full[1], atol=1e-4)


def test_missing_modality_of_three_renormalises_the_other_two():
    model = three_modalities()
    w = set_logits(model, [0.4, -0.8, 1.1])
    x = inputs(batch=4, with_c=True)
    xm = {k: v.clone() for k, v in x.items()}
    xm["c"][2] = float("nan")
    xm["a"][0] = float("nan")
    with torch.no_grad():
        z = projected(model, x)
        fused = model.fusion.fuse(model.features(xm))
        torch.testing.assert_close(fused[2], (w[0] * z["a"][2] + w[1] * z["b"][2]) / (w[0] + w[1]))
        torch.testing.assert_close(fused[0], (w[1] * z["b"][0] + w[2] * z["c"][0]) / (w[1] + w[2]))
        full = model.fusion.fuse(model.features(x))
        torch.testing.assert_close(fused[[1, 3]], full[[1, 3]])


def test_present_argument_equals_nan_inputs():
    model = three_modalities()
    set_logits(model, [0.4, -0.8, 1.1])
    x = inputs(batch=4, with_c=True)
    xm = {k: v.clone() for k, v in x.items()}
    xm["b"][[0, 3]] = float("nan")
    xm["c"][1] = float("nan")
    present = {"b": torch.tensor([False, True, True, False]), "c": torch.tensor([1, 0, 1, 1])}  # ints work too
    with torch.no_grad():
        torch.testing.assert_close(model(x, present=present), model(xm))
        # present=True does not resurrect an all-NaN input
        torch.testing.assert_close(model(xm, present={"b": torch.ones(4, dtype=torch.bool)}), model(xm))


def test_all_absent_sample_gives_the_classifier_of_zeros():
    for model in (two_modalities(), two_modalities("concat")):
        x = inputs(batch=3)
        x["a"][1] = float("nan")
        x["b"][1] = float("nan")
        with torch.no_grad():
            out = model(x)
            width = model.fusion.classifier.head[0].normalized_shape[0]
            assert torch.isfinite(out).all()
            torch.testing.assert_close(out[1], model.fusion.classifier.classify(torch.zeros(1, width))[0])


def test_partial_nan_inside_a_present_modality_counts_as_zeros():
    model = two_modalities()
    x = inputs(batch=2)
    xm = {k: v.clone() for k, v in x.items()}
    xm["a"][0, 1, 5:20] = float("nan")
    xm["b"][1, :, 100:] = float("nan")
    xz = {k: torch.nan_to_num(v, nan=0.0) for k, v in xm.items()}
    with torch.no_grad():
        out = model(xm)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, model(xz))
        assert not torch.allclose(out, model(x), atol=1e-4)


@pytest.mark.parametrize("fusion", ["weighted", "concat"])
def test_gradients_are_finite_with_missing_modalities(fusion):
    model = two_modalities(fusion).train()
    x = inputs(batch=4)
    x["b"][1] = float("nan")  # b missing
    x["a"][2] = float("nan")  # a missing
    x["a"][3] = float("nan")  # both missing
    x["b"][3] = float("nan")
    x["a"][0, 0, :4] = float("nan")  # partial NaN
    loss = F.cross_entropy(model(x), torch.tensor([0, 1, 2, 0]))
    assert torch.isfinite(loss)
    loss.backward()
    dead = {f"branches.{n}.{p}" for n, b in model.branches.items() for p in b.unused_parameter_names()}
    for name, p in model.named_parameters():
        if ".task_heads.pretrain." in name or name.endswith("mask_token") or name in dead:
            continue
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    if fusion == "weighted":
        assert model.fusion.modality_logits.grad.abs().sum() > 0


def test_concat_puts_zeros_in_the_absent_slot():
    model = two_modalities("concat")
    x = inputs(batch=3)
    xm = {k: v.clone() for k, v in x.items()}
    xm["a"][0] = float("nan")
    xm["b"][2] = float("nan")
    with torch.no_grad():
        fused = model.fusion.fuse(model.features(xm))
        z = projected(model, x)
        torch.testing.assert_close(fused, torch.cat([z["a"], z["b"]], dim=1) * torch.tensor(
            [[0.0] * 32 + [1.0] * 32, [1.0] * 64, [1.0] * 32 + [0.0] * 32]))
        torch.testing.assert_close(model(xm), model.fusion.classifier.classify(fused))


def test_fusion_head_checks_its_input_width():
    head = FusionHead({"a": 4, "b": 6}, 8, 3)
    assert head(torch.randn(2, 10)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"expected branch features \[B, 10\]"):
        head(torch.randn(2, 9))


# ---------------------------------------------------------------------------------------------- config, state, freezing
@pytest.mark.parametrize("fusion, hidden", [("weighted", None), ("concat", (12, 8))])
def test_from_config_and_state_dict_reproduce_the_outputs(fusion, hidden):
    model = three_modalities() if fusion == "weighted" else FusionModel(
        {"a": branch(2), "b": branch(3, patch=32, dim=32)}, num_classes=3, fusion=fusion, head_hidden_dim=hidden,
        pooling="max").eval()
    if fusion == "weighted":
        set_logits(model, [0.4, -0.8, 1.1])
    config = json.loads(json.dumps(model.config))  # JSON-serialisable, and survives the round trip
    clone = FusionModel.from_config(config)
    clone.load_state_dict(model.state_dict())  # strict: same parameter names and shapes
    clone.eval()
    x = inputs(batch=2, with_c=fusion == "weighted")
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x), rtol=0, atol=0)
    assert clone.config == config and clone.pooling == model.pooling
    assert clone.modality_weights() == model.modality_weights()


def test_freeze_branches():
    model = two_modalities()
    assert model.freeze_branches(["a"]) is model
    assert all(not p.requires_grad for p in model.branches["a"].parameters())
    assert all(p.requires_grad for p in model.branches["b"].parameters())
    assert all(p.requires_grad for p in model.fusion.parameters())
    model.train()
    assert model.training and model.fusion.training
    assert all(m.training for m in model.branches["b"].modules())
    assert not any(m.training for m in model.branches["a"].modules())
    model.freeze_branches(["a"])  # again: no duplicate bookkeeping
    assert model.frozen_branches == ["a"]
    F.cross_entropy(model(inputs(batch=2)), torch.tensor([0, 1])).backward()
    assert all(p.grad is None for p in model.branches["a"].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.branches["b"].parameters())
    model.eval()
    assert not model.training and not any(m.training for m in model.modules())
    with pytest.raises(ValueError, match=r"no branch 'z'.*\['a', 'b'\]"):
        model.freeze_branches(["z"])


def test_frozen_branch_has_no_dropout_in_train_mode():
    model = FusionModel({"a": branch(2, dropout=0.5), "b": branch(1, dropout=0.5)}, num_classes=2)
    model.freeze_branches(["a"]).train()
    x = {"a": torch.randn(2, 2, 32), "b": torch.randn(2, 1, 32)}
    fa1, fa2 = model.features(x)[:, :16], model.features(x)[:, :16]
    torch.testing.assert_close(fa1, fa2)  # frozen branch: deterministic
    fb1, fb2 = model.features(x)[:, 16:], model.features(x)[:, 16:]
    assert not torch.allclose(fb1, fb2)  # trained branch: dropout active


# ---------------------------------------------------------------------------------------------- errors
def test_wrong_input_keys():
    model = two_modalities()
    x = inputs(batch=2)
    with pytest.raises(ValueError, match=r"expected inputs for modalities \['a', 'b'\], got \['a'\]"):
        model({"a": x["a"]})
    with pytest.raises(ValueError, match="expected inputs for modalities"):
        model({**x, "c": x["a"]})


def test_wrong_input_shape_names_the_modality():
    model = two_modalities()
    x = inputs(batch=2)
    with pytest.raises(ValueError, match=r"modality 'b': expected input \[B, C, T\]"):
        model({"a": x["a"], "b": x["b"][0]})
    with pytest.raises(ValueError, match=r"modality 'b': expected 3 channels"):
        model({"a": x["a"], "b": x["b"][:, :2]})


def test_branch_with_a_classification_head_is_refused():
    with pytest.raises(ValueError, match=r"branch 'b' has a classification head"):
        FusionModel({"a": branch(2), "b": branch(2, num_classes=3)}, num_classes=3)


def test_branch_that_is_not_physiowave_is_refused():
    with pytest.raises(ValueError, match=r"branch 'b' is a Linear, expected a PhysioWave encoder"):
        FusionModel({"a": branch(2), "b": torch.nn.Linear(2, 2)}, num_classes=3)
    with pytest.raises(ValueError, match="at least one branch"):
        FusionModel({}, num_classes=3)


@pytest.mark.parametrize("name", ["1ecg", "ecg.v2", "ecg-1", "", "e cg"])
def test_bad_modality_name(name):
    with pytest.raises(ValueError, match="modality name"):
        FusionModel({name: branch(1)}, num_classes=2)


@pytest.mark.parametrize("name", ["train", "keys", "type"])
def test_reserved_modality_name_is_a_clear_value_error(name):
    with pytest.raises(ValueError, match="modality name"):
        FusionModel({name: branch(1)}, num_classes=2)


def test_bad_fusion_and_pooling():
    with pytest.raises(ValueError, match=r"fusion must be one of \('weighted', 'concat'\), got 'sum'"):
        FusionModel({"a": branch(1)}, num_classes=2, fusion="sum")
    with pytest.raises(ValueError, match=r"pooling must be one of .*got 'median'"):
        FusionModel({"a": branch(1)}, num_classes=2, pooling="median")


# ---------------------------------------------------------------------------------------------- learning
def _sines(n: int, g: torch.Generator) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``sig``: a sine whose frequency is the class (2 or 8 cycles), random phase; ``noise``: white noise."""
    y = torch.randint(0, 2, (n,), generator=g)
    t = torch.arange(64) / 64
    freq = torch.where(y == 1, 8.0, 2.0)[:, None]
    phase = torch.rand(n, 1, generator=g) * 2 * math.pi
    sig = torch.sin(2 * math.pi * freq * t + phase)[:, None] + 0.1 * torch.randn(n, 1, 64, generator=g)
    return {"sig": sig, "noise": torch.randn(n, 1, 64, generator=g)}, y


def test_the_informative_modality_gains_weight():
    g = torch.Generator().manual_seed(0)
    x_train, y_train = _sines(128, g)
    x_test, y_test = _sines(128, g)
    model = FusionModel({"sig": branch(1, dropout=0.0), "noise": branch(1, dropout=0.0)}, num_classes=2,
                        head_dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(80):
        idx = torch.randint(0, 128, (16,), generator=g)
        loss = F.cross_entropy(model({k: v[idx] for k, v in x_train.items()}), y_train[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(dim=1) == y_test).float().mean().item()
    weights = model.modality_weights()
    assert accuracy > 0.9
    assert weights["sig"] > weights["noise"] + 0.02  # from 0.5 / 0.5
