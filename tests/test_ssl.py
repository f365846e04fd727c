"""New-model settings for pretraining that learns: unit-free input, a target that cannot collapse, band pooling,
weight decay that spares filters and norms. The measurement on real sEMG is benchmarks/bench_ssl.py; these tests
check the mechanisms, and on real ECG records that the band scale holds and the features depend on the input."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import physiowave
from physiowave.engine import main
from physiowave.engine.args import parse_args
from physiowave.engine.optim import build_optimizer, decays
from physiowave.engine.tasks import build_task
from physiowave.models import LEGACY_CONFIG
from physiowave.models.heads import pool_tokens
from physiowave.models.input_norm import normalize_input
from physiowave.models.objective import FixedWaveletTransform
from physiowave.models.wavelet import wavelet_filters

from .conftest import randomize_

SMALL = dict(in_channels=4, max_level=2, wave_kernel_size=8, wavelet_names=["db4", "sym4"], patch_size=32, embed_dim=32,
             depth=2, num_heads=4, dropout=0.0, head_dropout=0.0)


def _signal(B: int = 3, C: int = 4, T: int = 256, seed: int = 0) -> torch.Tensor:
    """Random walks with a different scale per channel and sample (channel ratios matter)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, T, generator=g).cumsum(-1) * 0.1 + torch.randn(B, C, T, generator=g)
    return x * torch.logspace(-1, 1, C)[None, :, None] + 3.0  # an offset too


