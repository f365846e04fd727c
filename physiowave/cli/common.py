"""Flags shared by the subcommands that run a checkpoint on recordings, their checks, and how they become a
TrainedModel."""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ..inference import OVERRIDES, Skipped, TrainedModel, load_trained
from ..preprocess.params import SignalParams, channel_list

__all__ = ["INPUTS_HELP", "add_model_arguments", "add_preparation_arguments", "trained_from_args", "channel_list",
           "check_apart", "check_positive", "check_preparation", "prepare_output", "report_skipped"]

INPUTS_HELP = "WFDB/Challenge records (.hea), CSV files, preprocessed HDF5 files or folders of them"


def add_model_arguments(p: argparse.ArgumentParser, inputs: str | None = None) -> None:
    """The checkpoint, ``--device`` and, when ``inputs`` (their help text) is given, the INPUT... positionals."""
    p.add_argument("checkpoint",
                   help="PhysioWave checkpoint (.pth: ours or an original ecg.pth/emg.pth/best_model.pth), "
                        "a folder written by save_pretrained or convert, or a Hub repo id")
    if inputs is not None:
        p.add_argument("inputs", nargs="+", metavar="INPUT", help=inputs)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda when available, else cpu)")


def add_preparation_arguments(p: argparse.ArgumentParser) -> None:
    """Overrides of the preprocessing the checkpoint records (needed for original files, which record none): the
    model rate, CSV rate and input length, and every signal/window flag of preprocessing (default: recorded)."""
    g = p.add_argument_group("input preparation (default: as recorded in the checkpoint)")
    g.add_argument("--fs", type=float, default=None, help="model sampling rate in Hz: records are resampled to it")
    g.add_argument("--input_fs", type=float, default=None, help="sampling rate of CSV input in Hz (CSV has none)")
    SignalParams.add_arguments(p, overrides=True, group=g, skip=("target_fs",))  # --fs is the model's rate
    g.add_argument("--length", type=int, default=None, help="model input length (windows are centre-cropped/padded)")
    g.add_argument("--batch_size", type=int, default=64, help="windows per forward pass")


def check_positive(args: argparse.Namespace, integers: Iterable[str] = (), numbers: Iterable[str] = ()) -> None:
    """One-line ValueError naming the flag for a given value that is not a positive integer / finite number."""
    for k in integers:
        value = getattr(args, k, None)
        if value is not None and value < 1:
            raise ValueError(f"--{k} {value}: expected a positive integer")
    for k in numbers:
        value = getattr(args, k, None)
        if value is not None and not 0 < value < math.inf:
            raise ValueError(f"--{k} {value}: expected a positive number")


def check_preparation(args: argparse.Namespace) -> None:
    """Check the preparation flags before any work (one-line ValueError naming the flag)."""
    check_positive(args, integers=("length", "batch_size"), numbers=("fs", "input_fs"))
    given = {k: getattr(args, k, None) for k in SignalParams.names()}
    SignalParams().replace(**given).check()


def check_apart(output: str | Path, reads: Iterable[str | Path], flag: str = "-o") -> None:
    """One-line ValueError when the output is one of the files or folders the command reads, lies inside an input
    folder (a later run would read it as input) or is a folder holding an input (replacing it would delete it)."""
    out = Path(output).resolve()
    for source in reads:
        src = Path(source).resolve()
        if out == src:
            raise ValueError(f"{flag} {output}: is the input {source}; writing there would destroy it: "
                             "choose another name")
        if src.is_dir() and src in out.parents:
            raise ValueError(f"{flag} {output}: lies inside the input folder {source}, where a later run would read it "
                             "as input: write it elsewhere")
        if out in src.parents:
            raise ValueError(f"{flag} {output}: holds the input {source}; replacing the folder would delete it: "
                             "choose another folder")


def prepare_output(path: str | Path, suffixes: Iterable[str] | None = None, what: str = "",
                   reads: Iterable[str | Path] = ()) -> Path:
    """Check ``-o`` before any work: one of ``suffixes`` (lower case, with the dot; None: any), apart from every
    input in ``reads`` (:func:`check_apart`), its folder created (with parents) and writable. One-line errors;
    returns the path."""
    path = Path(path)
    check_apart(path, reads)
    if suffixes is not None and path.suffix.lower() not in (suffixes := tuple(suffixes)):
        raise ValueError(f"-o {path}: expected {what} ({', '.join(suffixes)})")
    if path.is_dir():
        raise ValueError(f"-o {path}: is a folder; expected a file name")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as err:
        reason = err.strerror or str(err)
        raise ValueError(f"-o {path}: cannot write to the folder {parent}: {reason}") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"-o {path}: the file exists and is not writable")
    return path


def trained_from_args(args: argparse.Namespace, quiet: bool = False) -> TrainedModel:
    """Load the checkpoint with the flags' overrides; report assumed values on stderr, naming the flags that set
    them (every one is a flag of the commands that prepare input)."""
    overrides = {k: getattr(args, k, None) for k in OVERRIDES if getattr(args, k, None) is not None}
    trained = load_trained(args.checkpoint, args.device, **overrides)
    if trained.assumed and not quiet:
        print(f"{args.checkpoint}: not recorded in the checkpoint, assumed: "
              + "; ".join(f"{k} = {v}" for k, v in trained.assumed.items())
              + f" (set with {', '.join(f'--{k}' for k in trained.assumed)})", file=sys.stderr)
    return trained


def report_skipped(skipped: Skipped) -> None:
    """One stderr line per skipped record (windows are named in the command's last line)."""
    for record, why in skipped.records:
        print(f"skipped {record}: {why}", file=sys.stderr)
