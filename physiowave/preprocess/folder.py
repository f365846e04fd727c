"""Any folder of recordings (WFDB/Challenge records or CSV files, any channel count and rate: 1-lead ECG, PPG,
EMG ...) → pretraining HDF5 with the same core: ``python -m physiowave.preprocess folder --input DIR ...``."""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Iterable

from .core import Item, RecordRef, Source
from .readers import read_challenge, read_csv, read_wfdb

__all__ = ["FolderSource", "main"]


class FolderSource(Source):
    """Every record under ``--input`` (recursively), split into train/val by record or by ``--group_regex``."""

    name = "folder"
    description = ("Convert a folder of WFDB/Challenge records or CSV files into pretraining HDF5 "
                   "(train.h5 / val.h5, no labels).")
    splits = ("train", "val")
    defaults = {"split": [0.9, 0.1]}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("folder")
        g.add_argument("--format", required=True, choices=["wfdb", "csv"],
                       help="wfdb: *.hea records (.dat or Challenge .mat); csv: *.csv/*.tsv/*.txt, rows = time")
        g.add_argument("--fs", type=float, default=None, help="sampling rate of CSV files in Hz (required for csv)")
        g.add_argument("--group_regex", default=None,
                       help="regex on the record's path relative to --input whose first group names the subject "
                            "(records of one subject stay in one split); default: each record is its own group")

    def __init__(self, args: argparse.Namespace):
        super().__init__(args)
        if args.format == "csv" and not args.fs:
            raise SystemExit("error: --fs is required with --format csv (CSV files carry no sampling rate)")
        if args.format == "wfdb" and args.fs:
            raise SystemExit("error: --fs applies to --format csv only; WFDB headers carry the rate "
                             "(use --target_fs to resample)")
        try:
            self.group_re = re.compile(args.group_regex) if args.group_regex else None
        except re.error as e:
            raise SystemExit(f"error: --group_regex {args.group_regex!r}: {e}")

    def default_output(self) -> Path:
        src = Path(self.args.input[0]).resolve()
        return src.parent / f"{src.name}_physiowave"

    def _files(self, root: Path) -> list[Path]:
        if root.is_file():
            return [root]
        if self.args.format == "wfdb":
            return sorted(root.rglob("*.hea"))
        return sorted(p for ext in ("*.csv", "*.tsv", "*.txt") for p in root.rglob(ext)
                      if not p.name.upper().startswith("README"))

    def list_records(self) -> tuple[list[RecordRef], list[tuple[str, str]]]:
        refs, skipped = [], []
        for root in map(Path, self.args.input):
            base = root if root.is_dir() else root.parent
            for path in self._files(root):
                rel = path.relative_to(base).with_suffix("").as_posix()
                group = rel
                if self.group_re is not None:
                    m = self.group_re.search(rel)
                    if m is None:
                        skipped.append((rel, f"--group_regex {self.args.group_regex!r} does not match"))
                        continue
                    group = m.group(1) if m.groups() else m.group(0)
                refs.append(RecordRef(rel, group, str(path)))
        return refs, skipped

    def load(self, ref: RecordRef) -> Iterable[Item]:
        path = Path(ref.source)
        if self.args.format == "csv":
            rec = read_csv(path, self.args.fs)
        elif path.with_suffix(".mat").exists() or path.with_suffix(".MAT").exists():
            rec = read_challenge(path)
        else:
            rec = read_wfdb(path)
        yield Item(ref.id, rec)


def main(argv: list[str] | None = None) -> int:
    from .cli import main_for
    return main_for(FolderSource, argv, prog="python -m physiowave.preprocess folder")
