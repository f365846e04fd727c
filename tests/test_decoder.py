"""MAE-style pretraining (``decoder="transformer"``): RoPE at token subsets, visible-only encoder, decoder, rebuild."""
from __future__ import annotations

import pytest
import torch

import physiowave
from physiowave.models.decoder import MaskedDecoder, decoder_heads
from physiowave.models.masking import masked_mse_loss
from physiowave.models.rope import RotaryEmbedding, apply_rotary
from physiowave.models.transformer import TransformerEncoder

from .conftest import randomize_

TINY = dict(in_channels=4, max_level=2, wave_kernel_size=8, wavelet_names=["db4", "sym4"], patch_size=32, embed_dim=32,
            depth=2, num_heads=4, dropout=0.0, head_dropout=0.0, input_norm="none", objective="original")  # K = P
N_TOKENS = 3 * 4 * (256 // 32)  # F = (L+1)·C rows × T/P columns


def mae(**kw) -> physiowave.PhysioWave:
    return physiowave.PhysioWave(**{**TINY, "decoder": "transformer", **kw})


def signal(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 4, 256)


def sorted_subsets(batch: int, n: int, keep: int) -> torch.Tensor:
    """``[batch, keep]`` distinct positions in 0..n−1, increasing per row."""
    return torch.stack([torch.randperm(n)[:keep].sort().values for _ in range(batch)])


def reference_rope_block(block, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """One pre-norm block written from docs/architecture.md §8, RoPE as complex rotation by n·θ_j. x ``[B, V, D]``."""
    B, V, D = x.shape
    H = block.attn.num_heads
    hd = D // H
    qkv = block.attn.qkv(block.norm1(x)).double().view(B, V, 3, H, hd)
    theta = 10000.0 ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    # e^{i n θ_j}
    turn = torch.polar(torch.ones(B, V, hd // 2, dtype=torch.float64), positions.double()[..., None] * theta)

    def rotate(t: torch.Tensor) -> torch.Tensor:  # [B, V, H, hd]: pairs (2j, 2j+1) as complex numbers
        return torch.view_as_real(torch.view_as_complex(t.reshape(B, V, H, hd // 2,
                                                                  2).contiguous()) * turn[:, :, None]).flatten(-2)

    q, k, v = rotate(qkv[:, :, 0]), rotate(qkv[:, :, 1]), qkv[:, :, 2]
    att = torch.einsum("bqhd,bkhd->bhqk", q, k) / hd**0.5
    out = torch.einsum("bhqk,bkhd->bqhd", att.softmax(-1), v).reshape(B, V, D).float()
    x = x + block.attn.proj(out)
    return x + block.mlp(block.norm2(x))


# ------------------------------------------------------------------------------------------- RoPE and encoder
def test_rope_at_positions_equals_gathered_table_rows():
    rope = RotaryEmbedding(8)
    positions = sorted_subsets(3, 40, 11)
    cos, sin = rope.at(positions, torch.float32)
    full_cos, full_sin = rope.tables(40, torch.device("cpu"), torch.float32)
    assert cos.shape == (3, 11, 4)
    assert torch.equal(cos, full_cos[positions]) and torch.equal(sin, full_sin[positions])
    # Rotating the gathered rows with per-sample tables = rotating the full sequence, then gathering.
    x = torch.randn(3, 2, 40, 8)  # [B, H, N, hd]
    rows = positions[:, None, :, None].expand(-1, 2, -1, 8)
    expected = apply_rotary(x, full_cos, full_sin).gather(2, rows)
    # Equal up to rounding: the complex product may take a different vector path for a broadcast table.
    torch.testing.assert_close(apply_rotary(x.gather(2, rows), cos[:, None], sin[:, None]), expected, rtol=1e-6,
                               atol=1e-6)


def test_encoder_with_arange_positions_equals_default():
    enc = randomize_(TransformerEncoder(32, 2, 4, dropout=0.0)).eval()
    x = torch.randn(2, 10, 32)
    with torch.no_grad():
        torch.testing.assert_close(enc(x, positions=torch.arange(10).expand(2, 10)), enc(x), rtol=0, atol=1e-6)


def test_encoder_positions_rotate_each_token_by_its_full_sequence_index():
    enc = randomize_(TransformerEncoder(32, 1, 4, dropout=0.0)).eval()
    x = torch.randn(2, 7, 32)
    positions = sorted_subsets(2, 50, 7)
    with torch.no_grad():
        expected = enc.norm(reference_rope_block(enc.blocks[0], x, positions))
        torch.testing.assert_close(enc(x, positions=positions), expected, rtol=1e-5, atol=1e-5)
        # Not the same function as 0..V−1 positions: the test would catch positions being ignored.
        assert (enc(x) - expected).abs().max() > 1e-3


def test_encoder_positions_with_gradient_checkpointing():
    enc = randomize_(TransformerEncoder(32, 2, 4, dropout=0.0))
    x = torch.randn(2, 9, 32, requires_grad=True)
    positions = sorted_subsets(2, 30, 9)
    plain = enc(x, positions=positions)
    (grad_plain,) = torch.autograd.grad(plain.square().sum(), x)
    enc.grad_checkpointing = True
    ckpt = enc(x, positions=positions)
    (grad_ckpt,) = torch.autograd.grad(ckpt.square().sum(), x)
    torch.testing.assert_close(ckpt, plain)
    torch.testing.assert_close(grad_ckpt, grad_plain)


def test_encoder_rejects_positions_of_the_wrong_shape():
    enc = TransformerEncoder(32, 1, 4)
    with pytest.raises(ValueError, match="positions must be"):
        enc(torch.randn(2, 5, 32), positions=torch.arange(4).expand(2, 4))


# ------------------------------------------------------------------------------------------- decoder module
def test_decoder_heads_and_default_width():
    assert (decoder_heads(192), decoder_heads(128), decoder_heads(48)) == (6, 4, 1)
    model = mae()
    dec = model.task_heads["pretrain"]
    assert isinstance(dec, MaskedDecoder)
    assert dec.embed.out_features == 16 and len(dec.transformer.blocks) == 2  # embed_dim // 2, default depth
    wide = mae(decoder_dim=64, decoder_depth=3).task_heads["pretrain"]
    assert wide.embed.out_features == 64 and len(wide.transformer.blocks) == 3
    assert wide.transformer.blocks[0].attn.num_heads == 2


def test_decoder_places_visible_tokens_by_ids_keep():
    dec = randomize_(MaskedDecoder(32, 16, 32, 1, 1, dropout=0.0)).eval()
    visible, ids = torch.randn(2, 5, 32), sorted_subsets(2, 12, 5)
    perm = torch.randperm(5)
    with torch.no_grad():
        out = dec(visible, ids, 12, 3, 4)
        assert out.shape == (2, 12, 16)
        # The same tokens listed in another order at the same positions: the same prediction.
        torch.testing.assert_close(dec(visible[:, perm], ids[:, perm], 12, 3, 4), out)
        # Moving one token to another position changes it.
        moved = ids.clone()
        moved[:, 0] = torch.tensor([min(set(range(12)) - set(row.tolist())) for row in ids])  # a masked position
        assert (dec(visible, moved, 12, 3, 4) - out).abs().max() > 1e-4


def test_decoder_rejects_inconsistent_grid():
    dec = MaskedDecoder(32, 16, 32, 1, 1)
    with pytest.raises(ValueError, match="rows·cols"):
        dec(torch.randn(1, 2, 32), torch.tensor([[0, 1]]), 12, 3, 5)


# ------------------------------------------------------------------------------------------- MAE pretraining pass
def _perturb_hook(rows: torch.Tensor, scale: float = 5.0):
    """Forward hook on patch_embed adding noise to the tokens in ``rows`` (bool ``[B, N]``)."""
    def hook(module, args, out):
        return out + scale * torch.randn_like(out) * rows.unsqueeze(-1)
    return hook


def test_visible_encoder_output_does_not_depend_on_masked_tokens():
    model = randomize_(mae()).eval()
    x = signal()
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    model.encoder.register_forward_hook(lambda m, args, kwargs, out: seen.append((args[0], out)), with_kwargs=True)

    def run(perturb: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        handle = model.patch_embed.register_forward_hook(_perturb_hook(perturb)) if perturb is not None else None
        with torch.no_grad():
            _, _, mask = model.forward_pretrain(x, 0.7, "random", generator=torch.Generator().manual_seed(3))
        if handle:
            handle.remove()
        return seen[-1][0], seen[-1][1], mask

    enc_in, enc_out, mask = run(None)
    V = N_TOKENS - int(N_TOKENS * 0.7)
    assert enc_in.shape == (2, V, 32) and enc_out.shape == (2, V, 32)
    # The encoder input is the position-encoded tokens at the unmasked positions, in increasing order.
    with torch.no_grad():
        tokens = model.tokenize(model.decompose(x))
    torch.testing.assert_close(enc_in, torch.stack([tokens[b][~mask[b]] for b in range(2)]))

    _, out_masked_perturbed, mask2 = run(mask)
    assert torch.equal(mask2, mask)  # random masking does not look at the tokens
    assert torch.equal(out_masked_perturbed, enc_out)
    # The same perturbation on one visible token does change the visible outputs.
    one_visible = torch.zeros_like(mask)
    one_visible[:, int((~mask[0]).nonzero()[0])] = True
    one_visible &= ~mask
    _, out_visible_perturbed, _ = run(one_visible)
    assert (out_visible_perturbed - enc_out).abs().max() > 1e-3


@pytest.mark.parametrize("masking", ["random", "frequency_guided", "frequency_guided_original"])
def test_pretrain_shapes_and_mask_counts(masking):
    model = mae()
    pred, target, mask = model.forward_pretrain(signal(3), 0.7, masking, generator=torch.Generator().manual_seed(0))
    assert pred.shape == target.shape == (3, N_TOKENS, 32)
    assert mask.dtype == torch.bool and mask.sum(1).tolist() == [int(N_TOKENS * 0.7)] * 3


def test_gradients_reach_every_parameter_except_the_dead_ones():
    model = randomize_(mae())
    pred, target, mask = model.forward_pretrain(signal(), 0.6, "random", generator=torch.Generator().manual_seed(0))
    masked_mse_loss(pred, target, mask).backward()
    dead = set(model.unused_parameter_names())
    assert "mask_token" in dead and "task_heads.pretrain.mask_token" not in dead
    for name, p in model.named_parameters():
        assert (p.grad is None) == (name in dead), name


def test_gradient_checkpointing_gives_the_same_pass():
    model = randomize_(mae())
    x = signal()
    torch.manual_seed(7)  # the wavelet front-end's dropout draws from the global RNG in training mode
    pred, target, mask = model.forward_pretrain(x, 0.7, generator=torch.Generator().manual_seed(1))
    model.set_grad_checkpointing(True)
    assert model.task_heads["pretrain"].transformer.grad_checkpointing
    torch.manual_seed(7)
    pred2, _, mask2 = model.forward_pretrain(x, 0.7, generator=torch.Generator().manual_seed(1))
    assert torch.equal(mask, mask2)
    torch.testing.assert_close(pred2, pred)


def test_loss_decreases_on_a_fixed_batch():
    model = mae()
    t = torch.arange(256.0)
    x = torch.stack([torch.stack([torch.sin(2 * torch.pi * (c + 1) * t / 64 + b) for c in range(4)]) for b in range(4)])
    model.wavelet_decomp.requires_grad_(False)  # a fixed target: otherwise the front-end moves it
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(30):
        pred, target, mask = model.forward_pretrain(x, 0.7, "random", generator=torch.Generator().manual_seed(0),
                                                    detach_target=True)
        loss = masked_mse_loss(pred, target, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses  # ≈ 0.67 measured over 4 seeds


def test_mask_ratio_zero_equals_reconstruct():
    model = randomize_(mae()).eval()
    x = signal()
    with torch.no_grad():
        pred, _, mask = model.forward_pretrain(x, 0.0)
        assert not mask.any()
        torch.testing.assert_close(pred, model.reconstruct(x))
        assert model.reconstruct(x).shape == (2, N_TOKENS, 32)


# ------------------------------------------------------------------------------------------- config and checkpoints
def test_config_rebuilds_the_model():
    model = randomize_(mae(decoder_dim=24, decoder_depth=1))
    assert ({k: model.config[k] for k in ("decoder", "decoder_dim", "decoder_depth")}
            == dict(decoder="transformer", decoder_dim=24, decoder_depth=1))
    rebuilt = physiowave.PhysioWave(**model.config)
    rebuilt.load_state_dict(model.state_dict())  # strict
    x = signal()
    model.eval(), rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.reconstruct(x), model.reconstruct(x), rtol=0, atol=0)


def test_checkpoint_round_trip_through_load_model(tmp_path):
    model = randomize_(mae()).eval()
    torch.save({"model_state_dict": model.state_dict(), "args": model.config}, tmp_path / "mae.pth")
    loaded = physiowave.load_model(tmp_path / "mae.pth")
    assert isinstance(loaded.task_heads["pretrain"], MaskedDecoder)
    x = signal()
    with torch.no_grad():
        a = model.forward_pretrain(x, 0.7, generator=torch.Generator().manual_seed(4))
        b = loaded.forward_pretrain(x, 0.7, generator=torch.Generator().manual_seed(4))
    for u, v in zip(a, b):
        assert torch.equal(u, v)


def test_mlp_path_is_unchanged():
    torch.manual_seed(1)
    plain = physiowave.PhysioWave(**TINY)
    torch.manual_seed(1)
    explicit = physiowave.PhysioWave(**TINY, decoder="mlp", decoder_depth=5, decoder_dim=8)  # depth/dim unused for mlp
    assert plain.state_dict().keys() == explicit.state_dict().keys()
    assert all(torch.equal(v, explicit.state_dict()[k]) for k, v in plain.state_dict().items())
    x = signal()
    plain.eval(), explicit.eval()
    with torch.no_grad():
        a = plain.forward_pretrain(x, 0.7, generator=torch.Generator().manual_seed(2))
        b = explicit.forward_pretrain(x, 0.7, generator=torch.Generator().manual_seed(2))
        # BERT-style, from the pieces: mask token in the encoder over the full sequence, MLP head on every token.
        tokens = plain.tokenize(plain.decompose(x))
        tokens = torch.where(a[2].unsqueeze(-1), plain.mask_token, tokens)
        bert = plain.task_heads["pretrain"](plain.encoder(tokens))
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    assert torch.equal(a[0], bert)


def test_bad_decoder_name_is_rejected():
    with pytest.raises(ValueError, match=r"decoder must be one of \('mlp', 'transformer'\), got 'conv'"):
        physiowave.PhysioWave(**TINY, decoder="conv")
