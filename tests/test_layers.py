"""Gate, cross-scale attention, rotary embedding, encoder attention and MLP against plain references
(docs/architecture.md §4, §5, §8)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from physiowave.models.cross_scale_ffn import CrossScaleAttention, CrossScaleFFN
from physiowave.models.gate import ChannelGate
from physiowave.models.dropout import Dropout, keep_mask
from physiowave.models.mlp import DROPPED, Mlp, _MlpFunction
from physiowave.models.rope import RotaryEmbedding, apply_rotary
from physiowave.models.transformer import Attention


def _gate_reference(gate: ChannelGate, a: torch.Tensor, heads: int) -> torch.Tensor:
    B, C, _ = a.shape
    p = a.mean(-1)
    q, k, v = (lin(p).reshape(B, heads, C // heads) for lin in (gate.q, gate.k, gate.v))
    out = torch.zeros(B, heads, C // heads, dtype=a.dtype)
    for b in range(B):
        for i in range(heads):
            scores = torch.stack([q[b, i] @ k[b, j] for j in range(heads)]) / math.sqrt(C // heads)
            out[b, i] = (torch.softmax(scores, 0)[:, None] * v[b]).sum(0)
    return torch.sigmoid(out.reshape(B, C))[..., None]


@pytest.mark.parametrize("channels,heads", [(12, 4), (8, 4), (6, 2), (3, 1), (1, 1)])
def test_gate_attends_between_heads(channels, heads):
    gate = ChannelGate(channels).double()
    assert gate.heads == heads
    a = torch.randn(2, channels, 40, dtype=torch.float64)
    g = gate(a)
    assert g.shape == (2, channels, 1) and ((g > 0) & (g < 1)).all()
    torch.testing.assert_close(g, _gate_reference(gate, a, heads))


def test_cross_scale_attention_equals_multihead_attention():
    attn = CrossScaleAttention(24, num_heads=4).double()
    ref = torch.nn.MultiheadAttention(24, 4, batch_first=True).double()
    ref.load_state_dict(attn.state_dict())
    q, mem = torch.randn(2, 30, 24, dtype=torch.float64), torch.randn(2, 60, 24, dtype=torch.float64)
    torch.testing.assert_close(attn(q, mem), ref(q, mem, mem, need_weights=False)[0])


def test_cross_scale_ffn_level0_ignores_attention():
    ffn = CrossScaleFFN(8).eval()
    s = torch.randn(2, 8, 16)
    torch.testing.assert_close(ffn(s), ffn.base(s))
    memory = torch.randn(2, 16, 8)
    assert not torch.allclose(ffn(s, memory), ffn.base(s))


def test_depthwise_conv_uses_middle_kernel_row_only():
    """The reference runs a 3×3 depthwise conv on a height-1 map: only the middle row of the kernel matters."""
    ffn = CrossScaleFFN(4).base.double().eval()
    s = torch.randn(2, 4, 20, dtype=torch.float64)
    u = ffn.fc1(s[:, :, None])  # reference path in 2-D
    u = F.gelu(ffn.dw(u))
    t = F.gelu(ffn.decomp(u))
    u = u - t
    u = u + ffn.sigma.scale * u
    torch.testing.assert_close(ffn(s), ffn.fc2(u)[:, :, 0])


def test_rope_scores_depend_only_on_relative_offset():
    rope = RotaryEmbedding(16)
    cos, sin = rope.tables(64, torch.device("cpu"), torch.float64)
    q, k = torch.randn(16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    qs = apply_rotary(q.expand(64, 16), cos, sin)
    ks = apply_rotary(k.expand(64, 16), cos, sin)
    scores = qs @ ks.T  # [m, n]
    for offset in (-7, 0, 3, 20):
        diag = torch.diagonal(scores, offset=offset)
        torch.testing.assert_close(diag, diag[0].expand_as(diag))
    assert not torch.isclose(scores[10, 10], scores[10, 13])
    torch.testing.assert_close(qs[0], q)  # position 0 is not rotated
    torch.testing.assert_close(qs.norm(dim=-1), q.norm().expand(64))


def test_rope_rotates_interleaved_pairs():
    cos, sin = RotaryEmbedding(4).tables(3, torch.device("cpu"), torch.float64)
    x = torch.tensor([[1.0, 0.0, 1.0, 0.0]], dtype=torch.float64).expand(3, 4)
    out = apply_rotary(x, cos, sin)
    n = torch.arange(3, dtype=torch.float64)
    theta = torch.tensor([1.0, 10000 ** (-2 / 4)], dtype=torch.float64)
    expected = torch.stack([torch.cos(n * theta[0]), torch.sin(n * theta[0]), torch.cos(n * theta[1]),
                            torch.sin(n * theta[1])], 1)
    torch.testing.assert_close(out, expected)


def test_encoder_attention_equals_explicit_softmax():
    attn = Attention(32, 4).double()
    x = torch.randn(2, 10, 32, dtype=torch.float64)
    cos, sin = RotaryEmbedding(8).tables(10, x.device, x.dtype)
    q, k, v = attn.qkv(x).reshape(2, 10, 3, 4, 8).permute(2, 0, 3, 1, 4)
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1)
    ref = attn.proj((weights @ v).transpose(1, 2).reshape(2, 10, 32))
    torch.testing.assert_close(attn(x, cos, sin), ref)


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_lean_mlp_matches_autograd_reference(p):
    mlp = Mlp(16, 64, dropout=p).double().train()
    x = torch.randn(3, 5, 16, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(1)
    y = mlp(x)
    y.square().sum().backward()
    grads = [x.grad.clone()] + [t.grad.clone() for t in mlp.parameters()]
    # Reference: the same masks (same RNG draws, same order), plain autograd.
    torch.manual_seed(1)
    fc1, fc2 = mlp[0], mlp[3]
    x.grad = None
    mlp.zero_grad()
    h = fc1(x)
    k1 = keep_mask(h.shape, p, h.device) if p else torch.ones_like(h, dtype=torch.bool)
    a = F.gelu(h) * k1 / (1 - p)
    y_ref = fc2(a)
    k2 = keep_mask(y_ref.shape, p, h.device) if p else torch.ones_like(y_ref, dtype=torch.bool)
    y_ref = y_ref * k2 / (1 - p)
    torch.testing.assert_close(y, y_ref)
    y_ref.square().sum().backward()
    for g, t in zip(grads, [x] + list(mlp.parameters())):
        torch.testing.assert_close(g, t.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_dropped_preactivation_gives_exact_zeros(dtype):
    """The lean MLP drops a unit by setting its pre-activation to DROPPED: GELU and GELU′ must be exactly 0 there
    (vectorised kernels included: 4,096 elements), or the first dropout would leak."""
    h = torch.full((4096,), DROPPED, dtype=dtype)
    assert torch.equal(F.gelu(h), torch.zeros_like(h))
    assert torch.equal(torch.ops.aten.gelu_backward(torch.randn_like(h) * 100, h), torch.zeros_like(h))


def test_lean_mlp_gradcheck():
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    w1 = torch.randn(8, 4, dtype=torch.float64, requires_grad=True)
    b1 = torch.randn(8, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    b2 = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: _MlpFunction.apply(*a, 0.0), (x, w1, b1, w2, b2))


def test_paths_taken_under_torch_compile_compute_the_same(monkeypatch):
    """RoPE (real arithmetic), dropout (F.dropout) and the MLP (plain layers) as torch.compile traces them."""
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64)
    cos, sin = RotaryEmbedding(6).tables(7, x.device, x.dtype)
    mlp = Mlp(8, 32, dropout=0.0).double().train()
    h = torch.randn(4, 5, 8, dtype=torch.float64, requires_grad=True)
    outs = []
    for compiling in (False, True):
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda compiling=compiling: compiling)
        h.grad = None
        mlp.zero_grad()
        y = mlp(h)
        y.square().sum().backward()
        outs.append([apply_rotary(x, cos, sin), y, h.grad] + [t.grad for t in mlp.parameters()])
        kept = (Dropout(0.25).train()(torch.ones(100_000)) != 0).double().mean().item()
        assert abs(kept - 0.75) < 0.01
    for eager, traced in zip(*outs):
        torch.testing.assert_close(traced, eager)


def test_keep_mask_rate_and_eval_mode():
    mask = keep_mask(torch.Size([400, 500]), 0.1, torch.device("cpu"))
    assert mask.dtype == torch.bool and abs(mask.float().mean().item() - 0.9) < 0.005
    assert keep_mask(torch.Size([1000]), 0.0, torch.device("cpu")).all()
    mlp = Mlp(8, 16, dropout=0.5).eval()
    x = torch.randn(2, 8)
    torch.testing.assert_close(mlp(x), mlp[3](F.gelu(mlp[0](x))))


def test_dropout_module_matches_its_mask_and_passes_gradients():
    drop = Dropout(0.25).train()
    x = torch.randn(6, 7, 50, requires_grad=True)
    torch.manual_seed(3)
    y = drop(x)
    torch.manual_seed(3)
    keep = keep_mask(x.shape, 0.25, x.device)
    torch.testing.assert_close(y, x * keep / 0.75)
    assert abs(keep.float().mean().item() - 0.75) < 0.03
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, keep / 0.75)
    assert drop.eval()(x) is x
