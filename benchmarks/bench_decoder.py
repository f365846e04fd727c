"""FLOPs of one pretraining step: the original MLP head (BERT-style) vs the MAE-style transformer decoder.

One step = ``forward_pretrain`` + ``masked_mse_loss`` + backward, counted with
``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions, attention; no timing). Results are
printed as a Markdown table and written to ``benchmarks/results/decoder_flops.json``.

    python benchmarks/bench_decoder.py
    python benchmarks/bench_decoder.py --only emg --mask-ratio 0.5

On CPU, ``F.scaled_dot_product_attention`` runs ``aten._scaled_dot_product_flash_attention_for_cpu``, which
FlopCounterMode has no formula for (it counts 0); this script registers one (the formula torch uses for
the CUDA kernels) and checks the attention FLOPs it counts against an analytic 4·B·H·Nq·Nk·hd per forward.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import physiowave  # noqa: E402
from physiowave.models.masking import masked_mse_loss  # noqa: E402
from machine import describe  # noqa: E402

# preset → input [B, C, T]
WORKLOADS = {"ecg": (2, 12, 2048), "emg": (2, 8, 1024)}
DECODERS = ("mlp", "transformer")
_SDPA_CPU = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_SDPA_CPU_BACKWARD = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward


def _sdpa_forward_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """QKᵀ and A·V: 2·B·H·Nq·Nk·(d + dv). Arguments arrive as shapes."""
    B, H, Nq, d = query
    return 2 * B * H * Nq * key[-2] * (d + value[-1])


def _sdpa_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    """dV, dP, dQ, dK: twice the forward (the recomputed scores are not counted, as in torch's CUDA formulas)."""
    return 2 * _sdpa_forward_flops(query, key, value)


CPU_ATTENTION = {_SDPA_CPU: _sdpa_forward_flops, _SDPA_CPU_BACKWARD: _sdpa_backward_flops}


def sdpa_counted_by_default() -> bool:
    """Does a plain FlopCounterMode count a CPU ``scaled_dot_product_attention``?"""
    q = torch.randn(1, 2, 8, 4)
    with FlopCounterMode(display=False) as counter:
        F.scaled_dot_product_attention(q, q, q)
    return counter.get_total_flops() > 0


def analytic_attention_flops(model: physiowave.PhysioWave, batch: int, length: int, mask_ratio: float) -> int:
    """Attention score and A·V FLOPs (forward 4·B·H·Nq·Nk·hd, backward 2×) of one step: encoder, decoder, front-end."""
    cfg = model.config
    N = model.num_tokens(length)
    D = cfg["embed_dim"]
    forward = 0
    if cfg["decoder"] == "transformer":
        visible = N - int(N * mask_ratio)
        forward += cfg["depth"] * 4 * batch * visible * visible * D  # H·hd = D
        dec = model.task_heads["pretrain"]
        forward += len(dec.transformer.blocks) * 4 * batch * N * N * dec.embed.out_features
    else:
        forward += cfg["depth"] * 4 * batch * N * N * D
    E = 2 * cfg["in_channels"]  # cross-scale attention at level ≥ 1: T queries, level·T keys, width E
    forward += sum(4 * batch * length * level * length * E for level in range(1, cfg["max_level"]))
    return 3 * forward


def count_step(preset: str, decoder: str, mask_ratio: float, masking: str) -> dict:
    """FLOPs of one training step of ``preset`` with ``decoder`` → a result row."""
    torch.manual_seed(0)
    model = physiowave.create_model(preset, decoder=decoder).train()
    B, C, T = WORKLOADS[preset]
    x = torch.randn(B, C, T)
    generator = torch.Generator().manual_seed(0)
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
        pred, target, mask = model.forward_pretrain(x, mask_ratio, masking, generator=generator)
        masked_mse_loss(pred, target, mask).backward()
    per_op = counter.get_flop_counts()["Global"]
    attention = sum(v for op, v in per_op.items() if op in (_SDPA_CPU, _SDPA_CPU_BACKWARD))
    expected = analytic_attention_flops(model, B, T, mask_ratio)
    return dict(
        flops=counter.get_total_flops(), attention_flops=attention, attention_flops_analytic=expected,
        decoder_params=sum(p.numel() for p in model.task_heads["pretrain"].parameters()),
        tokens=model.num_tokens(T),
        visible_tokens=int((~mask[0]).sum()) if decoder == "transformer" else model.num_tokens(T),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(WORKLOADS), help="one preset instead of all")
    parser.add_argument("--mask-ratio", type=float, default=0.7)
    parser.add_argument("--masking", default="frequency_guided")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "decoder_flops.json")
    args = parser.parse_args()

    results: dict = {"mask_ratio": args.mask_ratio, "masking": args.masking, "machine": describe(),
                     "sdpa_counted_by_default_on_cpu": sdpa_counted_by_default(), "presets": {}}
    for preset in [args.only] if args.only else list(WORKLOADS):
        rows = {dec: count_step(preset, dec, args.mask_ratio, args.masking) for dec in DECODERS}
        for dec, row in rows.items():
            if row["attention_flops"] != row["attention_flops_analytic"]:
                raise RuntimeError(f"{preset}/{dec}: counted attention FLOPs {row['attention_flops']} "
                                   f"differ from the analytic {row['attention_flops_analytic']}")
        results["presets"][preset] = dict(
            input=list(WORKLOADS[preset]), flops_mlp=rows["mlp"]["flops"],
            flops_transformer=rows["transformer"]["flops"], ratio=rows["mlp"]["flops"] / rows["transformer"]["flops"],
            params_mlp_decoder=rows["mlp"]["decoder_params"],
            params_transformer_decoder=rows["transformer"]["decoder_params"], details=rows,
        )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"mask ratio {args.mask_ratio}, {args.masking} masking; one training step (forward + backward), GFLOPs")
    print("| preset | input | mlp | transformer | ratio | attention mlp / transformer | decoder params mlp / "
          "transformer |")
    print("|---|---|---|---|---|---|---|")
    for preset, r in results["presets"].items():
        d = r["details"]
        print(f"| {preset} | {r['input']} | {r['flops_mlp'] / 1e9:.1f} | {r['flops_transformer'] / 1e9:.1f} | "
              f"{r['ratio']:.2f}× | {d['mlp']['attention_flops'] / 1e9:.1f} / "
              f"{d['transformer']['attention_flops'] / 1e9:.1f} | {r['params_mlp_decoder']:,} / "
              f"{r['params_transformer_decoder']:,} |")
    print(f"SDPA counted by a plain FlopCounterMode on CPU: {results['sdpa_counted_by_default_on_cpu']} "
          "(a formula is registered here; attention matches 4·B·H·Nq·Nk·hd per forward, 2× in backward)")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
