"""Flags shared by the subcommands that run a checkpoint on recordings, and how they become a TrainedModel."""
from __future__ import annotations

import argparse
import sys

from ..inference import TrainedModel, load_trained

__all__ = ["INPUTS_HELP", "add_model_arguments", "add_preparation_arguments", "trained_from_args", "channel_list"]


def channel_list(text: str) -> list[str]:
    return [c for c in text.replace(" ", ",").split(",") if c]


INPUTS_HELP = "WFDB/Challenge records (.hea), CSV files, preprocessed HDF5 files or folders of them"


def add_model_arguments(p: argparse.ArgumentParser, inputs: str | None = None) -> None:
    """The checkpoint, ``--device`` and, when ``inputs`` (their help text) is given, the INPUT... positionals."""
    p.add_argument("checkpoint", help="PhysioWave checkpoint (.pth): ours or an original ecg.pth/emg.pth/best_model.pth")
    if inputs is not None:
        p.add_argument("inputs", nargs="+", metavar="INPUT", help=inputs)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda when available, else cpu)")


def add_preparation_arguments(p: argparse.ArgumentParser) -> None:
    """Overrides of the preprocessing the checkpoint records (needed for original files, which record none)."""
    g = p.add_argument_group("input preparation (default: as recorded in the checkpoint)")
    g.add_argument("--fs", type=float, default=None, help="model sampling rate in Hz: records are resampled to it")
    g.add_argument("--input_fs", type=float, default=None, help="sampling rate of CSV input in Hz (CSV has none)")
    g.add_argument("--window", type=int, default=None, help="window length in samples at --fs")
    g.add_argument("--step", type=int, default=None, help="hop between windows in samples")
    g.add_argument("--length", type=int, default=None, help="model input length (windows are centre-cropped/padded)")
    g.add_argument("--channels", type=channel_list, default=None, help="channels in model order: names or indices")
    g.add_argument("--normalize", default=None, choices=["zscore", "minmax", "maxabs", "none"],
                   help="per-channel normalisation of each window (or record, --norm_scope)")
    g.add_argument("--norm_scope", default=None, choices=["window", "record"])
    g.add_argument("--batch_size", type=int, default=64, help="windows per forward pass")


def trained_from_args(args: argparse.Namespace, quiet: bool = False) -> TrainedModel:
    """Load the checkpoint with the flags' overrides; report assumed values on stderr."""
    keys = ("fs", "input_fs", "window", "step", "length", "channels", "normalize", "norm_scope")
    overrides = {k: getattr(args, k, None) for k in keys if getattr(args, k, None) is not None}
    for k in ("window", "step", "length", "batch_size"):
        value = getattr(args, k, None)
        if value is not None and value < 1:
            raise ValueError(f"--{k} {value}: expected a positive integer")
    trained = load_trained(args.checkpoint, args.device, **overrides)
    if trained.assumed and not quiet:
        print(f"{args.checkpoint}: not recorded in the checkpoint, assumed: "
              + "; ".join(f"{k} = {v}" for k, v in trained.assumed.items()), file=sys.stderr)
    return trained
