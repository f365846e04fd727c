"""Command-line flags shared by every preprocessing script, and ``main_for(SourceClass)`` that runs one."""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from ..contract import INFO_FILE
from ..flags import DefaultsFormatter
from .core import Source, Terminated, reason_kind, run
from .params import SignalParams

__all__ = ["build_parser", "parse_args", "main_for", "STANDARD_12_LEADS"]

STANDARD_12_LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def _split_arity(source_cls: type[Source]) -> tuple[int, int]:
    """(most, fewest) fractions ``--split`` takes: one per split, or down to ``source_cls.min_splits``."""
    n_max = len(source_cls.splits)
    return n_max, max(1, min(n_max, getattr(source_cls, "min_splits", n_max)))


def build_parser(source_cls: type[Source], prog: str | None = None) -> argparse.ArgumentParser:
    """Parser with the common flags, the data set's own flags and its defaults."""
    p = argparse.ArgumentParser(prog=prog, description=source_cls.description,
                                formatter_class=DefaultsFormatter)
    io = p.add_argument_group("input / output")
    io.add_argument("--input", nargs="+", required=True, metavar="PATH", help="data set folder(s) as downloaded")
    io.add_argument("--output", default=None, metavar="DIR",
                    help="output folder (default: the data set's usual place, listed in docs/datasets.md)")
    io.add_argument("--workers", type=int, default=1, help="worker processes reading and processing records")
    io.add_argument("--limit", type=int, default=0, help="process only the first N records (0: all)")
    io.add_argument("--resume", action="store_true",
                    help="continue an interrupted run from its last checkpoint (same command and flags)")
    io.add_argument("--checkpoint_s", type=float, default=60.0,
                    help="seconds between checkpoints that --resume continues from")
    SignalParams.add_arguments(p)  # the "signal" and "windows" groups
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
    try:
        SignalParams.from_namespace(args).check()
    except ValueError as err:
        p.error(str(err))
    if args.workers < 1:
        p.error(f"--workers {args.workers}: expected >= 1")
    if args.limit < 0:
        p.error(f"--limit {args.limit}: expected the number of records to process, >= 0 (0: all)")
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
    except Terminated:
        return 143
    except KeyboardInterrupt:
        return 130
    for split, path in summary.files.items():
        print(f"{split:>5}: {summary.records[split]:7d} records {summary.windows[split]:9d} windows -> {path}")
    n_skip = len(summary.skipped)
    print(f"skipped {n_skip} record(s)" + (f" (see {summary.output_dir / 'skipped.csv'})" if n_skip else ""))
    for reason, n in Counter(reason_kind(r) for _, r in summary.skipped).most_common(5):
        print(f"  {n:6d}  {reason}")
    print(f"metadata: {summary.output_dir / INFO_FILE}")
    return 0
