"""MIMIC-IV-ECG (about 800,000 12-lead 10 s ECGs, WFDB, 500 Hz) → unlabeled pretraining HDF5
``processed_pretrain/mimic_pretrain_train.h5`` / ``mimic_pretrain_val.h5`` (85/15 by subject, seeded).

Records come from ``record_list.csv`` (column ``path``, relative to the root, no extension; ``subject_id``),
read row by row so that only a small reference per record is held; without the CSV, ``files/`` is walked for
``*.hea`` (the subject is the ``pNNNNNNNN`` folder above the study folder).

Deliberate differences from the original ``ECG/mimic_pretrain.py``:
- split by subject (``subject_id``): the original split records, so one patient's ECGs leaked into train and val.
- leads are reordered by name to the standard order I, II, III, aVR, aVL, aVF, V1-V6: MIMIC stores aVF before
  aVL, so the original's file order put aVF in the aVL slot relative to PTB-XL and CPSC.
- tail: the original kept every window starting below L (5 for L=5000, the last with 904 real samples); ours uses
  the core's rule with ``--min_real 0.5`` (4 windows); ``--min_real 0.4`` gives the original count.
- z-score statistics use real samples only (the original included the padding zeros).
- NaN: the original set NaN to 0; ours interpolates runs up to ``--max_nan_gap`` s and skips records with longer
  ones (listed in ``skipped.csv``).
- the walk without ``record_list.csv`` looks for ``.hea`` headers (the original looked for ``.dat``).
"""
from __future__ import annotations

import argparse
import csv
import os
import re
from pathlib import Path
from typing import Iterable, Iterator

from .cli import STANDARD_12_LEADS, main_for
from .core import Item, RecordRef, Source
from .readers import read_wfdb

__all__ = ["MIMICSource", "main"]

_RECORD_LIST = "record_list.csv"
_SUBJECT_DIR = re.compile(r"^p(\d+)$")


def _record_path(text: str) -> str:
    """A ``path`` cell → the record path relative to the root, without extension, with forward slashes."""
    p = text.strip().replace("\\", "/").lstrip("/")
    for ext in (".hea", ".dat"):
        if p.endswith(ext):
            p = p[:-len(ext)]
    return p


def _subject_from_path(rel: str) -> str | None:
    """Subject id from ``files/pXXXX/pNNNNNNNN/sSSSSSSSS/SSSSSSSS``: the ``p`` folder above the study folder."""
    parts = rel.split("/")
    if len(parts) >= 3:
        m = _SUBJECT_DIR.match(parts[-3])
        if m:
            return m.group(1)
    return None


class MIMICSource(Source):
    """MIMIC-IV-ECG records from ``record_list.csv`` (or a walk of ``files/``), no labels."""

    name = "mimic"
    description = ("MIMIC-IV-ECG → unlabeled pretraining HDF5 (mimic_pretrain_train.h5 / mimic_pretrain_val.h5, "
                   "split 85/15 by subject), 12 leads in the standard order.")
    splits = ("train", "val")
    class_names = None
    nominal_fs = 500.0  # records at other rates are resampled to it (or to --target_fs)
    defaults = {"split": [0.85, 0.15], "window": 2048, "step": 1024, "normalize": "zscore", "norm_scope": "window",
                "channels": STANDARD_12_LEADS}

    def __init__(self, args: argparse.Namespace):
        super().__init__(args)
        if len(args.input) != 1:
            raise SystemExit(f"error: --input: expected one MIMIC-IV-ECG folder, got {len(args.input)} paths")
        path = Path(args.input[0])
        self.root = path.parent if path.is_file() else path  # the record list itself may be given

    def default_output(self) -> Path:
        return self.root / "processed_pretrain"

    def output_files(self) -> dict[str, str]:
        return {s: f"mimic_pretrain_{s}.h5" for s in self.splits}

    def list_records(self) -> tuple[list[RecordRef], list[tuple[str, str]]]:
        refs: list[RecordRef] = []
        skipped: list[tuple[str, str]] = []
        subjects: dict[str, str] = {}  # one str object per subject, shared by its records' refs
        listing = self.root / _RECORD_LIST
        if listing.is_file():
            rows: Iterator[tuple[str, str | None]] = self._csv_rows(listing, skipped)
        elif (self.root / "files").is_dir():
            rows = self._walk(self.root / "files")
        else:
            raise SystemExit(f"error: --input {self.args.input[0]}: neither {_RECORD_LIST} nor a files/ folder; "
                             "expected the MIMIC-IV-ECG root")
        for rel, subject in rows:
            subject = subject or _subject_from_path(rel)
            if subject is None:
                skipped.append((rel, "no subject_id and no pNNNNNNNN folder above the study folder"))
                continue
            subject = subjects.setdefault(subject, subject)
            refs.append(RecordRef(rel, subject, rel))
        return refs, skipped

    @staticmethod
    def _csv_rows(path: Path, skipped: list[tuple[str, str]]) -> Iterator[tuple[str, str | None]]:
        """(record path, subject_id or None) per row of ``record_list.csv``, streamed."""
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            if not header:
                raise SystemExit(f"error: {path}: empty file; expected a header with a 'path' column")
            i_path = header.index("path") if "path" in header else 0  # the original fell back to column 0
            i_subj = header.index("subject_id") if "subject_id" in header else None
            for line_no, row in enumerate(reader, start=2):
                if len(row) <= i_path or not row[i_path].strip():
                    skipped.append((f"{_RECORD_LIST} line {line_no}", "empty path"))
                    continue
                subject = row[i_subj].strip() if i_subj is not None and len(row) > i_subj else ""
                yield _record_path(row[i_path]), subject or None

    def _walk(self, files: Path) -> Iterator[tuple[str, str | None]]:
        """(record path, None) for every ``*.hea`` under ``files/``, in sorted order."""
        for dirpath, dirnames, filenames in os.walk(files):
            dirnames.sort()
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in sorted(filenames):
                if name.endswith(".hea"):
                    yield f"{rel_dir}/{name[:-4]}", None

    def load(self, ref: RecordRef) -> Iterable[Item]:
        yield Item(ref.id, read_wfdb(self.root / ref.source))


def main(argv: list[str] | None = None) -> int:
    """``python ECG/mimic_pretrain.py --input /path/mimic-iv-ecg [flags]``; returns the exit code."""
    return main_for(MIMICSource, argv, prog="ECG/mimic_pretrain.py")
