"""Any folder of recordings (WFDB/Challenge records or CSV files, any channel count and rate: 1-lead ECG, PPG,
EMG ...) → HDF5 with the same core: ``python -m physiowave.preprocess folder --input DIR ...``.

Without ``--label_regex`` or ``--labels_csv`` the output is unlabelled pretraining data. With ``--label_regex`` the
class of each record is parsed from its path (e.g. ``--label_regex 'C_(\\d+)'`` on ``R_3_C_2_EMG.csv`` → class
``"2"``); with ``--labels_csv`` it comes from a table of record → label(s), as PhysioNet challenges ship
``REFERENCE.csv`` (a record with several labels makes the output multi-label). The files carry int64 class indices
(multi-label: float32 multi-hot rows) and a ``class_names`` attribute. ``--split TRAIN VAL [TEST]`` draws 2 or 3
splits.

Every WFDB record's rate is read from its own header when the records are listed; a rate that is not a number
(``5OO``) or outside 1..100000 Hz skips the record with the reason. Every record is resampled to ``--target_fs``,
else to the most common rate of the records (the highest of those tied), which is printed when the rates differ;
CSV files are all at ``--fs``."""
from __future__ import annotations

import argparse
import csv
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np

from .core import Item, RecordRef, Source
from .readers import ReadError, read_challenge, read_csv, read_header_fs, read_wfdb
from .signal import MAX_FS, MIN_FS, SignalError, check_fs

__all__ = ["FolderSource", "main", "read_label_table", "sort_class_names"]

_INT = re.compile(r"[+-]?\d+")


def sort_class_names(names: Iterable[str]) -> list[str]:
    """The unique names sorted: numerically when every name is an integer ("2" < "10"), else as strings."""
    uniq = set(names)
    if uniq and all(_INT.fullmatch(n) for n in uniq):
        return sorted(uniq, key=lambda n: (int(n), n))
    return sorted(uniq)


def _compile(flag: str, pattern: str | None) -> re.Pattern | None:
    try:
        return re.compile(pattern) if pattern else None
    except re.error as e:
        raise SystemExit(f"error: {flag} {pattern!r}: {e}") from None