# ------------------------------------------------------------------------------------------------- scale
@pytest.mark.parametrize("c", [1e-4, 1e-2, 7.5, 1e4])
def test_new_model_output_is_the_same_for_any_input_scale(c):
    model = randomize_(physiowave.PhysioWave(**SMALL, num_classes=3)).eval()
    x = _signal()
    with torch.no_grad():
        ref, scaled = model.features(x), model.features(x * c)
        torch.testing.assert_close(scaled, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
        torch.testing.assert_close(model(x * c), model(x), rtol=1e-4, atol=1e-4)
        # ... but the ratios between channels are information: changing one channel's scale changes the output
        y = x.clone()
        y[:, 0] *= 10
        assert (model.features(y) - ref).abs().max() > 100 * 1e-4 * ref.abs().max()


def test_rms_normalisation_is_one_scale_per_sample_set_by_the_variation():
    x = _signal()
    z = normalize_input(x, "rms")
    torch.testing.assert_close(z / x, (z / x)[:, :1, :1].expand_as(x))  # one factor per sample: ratios and offsets kept
    torch.testing.assert_close(z.var(-1, unbiased=False).mean(1), torch.ones(3))  # unit variation, whatever the offset
    flat = torch.full((2, 4, 64), 5.0)
    assert torch.equal(normalize_input(flat, "rms"), flat)  # no variation (silence, padding): left as it is
    with pytest.raises(ValueError, match="input_norm"):
        physiowave.PhysioWave(**SMALL, input_norm="zscore")


def test_original_configuration_sees_the_raw_input():
    model = randomize_(physiowave.PhysioWave(**{**SMALL, **LEGACY_CONFIG})).eval()
    x = _signal()
    assert torch.equal(model.normalize(x), x)
    with torch.no_grad():
        assert (model.features(x * 100) - model.features(x)).abs().max() > 1e-2


def test_training_on_scaled_data_follows_the_same_path():
    """Two fresh models trained on x and on 1e-3·x (volts instead of mV) take the same steps."""
    x, y = _signal(8), torch.arange(8) % 3

    def train(scale: float) -> torch.nn.Module:
        torch.manual_seed(0)
        model = physiowave.PhysioWave(**SMALL, num_classes=3)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for _ in range(5):
            loss = torch.nn.functional.cross_entropy(model(x * scale), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return model

    a, b = train(1.0), train(1e-3)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-5, msg=name)


# ------------------------------------------------------------------------------------------------- objective
def test_fixed_transform_is_the_strided_wavelet_filter_bank():
    x = _signal(1)
    bands = FixedWaveletTransform(4, 2, 8, "db4")(x)  # [1, 12, 256]
    assert bands.shape == (1, 12, 256) and not list(FixedWaveletTransform(4, 2, 8, "db4").parameters())
    low, high = wavelet_filters("db4", 8)
    sig = x[0, 1].double().numpy()

    def level(s: np.ndarray, taps: np.ndarray) -> np.ndarray:  # zero-padded cross-correlation, stride 2
        padded = np.pad(s, 4)
        return np.correlate(padded, taps, mode="valid")[::2][: (len(s) + 8 - 8) // 2 + 1]

    d1 = level(sig, high)[:128]
    np.testing.assert_allclose(bands[0, 1, ::2].double().numpy(), d1, rtol=1e-5, atol=1e-5)
    a1 = level(sig, low)[:128]
    d2 = level(a1, high)[:63]  # the last one reads a1 past the 128 samples the transform keeps
    np.testing.assert_allclose(bands[0, 4 + 1, ::4][:63].double().numpy(), d2, rtol=1e-4, atol=1e-4)


def test_bands_target_cannot_be_shrunk_by_the_front_end():
    """Scaling the learnable wavelet filters by 0.1 shrinks the original objective's target ~10×; the bands target
    (a fixed transform of the normalised input) does not move, so no parameter can lower the loss that way."""
    x = _signal()
    for objective, moves in (("original", True), ("bands", False)):
        model = randomize_(physiowave.PhysioWave(**SMALL, objective=objective)).eval()
        gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
        _, before, _ = model.forward_pretrain(x, 0.5, "random", generator=gen())
        with torch.no_grad():
            for pair in model.wavelet_decomp.selector.wavelet_filters:
                pair.low_filter.weight.mul_(0.1)
                pair.high_filter.weight.mul_(0.1)
        _, after, _ = model.forward_pretrain(x, 0.5, "random", generator=gen())
        if moves:
            assert after.abs().mean() < 0.5 * before.abs().mean()
        else:
            assert torch.equal(after, before) and not after.requires_grad
            assert after.shape[-1] == 33  # P standardised samples + the log-RMS


def test_bands_loss_is_one_for_the_mean_prediction_and_reports_band_scale():
    model = physiowave.PhysioWave(**SMALL)
    x = _signal()
    pred, target, mask = model.forward_pretrain(x, 0.5, "random", generator=torch.Generator().manual_seed(1))
    P = 32
    torch.testing.assert_close(target[..., :P].mean(-1), torch.zeros(target.shape[:2]), atol=1e-5, rtol=0)
    var = target[..., :P].var(-1, unbiased=False)  # 1, less a floor that only nearly flat patches feel
    assert var.max() <= 1.0 + 1e-4 and var.median() > 0.999 and var.min() > 0.9
    loss, sums = model.pretrain_loss(x, 0.5, "random", generator=torch.Generator().manual_seed(1))
    assert sums["band_rms"].shape == (3, 3) and (sums["band_rms"] > 0).all()
    assert 1.0 < loss.item() < 10.0  # an untrained head: around 1 per part


# ------------------------------------------------------------------------------------------------- pooling, optimiser
def test_bands_pooling_keeps_each_band_row():
    model = physiowave.PhysioWave(**SMALL, num_classes=3).eval()
    x = _signal()
    with torch.no_grad():
        tokens = model.encode(x)  # [3, 12·8, 32]
        feats = model.features(x)
    assert feats.shape == (3, 12 * 32)
    torch.testing.assert_close(feats, tokens.reshape(3, 12, 8, 32).mean(2).flatten(1))
    assert model.task_heads["classification"].head[0].normalized_shape == (12 * 32,)
    with pytest.raises(ValueError, match="band rows"):
        pool_tokens(tokens[:, :-1], "bands", 12)


def test_weight_decay_spares_filters_norms_biases_and_mask_tokens():
    model = physiowave.PhysioWave(**SMALL, decoder="transformer")
    named = list(model.named_parameters())
    args = parse_args("pretrain", ["--train_files", "x.h5"])
    groups = build_optimizer(named, args, build_task(args)).param_groups
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in named:
        spared = p.ndim < 2 or "wavelet_filters" in name or "mask_token" in name
        assert (id(p) in decayed) != spared, name
        assert decays(name, p) != spared
    assert any("encoder.blocks.0.attn.qkv.weight" == n for n, p in named if id(p) in decayed)
    assert all(g["fused"] for g in groups)  # the one-kernel AdamW on CPU


def test_recipe_defaults():
    pre = parse_args("pretrain", ["--train_files", "x.h5"])
    assert (pre.mask_ratio, pre.lr, pre.objective) == (0.6, 1e-3, None)  # objective None = model default / checkpoint
    ft = parse_args("finetune", ["--train_file", "x.h5"])
    probe = parse_args("finetune", ["--train_file", "x.h5", "--freeze_encoder"])
    given = parse_args("finetune", ["--train_file", "x.h5", "--freeze_encoder", "--lr", "3e-4"])
    assert (ft.lr, probe.lr, given.lr, ft.pooling) == (1e-3, 1e-2, 3e-4, "bands")


# ------------------------------------------------------------------------------------------------- real ECG
def _ecg_windows(shared: Path) -> np.ndarray:
    """The CinC 2021 records in mV as wfdb reads them (no normalisation): two 1 s windows each, ``[N, 12, 512]``."""
    import wfdb

    out = []
    for hea in sorted((shared / "data/real/torch_ecg_cinc2021").glob("*.hea")):
        record = wfdb.rdrecord(str(hea.with_suffix("")))
        x = record.p_signal.T.astype(np.float32)  # [12, T] mV
        out += [x[:, s:s + 512] for s in range(0, x.shape[1] - 511, 1024)][:2]
    return np.nan_to_num(np.stack(out))


def _pretrain(shared_windows: np.ndarray, out: Path, *extra: str) -> dict:
    train, val = out.parent / "ecg_train.h5", out.parent / "ecg_val.h5"
    for path, part in ((train, shared_windows[:-16]), (val, shared_windows[-16:])):
        with h5py.File(path, "w") as f:
            f["data"] = part
    assert main("pretrain",
                ["--train_files", str(train), "--val_files", str(val), "--patch_size", "64", "--max_level", "2",
                             "--wave_kernel_size", "8", "--wavelet_names", "db4", "--embed_dim", "32", "--depth", "1",
                             "--num_heads", "4", "--batch_size", "8", "--epochs", "8", "--num_workers", "0",
                             "--device", "cpu", "--output_dir", str(out), *extra]) == 0
    return json.loads((out / "training_history.json").read_text())


def test_pretraining_on_real_ecg_in_mv_keeps_band_scale_and_input_dependent_features(shared, tmp_path):
    x = _ecg_windows(shared)
    assert 0.05 < np.abs(x).mean() < 5  # millivolts, as wfdb gives them
    h = _pretrain(x, tmp_path / "bands")
    assert h["val_loss"][-1] < 0.9 * h["val_loss"][0], h["val_loss"]
    kept = [h[f"train_band_rms_{k}"][-1] / h[f"train_band_rms_{k}"][0] for k in range(3)]
    assert all(0.8 < r < 1.25 for r in kept), kept
    model = physiowave.load_model(tmp_path / "bands" / "best_model.pth")
    with torch.no_grad():
        feats = model.features(torch.from_numpy(x[-16:])).numpy()  # [16, F·D]: 8 held-out records, 2 windows each
    # the features identify the recording: a window's nearest neighbour is mostly the other window of its record
    z = (feats - feats.mean(0)) / (feats.std(0) + 1e-8)
    dist = ((z[:, None] - z[None]) ** 2).sum(-1) + np.diag(np.full(16, np.inf))
    same = np.mean(dist.argmin(1) // 2 == np.arange(16) // 2)
    assert same >= 0.25, same  # chance: 1/15

    # the original objective on the same data lets the front-end shrink its own target: it starts to collapse
    h = _pretrain(x, tmp_path / "original", "--objective", "original", "--decoder", "mlp")
    shrunk = [h[f"train_band_rms_{k}"][-1] / h[f"train_band_rms_{k}"][0] for k in range(3)]
    assert min(shrunk) < 0.9 * min(kept), (shrunk, kept)
