"""The ``physiowave`` command: ``info``, ``embed``, ``predict`` and ``plot`` on a checkpoint.

    physiowave info best_model.pth
    physiowave embed ecg.pth records/ -o embeddings.h5
    physiowave predict best_model.pth A0001.hea A0002.hea -o predictions.csv
    physiowave plot filters best_model.pth -o filters.png
    physiowave export best_model.pth -o model.onnx
    physiowave convert ecg.pth --fs 500 -o ecg_model/
"""
from __future__ import annotations

import argparse
import sys

from . import convert, embed, export, info, plot, predict

__all__ = ["main", "build_parser"]

_COMMANDS = {"info": info, "embed": embed, "predict": predict, "plot": plot, "export": export, "convert": convert}


class _Parser(argparse.ArgumentParser):
    """argparse with the command's error convention: one line, exit status 1 (subcommands inherit it)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(1, f"error: {self.prog}: {' '.join(message.split())} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(prog="physiowave", description="Use PhysioWave checkpoints on recordings.")
    parser.add_argument("--version", action="version", version=f"physiowave {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``physiowave`` console script: every error is one line on stderr and exit status 1
    (flag errors included; Ctrl-C: 130)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, --version (0) and flag errors (1)
        return exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except Exception as err:  # anything else (a bug, a library's own exception type) is still one line
        print(f"error: {type(err).__name__}: {' '.join(str(err).split())}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