def _class_list(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def read_label_table(path: str) -> list[tuple[int, str, list[str]]]:
    """A label table (comma, semicolon or tab separated) → its rows as (line number, record id, the non-empty label
    cells after the id); rows without an id are dropped. A missing or empty file is a one-line SystemExit."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise SystemExit(f"error: --labels_csv {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:  # one column, or nothing to tell the delimiter by
        dialect = csv.excel
    rows = [(n, cells[0].strip(), [c.strip() for c in cells[1:] if c.strip()])
            for n, cells in enumerate(csv.reader(text.splitlines(), dialect), 1) if cells and cells[0].strip()]
    if not rows:
        raise SystemExit(f"error: --labels_csv {path}: no rows (expected: record id, label[, label ...] per row)")
    return rows


class FolderSource(Source):
    """Every record under ``--input`` (recursively), split by record or by ``--group_regex``; labelled by
    ``--label_regex`` when given (class names then known after :meth:`list_records`)."""

    name = "folder"
    description = ("Convert a folder of WFDB/Challenge records or CSV files into HDF5 (train.h5 / val.h5 "
                   "[/ test.h5]): unlabelled pretraining data, or classification data labelled by --label_regex "
                   "(single-label) or --labels_csv (single- or multi-label).")
    splits = ("train", "val", "test")
    min_splits = 2      # --split takes TRAIN VAL [TEST]; with two fractions there is no test split
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
        g.add_argument("--label_regex", default=None,
                       help="regex on the record's path relative to --input (without extension) whose first group "
                            "(or whole match) is the record's class, e.g. 'C_(\\d+)'; records that do not match "
                            "are skipped; unset: no labels (pretraining data)")
        g.add_argument("--classes", type=_class_list, default=None, metavar="A,B,...",
                       help="with --label_regex or --labels_csv: the class names in label-index order; records of "
                            "other classes are skipped; unset: every class found, sorted (numerically when all are "
                            "integers)")
        g.add_argument("--labels_csv", default=None, metavar="PATH",
                       help="labels from a table, as PhysioNet challenges ship REFERENCE.csv: per row a record id (its "
                            "file name without extension, or its path relative to --input) then one or more labels; "
                            "a record may also repeat over rows. A first row that names no record is a header. A "
                            "record with several labels makes the output multi-label (multi-hot); records missing "
                            "from the table are skipped, rows naming no record are reported")

    def __init__(self, args: argparse.Namespace):
        super().__init__(args)
        if args.fs is not None and not MIN_FS <= args.fs <= MAX_FS:
            raise SystemExit(f"error: --fs {args.fs:g}: expected a sampling rate in Hz within {MIN_FS:g}..{MAX_FS:g}")
        if args.format == "csv" and not args.fs:
            raise SystemExit("error: --fs is required with --format csv (CSV files carry no sampling rate)")
        if args.format == "wfdb" and args.fs:
            raise SystemExit("error: --fs applies to --format csv only; WFDB headers carry the rate "
                             "(use --target_fs to resample)")
        self.group_re = _compile("--group_regex", args.group_regex)
        self.label_re = _compile("--label_regex", getattr(args, "label_regex", None))
        self.labels_csv = getattr(args, "labels_csv", None)
        if self.labels_csv and self.label_re is not None:
            raise SystemExit("error: --labels_csv and --label_regex both give labels: pass one of them")
        if self.labels_csv and not Path(self.labels_csv).is_file():
            raise SystemExit(f"error: --labels_csv {self.labels_csv}: no such file")
        classes = getattr(args, "classes", None)
        if classes is not None:
            if self.label_re is None and not self.labels_csv:
                raise SystemExit("error: --classes needs --label_regex or --labels_csv (what gives each record's "
                                 "class)")
            if not classes:
                raise SystemExit("error: --classes: expected comma-separated class names, got none")
            dup = sorted({c for c in classes if classes.count(c) > 1})
            if dup:
                raise SystemExit(f"error: --classes: {', '.join(dup)} listed more than once")
        split = getattr(args, "split", None) or self.defaults["split"]
        self.splits = type(self).splits[:len(split)]   # two fractions: train/val only, no test.h5
        self.rates: dict[str, float] = {}              # record id -> its header's rate (WFDB), set by list_records

    def default_output(self) -> Path:
        src = Path(self.args.input[0]).resolve()
        return src.parent / f"{src.name}_physiowave"

    def _files(self, root: Path) -> list[Path]:
        if root.is_file():
            return [root]
        if self.args.format == "wfdb":
            return sorted(root.rglob("*.hea"))
        table = Path(self.labels_csv).resolve() if self.labels_csv else None  # the label table is no recording
        return sorted(p for ext in ("*.csv", "*.tsv", "*.txt") for p in root.rglob(ext)
                      if not p.name.upper().startswith("README") and p.resolve() != table)

    @staticmethod
    def _match(regex: re.Pattern, rel: str) -> str | None:
        m = regex.search(rel)
        if m is None:
            return None
        return m.group(1) if m.groups() else m.group(0)

    def list_records(self) -> tuple[list[RecordRef], list[tuple[str, str]]]:
        """Every record; with ``--label_regex`` or ``--labels_csv`` also sets ``self.class_names`` and each ref's
        label (class index, or multi-hot row when a record has several labels)."""
        refs: list[RecordRef] = []
        skipped: list[tuple[str, str]] = []
        names: list[str | None] = []
        for root in map(Path, self.args.input):
            base = root if root.is_dir() else root.parent
            for path in self._files(root):
                rel = path.relative_to(base).with_suffix("").as_posix()
                group = rel
                if self.group_re is not None:
                    group = self._match(self.group_re, rel)
                    if group is None:
                        skipped.append((rel, f"--group_regex {self.args.group_regex!r} does not match"))
                        continue
                name = None
                if self.label_re is not None:
                    name = self._match(self.label_re, rel)
                    if not name:
                        what = "does not match" if name is None else "matches an empty class name"
                        skipped.append((rel, f"--label_regex {self.args.label_regex!r} {what}"))
                        continue
                if self.args.format == "wfdb":
                    try:
                        self.rates[rel] = check_fs(read_header_fs(path))
                    except (ReadError, SignalError) as e:
                        skipped.append((rel, str(e)))
                        continue
                refs.append(RecordRef(rel, group, str(path)))
                names.append(name)
        if self.labels_csv:
            return self._label_from_table(refs, skipped)
        if self.label_re is None:
            return refs, skipped
        classes = self.args.classes or sort_class_names(n for n in names if n is not None)
        index = {c: i for i, c in enumerate(classes)}
        kept = []
        for ref, name in zip(refs, names):
            if name not in index:
                skipped.append((ref.id, f"class {name!r} is not in --classes"))
                continue
            ref.label = index[name]
            kept.append(ref)
        self.class_names = list(classes)
        return kept, skipped

    def _label_from_table(self, refs: list[RecordRef], skipped: list[tuple[str, str]]
                          ) -> tuple[list[RecordRef], list[tuple[str, str]]]:
        """``refs`` labelled from ``--labels_csv`` (those it misses go to ``skipped``); rows naming no record
        are reported on stderr."""
        path = self.labels_csv
        by_id = {r.id: [r] for r in refs}
        by_stem: dict[str, list[RecordRef]] = {}
        for r in refs:
            by_stem.setdefault(r.id.rsplit("/", 1)[-1], []).append(r)

        def find(key: str) -> list[RecordRef]:
            key = key.replace("\\", "/")
            for k in (key, Path(key).with_suffix("").as_posix() if Path(key).suffix else key):
                if k in by_id or k in by_stem:
                    return by_id.get(k) or by_stem[k]
            return []

        rows = read_label_table(path)
        if not find(rows[0][1]):
            rows = rows[1:]  # a header row (e.g. Recording,First_label,...)
        labels: dict[str, list[str]] = {}
        unknown: list[str] = []
        for line, key, cells in rows:
            found = find(key)
            if len(found) > 1:
                raise SystemExit(f"error: --labels_csv {path} line {line}: {key!r} names {len(found)} records "
                                 f"({', '.join(r.id for r in found[:3])}): give their paths relative to --input")
            if not found:
                unknown.append(key)
                continue
            have = labels.setdefault(found[0].id, [])
            have += [c for c in cells if c not in have]
        if unknown:
            print(f"warning: --labels_csv {path}: {len(unknown)} row(s) name no record under --input (e.g. "
                  f"{', '.join(unknown[:5])}); they are ignored", file=sys.stderr)
        classes = self.args.classes or sort_class_names(c for have in labels.values() for c in have)
        index = {c: i for i, c in enumerate(classes)}
        kept, chosen = [], []
        for ref in refs:
            have = labels.get(ref.id)
            if have is None:
                skipped.append((ref.id, f"not in --labels_csv {Path(path).name}"))
            elif not have:
                skipped.append((ref.id, f"no label in --labels_csv {Path(path).name}"))
            elif not (known := [c for c in have if c in index]):
                skipped.append((ref.id, f"class {', '.join(have)} is not in --classes"))
            else:
                kept.append(ref)
                chosen.append(known)
        self.class_names = list(classes)
        self.multilabel = any(len(c) > 1 for c in chosen)
        for ref, known in zip(kept, chosen):
            if self.multilabel:
                ref.label = np.zeros(len(classes), dtype=np.float32)
                ref.label[[index[c] for c in known]] = 1.0
            else:
                ref.label = index[known[0]]
        if self.multilabel:
            several = sum(len(c) > 1 for c in chosen)
            print(f"note: --labels_csv {path}: {several} record(s) have several labels, so the labels are "
                  f"multi-label (multi-hot over {len(classes)} classes)", file=sys.stderr)
        return kept, skipped

    def output_rate(self, refs: list[RecordRef]) -> float | None:
        """``--target_fs``; else ``--fs`` (CSV); else the most common header rate among ``refs`` (the highest of
        those tied), printed with every rate found when they differ."""
        if self.signal.target_fs:
            return self.signal.target_fs
        if self.args.format == "csv":
            return self.args.fs
        counts = Counter(self.rates[ref.id] for ref in refs)
        if not counts:
            return None
        rate = max(counts, key=lambda fs: (counts[fs], fs))
        if len(counts) > 1:
            found = ", ".join(f"{fs:g} Hz ({n} record{'s' * (n != 1)})" for fs, n in sorted(counts.items()))
            print(f"note: the records are sampled at {found}: every record is resampled to {rate:g} Hz, the most "
                  "common rate (--target_fs sets another)", file=sys.stderr)
        return rate

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
