"""The ``physiowave`` command: ``info``, ``embed``, ``predict`` and ``plot`` on a checkpoint.

    physiowave info best_model.pth
    physiowave embed ecg.pth records/ -o embeddings.h5
    physiowave predict best_model.pth A0001.hea A0002.hea -o predictions.csv
    physiowave plot filters best_model.pth -o filters.png
"""
from __future__ import annotations

import argparse
import sys

from . import embed, info, plot, predict

__all__ = ["main", "build_parser"]

_COMMANDS = {"info": info, "embed": embed, "predict": predict, "plot": plot}


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="physiowave", description="Use PhysioWave checkpoints on recordings.")
    parser.add_argument("--version", action="version", version=f"physiowave {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in _COMMANDS.items():
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``physiowave`` console script; bad input is a one-line error and exit status 1."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
