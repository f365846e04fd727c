"""Command-line flags shared by every preprocessing script, and ``main_for(SourceClass)`` that runs one."""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from .core import Source, reason_kind, run
from .signal import NORMALIZATIONS

__all__ = ["build_parser", "parse_args", "main_for", "STANDARD_12_LEADS"]

STANDARD_12_LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def _channel_list(text: str) -> list[str]:
    return [c for c in text.replace(" ", ",").split(",") if c]


def _split_arity(source_cls: type[Source]) -> tuple[int, int]:
    """(most, fewest) fractions ``--split`` takes: one per split, or down to ``source_cls.min_splits``."""
    n_max = len(source_cls.splits)
    return n_max, max(1, min(n_max, getattr(source_cls, "min_splits", n_max)))


def build_parser(source_cls: type[Source], prog: str | None = None) -> argparse.ArgumentParser:
    """Parser with the common flags, the data set's own flags and its defaults."""
    p = argparse.ArgumentParser(prog=prog, description=source_cls.description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    io = p.add_argument_group("input / output")
    io.add_argument("--input", nargs="+", required=True, metavar="PATH", help="data set folder(s) as downloaded")
    io.add_argument("--output", default=None, metavar="DIR",
                    help="output folder (default: the data set's usual place, see the README)")
    io.add_argument("--workers", type=int, default=1, help="worker processes reading and processing records")
    io.add_argument("--limit", type=int, default=0, help="process only the first N records (0: all)")
    io.add_argument("--resume", action="store_true",
                    help="continue an interrupted run from its last checkpoint (same command and flags)")
    io.add_argument("--checkpoint_s", type=float, default=60.0,
                    help="seconds between checkpoints that --resume continues from")
    sig = p.add_argument_group("signal")
    sig.add_argument("--channels", type=_channel_list, default=None,
                     help="channels to keep, in this order: names (case-insensitive) or indices, comma-separated")
    sig.add_argument("--target_fs", type=float, default=None, help="resample to this rate in Hz (polyphase)")
    sig.add_argument("--bandpass", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                     help="zero-phase Butterworth band-pass in Hz before resampling (HI >= fs/2: high-pass)")
    sig.add_argument("--notch", type=float, default=None, choices=[50.0, 60.0], help="mains notch filter in Hz")
    sig.add_argument("--max_nan_gap", type=float, default=0.1,
                     help="interpolate NaN runs up to this many seconds; skip records with longer ones")
    sig.add_argument("--normalize", default="zscore", choices=NORMALIZATIONS, help="per-channel normalisation")
    sig.add_argument("--norm_scope", default="window", choices=["window", "record"],
                     help="statistics over each window or over the whole record (real samples only)")
    win = p.add_argument_group("windows")
    win.add_argument("--window", type=int, default=2048, help="window length in samples (at the output rate)")
    win.add_argument("--step", type=int, default=1024, help="hop between window starts")
    win.add_argument("--tail", default="pad", choices=["pad", "drop"],
                     help="zero-pad the windows that run past the end, or drop them")
    win.add_argument("--min_real", type=float, default=0.5,
                     help="a padded window is kept when at least this fraction of it is real signal")
    spl = p.add_argument_group("splits")
    if source_cls.drawn_splits and len(source_cls.splits) > 1:
        n_max, n_min = _split_arity(source_cls)
        if n_min == n_max:
            spl.add_argument("--split", type=float, nargs=n_max, default=None,
                             metavar=tuple(s.upper() for s in source_cls.splits),
                             help=f"fractions of groups (patients/subjects) for {'/'.join(source_cls.splits)}")
        else:  # e.g. TRAIN VAL [TEST]: the splits past the fractions given get nothing (no file)
            names = "/".join(source_cls.splits[:n_min]) + "".join(f"[/{s}]" for s in source_cls.splits[n_min:])
            spl.add_argument("--split", type=float, nargs="+", default=None, metavar="FRAC",
                             help=f"{n_min} to {n_max} fractions of groups (patients/subjects) for {names}; "
                                  "splits without a fraction are not written")
    spl.add_argument("--seed", type=int, default=42, help="seed of the split")
    source_cls.add_arguments(p)
    p.set_defaults(**source_cls.defaults)
    return p


def parse_args(source_cls: type[Source], argv: list[str] | None = None,
               prog: str | None = None) -> argparse.Namespace:
    """Parse and check the flags; errors are one line naming the flag."""
    p = build_parser(source_cls, prog)
    args = p.parse_args(argv)
    for path in args.input:
        if not Path(path).exists():
            p.error(f"--input {path}: no such file or folder")
    if getattr(args, "split", None) is not None:
        n_max, n_min = _split_arity(source_cls)
        if not n_min <= len(args.split) <= n_max:
            names = " ".join(s.upper() for s in source_cls.splits[:n_min]) + "".join(
                f" [{s.upper()}]" for s in source_cls.splits[n_min:])
            p.error(f"--split {' '.join(map(str, args.split))}: expected {n_min}"
                    + (f" to {n_max}" if n_max > n_min else "") + f" fractions ({names})")
        if any(f < 0 for f in args.split) or abs(sum(args.split) - 1) > 1e-6:
            p.error(f"--split {' '.join(map(str, args.split))}: expected non-negative fractions summing to 1")
    if args.window <= 0 or args.step <= 0:
        p.error(f"--window {args.window} --step {args.step}: expected positive integers")
    if not 0 < args.min_real <= 1:
        p.error(f"--min_real {args.min_real}: expected a fraction in (0, 1]")
    if args.workers < 1:
        p.error(f"--workers {args.workers}: expected >= 1")
    if args.bandpass and not 0 <= args.bandpass[0] < args.bandpass[1]:
        p.error(f"--bandpass {args.bandpass[0]:g} {args.bandpass[1]:g}: expected 0 <= LO < HI")
    return args


def main_for(source_cls: type[Source], argv: list[str] | None = None, prog: str | None = None) -> int:
    """Parse flags, run the pipeline, print where everything went. Returns the exit code."""
    args = parse_args(source_cls, argv, prog)
    try:
        source = source_cls(args)
        summary = run(source)
    except OSError as e:
        print(f"error: cannot write the output: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except SystemExit as e:
        print(e.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    for split, path in summary.files.items():
        print(f"{split:>5}: {summary.records[split]:7d} records {summary.windows[split]:9d} windows -> {path}")
    n_skip = len(summary.skipped)
    print(f"skipped {n_skip} record(s)" + (f" (see {summary.output_dir / 'skipped.csv'})" if n_skip else ""))
    for reason, n in Counter(reason_kind(r) for _, r in summary.skipped).most_common(5):
        print(f"  {n:6d}  {reason}")
    print(f"metadata: {summary.output_dir / source.info_name}")
    return 0
