"""Release the PTB-XL-pretrained encoder of a protocol run (``python -m physiowave.benchmark ptbxl``) as a hub-style
folder: model.safetensors, config.json (architecture, input contract, recipe, data fingerprint), README.md.

    python benchmarks/release_ptbxl_encoder.py --run results/ptbxl --out weights/physiowave-ptbxl100-cpu

The checkpoint is ``RUN/pretrain/RECIPE/best_model.pth`` (the epoch with the lowest fold-9 masked-reconstruction
loss); the input contract is the protocol's: 100 Hz, the 12 standard leads, 2.5 s (250-sample) windows in mV as
stored (no filtering, no scaling before the model's own rms input norm). The folder is refused above ``--max_mb``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from physiowave.inference import save_trained
from physiowave.inference import load_trained
from physiowave.preprocess.cli import STANDARD_12_LEADS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="the protocol's --out folder")
    p.add_argument("--recipe", default="physiowave", help="which pretraining to release (default physiowave)")
    p.add_argument("--out", type=Path, required=True, help="the folder to write")
    p.add_argument("--max_mb", type=float, default=5.0, help="largest folder allowed, MB (default 5)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    ckpt = args.run / "pretrain" / args.recipe / "best_model.pth"
    for path in (ckpt, args.run / "protocol.json", args.run / "fingerprint.json"):
        if not path.is_file():
            sys.exit(f"error: {path}: not found; --run must be a finished `physiowave.benchmark ptbxl` run")
    protocol = json.loads((args.run / "protocol.json").read_text())
    fingerprint = json.loads((args.run / "fingerprint.json").read_text())["fingerprint"]
    budget = protocol["budget"]
    trained = load_trained(ckpt, device="cpu", fs=100.0, channels=list(STANDARD_12_LEADS), window=budget["crop"],
                           step=budget["eval_step"], length=budget["crop"], normalize="none")
    n_params = sum(p.numel() for p in trained.model.parameters())
    facts = {"recipe": args.recipe, "data_fingerprint": fingerprint, "budget": budget,
             "results": "benchmarks/results/ptbxl/results.json (the protocol run this encoder comes from)"}
    tmp = args.out.with_name(args.out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_trained(trained, tmp, overwrite=True, facts=facts,
                 training_data="PTB-XL 1.0 (Wagner et al. 2020, CC BY 4.0), the 100 Hz waveforms of the training "
                               "records of strat_fold 1-8 (records with a superdiagnostic statement), no labels; "
                               "fold 9 for the choice of epoch; fold 10 never seen",
                 protocol=f"python -m physiowave.benchmark ptbxl (CPU configuration), recipe {args.recipe}: masked "
                          f"reconstruction on random {budget['crop']}-sample crops, "
                          f"{budget['pretrain_epochs']} epochs, batch {budget['batch_size']}; {n_params:,} parameters")
    size = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file()) / 1e6
    if size > args.max_mb:
        shutil.rmtree(tmp)
        sys.exit(f"error: the folder would be {size:.1f} MB, above --max_mb {args.max_mb:g}")
    if args.out.exists():
        if not args.overwrite:
            shutil.rmtree(tmp)
            sys.exit(f"error: {args.out} exists; pass --overwrite")
        shutil.rmtree(args.out)
    tmp.rename(args.out)
    print(f"{args.out}: {n_params:,} parameters, {size:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
