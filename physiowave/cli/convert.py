"""``physiowave convert CKPT -o DIR``: a checkpoint → a shareable model folder (model.safetensors, config.json,
README.md), loadable with ``physiowave.from_pretrained(DIR)`` and usable by ``predict``/``embed``/``info``.

The folder records the input contract: the checkpoint's recorded preprocessing (our checkpoints), replaced by
the flags given. Original release files (ecg.pth, emg.pth) record no sampling rate: ``--fs`` is required for
them; their other preparation values are the preprocessing defaults unless given, and the folder lists them as
assumed. The folder is written under a temporary name and renamed; a non-empty -o is refused without --overwrite.
"""
from __future__ import annotations

import argparse
import sys

from .. import hub
from ..inference import OVERRIDES, load_trained, save_trained
from ..preprocess.params import SignalParams
from .common import channel_list, check_apart, check_positive

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="write a checkpoint as a shareable model folder (safetensors + config + card)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint",
                   help="PhysioWave checkpoint (.pth): ours or an original ecg.pth/emg.pth/best_model.pth")
    p.add_argument("-o", "--output", required=True, help="folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
    g = p.add_argument_group("input contract (default: as recorded in the checkpoint)")
    g.add_argument("--fs", type=float, default=None,
                   help="sampling rate the model was trained at, Hz (required for original checkpoints)")
    g.add_argument("--input_fs", type=float, default=None, help="sampling rate of CSV input in Hz")
    SignalParams.add_arguments(p, overrides=True, group=g, skip=("target_fs",))
    g.add_argument("--length", type=int, default=None, help="model input length (windows are centre-cropped/padded)")
    g.add_argument("--class_names", type=channel_list, default=None, help="class names, comma-separated, in head order")
    g.add_argument("--task", choices=("single", "multi"), default=None, help="single- or multi-label classification")
    d = p.add_argument_group("model card")
    d.add_argument("--training_data", default=None, help="what the model was trained on (free text)")
    d.add_argument("--protocol", default=None, help="how it was trained and evaluated (free text)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_positive(args, integers=("length",), numbers=("fs", "input_fs"))
    SignalParams().replace(**{k: getattr(args, k, None) for k in SignalParams.names()}).check()
    check_apart(args.output, [args.checkpoint])
    out = hub.check_target(args.output, args.overwrite)
    overrides = {k: getattr(args, k) for k in (*OVERRIDES, "task", "class_names") if getattr(args, k, None) is not None}
    trained = load_trained(args.checkpoint, "cpu", fusion=True, **overrides)
    if trained.preparation is not None and trained.preparation.fs is None:
        raise ValueError(f"{args.checkpoint}: records no sampling rate (an original release file): pass --fs HZ, "
                         "the rate the model was trained at")
    if trained.assumed:
        print(f"{args.checkpoint}: not recorded in the checkpoint, written to the folder as assumed: "
              + "; ".join(f"{k} = {v}" for k, v in trained.assumed.items())
              + f" (set with {', '.join(f'--{k}' for k in trained.assumed)})", file=sys.stderr)
    save_trained(trained, out, overwrite=args.overwrite, training_data=args.training_data, protocol=args.protocol)
    print(f"{args.checkpoint} -> {out}/ ({hub.WEIGHTS}, {hub.CONFIG}, {hub.CARD})")
    return 0
