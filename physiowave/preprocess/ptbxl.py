"""PTB-XL (21,799 12-lead 10 s ECGs, WFDB, 500 and 100 Hz) → ``train.h5`` / ``val.h5`` / ``test.h5`` with the 5
diagnostic superclasses NORM 0, MI 1, STTC 2, CD 3, HYP 4.

``--task single`` (default, the original rule): scp codes with likelihood >= ``--min_likelihood`` (80) that are
diagnostic in ``scp_statements.csv`` map to their ``diagnostic_class``; of several, the highest index wins
(HYP > CD > STTC > MI > NORM). ``--task multilabel``: the standard superdiagnostic benchmark, a multi-hot vector of
the superclasses of all diagnostic codes listed (likelihood ignored). Records without a superclass are rejected
(listed in ``skipped.csv``). Split: the official ``strat_fold`` (1-8 train, 9 val, 10 test; patient-disjoint).

Deliberate differences from the original ``ECG/ptbxl_finetune.py``:
- tail: the original added one zero-padded window at (L//step)*step (4096: 904 real samples of 5000) and min-max
  normalised it together with its zeros (a bug); ours uses the core's ``--tail pad --min_real 0.5`` (starts 0,
  1024, 2048, 3072) with statistics on real samples only, the padding staying 0.
- leads are picked by name in the standard order (``--channels``), not as "the first 12".
- ``--task multilabel`` and ``--rate 100`` are new; the original was single-label on the 500 Hz records only.
- rejected records are listed with their reason in ``skipped.csv`` instead of being dropped silently.
"""
from __future__ import annotations

import argparse
import ast
import csv
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .cli import STANDARD_12_LEADS, main_for
from .core import Item, RecordRef, Source
from .readers import read_wfdb

__all__ = ["PTBXLSource", "SUPERCLASSES", "read_scp_statements", "superclass_label", "main"]

SUPERCLASSES = ["NORM", "MI", "STTC", "CD", "HYP"]
_DATABASE = "ptbxl_database.csv"
_STATEMENTS = "scp_statements.csv"
_DB_COLUMNS = ("ecg_id", "patient_id", "scp_codes", "strat_fold", "filename_hr", "filename_lr")
_FOLD_SPLIT = {**{f: "train" for f in range(1, 9)}, 9: "val", 10: "test"}


@contextmanager
def _open_table(path: Path, required: tuple[str, ...]) -> Iterator[tuple[list[str], Iterator[list[str]]]]:
    """(header, row iterator) of a CSV file; SystemExit naming the file when it or a required column is missing."""
    if not path.is_file():
        raise SystemExit(f"error: {path}: not found; --input must be the PTB-XL folder holding "
                         f"{_DATABASE} and {_STATEMENTS}")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in required if c not in header]
        if missing:
            raise SystemExit(f"error: {path}: missing column(s) {', '.join(missing)}")
        yield header, reader


def read_scp_statements(path: str | Path) -> dict[str, str]:
    """``scp_statements.csv`` → {scp code: superclass} for the diagnostic rows (``diagnostic`` == 1) whose
    ``diagnostic_class`` is one of :data:`SUPERCLASSES`. The first (unnamed) column holds the code."""
    out = {}
    with _open_table(Path(path), ("diagnostic", "diagnostic_class")) as (header, rows):
        i_diag, i_cls = header.index("diagnostic"), header.index("diagnostic_class")
        for row in rows:
            if len(row) <= max(i_diag, i_cls) or not row[0].strip():
                continue
            try:
                diagnostic = float(row[i_diag]) == 1.0
            except ValueError:  # empty: not diagnostic
                diagnostic = False
            if diagnostic and row[i_cls].strip() in SUPERCLASSES:
                out[row[0].strip()] = row[i_cls].strip()
    return out


def superclass_label(codes: dict[str, float], diag_map: dict[str, str], multilabel: bool,
                     min_likelihood: float = 80.0) -> int | np.ndarray | None:
    """Label of one record from its ``{scp code: likelihood}``: single → the highest superclass index among codes
    with likelihood >= ``min_likelihood``; multilabel → float32 multi-hot ``[5]`` over all diagnostic codes.
    None when no code maps to a superclass."""
    if multilabel:
        hits = {SUPERCLASSES.index(diag_map[c]) for c in codes if c in diag_map}
        if not hits:
            return None
        hot = np.zeros(len(SUPERCLASSES), dtype=np.float32)
        hot[sorted(hits)] = 1.0
        return hot
    hits = {SUPERCLASSES.index(diag_map[c]) for c, p in codes.items() if c in diag_map and p >= min_likelihood}
    return max(hits) if hits else None


def _parse_codes(text: str) -> dict[str, float]:
    """The ``scp_codes`` column, a Python dict literal such as ``{'NORM': 100.0, 'SR': 0.0}``."""
    value = ast.literal_eval(text)
    if not isinstance(value, dict):
        raise ValueError("not a dict")
    return {str(k): float(v) for k, v in value.items()}


def _patient(text: str, ecg_id: str) -> str:
    """patient_id as stored ("15709.0") → "15709"; a record without one is its own group."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        return text or f"ecg{ecg_id}"
    if not math.isfinite(value):
        return f"ecg{ecg_id}"
    return str(int(value)) if value == int(value) else text


class PTBXLSource(Source):
    """PTB-XL records listed in ``ptbxl_database.csv``, labelled with the 5 diagnostic superclasses."""

    name = "ptbxl"
    description = ("PTB-XL → train.h5 / val.h5 / test.h5 (official strat_fold split 1-8 / 9 / 10), 5 diagnostic "
                   "superclasses NORM, MI, STTC, CD, HYP: single-label by priority (default) or multi-label.")
    splits = ("train", "val", "test")
    drawn_splits = False  # official strat_fold
    class_names = SUPERCLASSES
    multilabel = False
    defaults = {"window": 2048, "step": 1024, "normalize": "minmax", "norm_scope": "window",
                "channels": STANDARD_12_LEADS}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("PTB-XL")
        g.add_argument("--task", default="single", choices=["single", "multilabel"],
                       help="single: one superclass by priority HYP > CD > STTC > MI > NORM (the original); "
                            "multilabel: multi-hot superclasses of all diagnostic codes (the standard benchmark)")
        g.add_argument("--rate", type=int, default=500, choices=[500, 100],
                       help="read the 500 Hz (filename_hr) or 100 Hz (filename_lr) records; 100 Hz records have "
                            "1000 samples, so pass e.g. --window 1000 --step 500 with it")
        g.add_argument("--min_likelihood", type=float, default=None,
                       help="--task single: keep scp codes with at least this likelihood (default 80)")

    def __init__(self, args: argparse.Namespace):
        super().__init__(args)
        if args.task == "multilabel" and args.min_likelihood is not None:
            raise SystemExit("error: --min_likelihood applies to --task single only; the multilabel benchmark "
                             "counts every listed diagnostic code")
        if len(args.input) != 1:
            raise SystemExit(f"error: --input: expected one PTB-XL folder, got {len(args.input)} paths")
        self.multilabel = args.task == "multilabel"
        if not self.multilabel and args.min_likelihood is None:
            args.min_likelihood = 80.0  # resolved here so that the metadata records the value used
        self.min_likelihood = args.min_likelihood
        path = Path(args.input[0])
        self.root = path.parent if path.is_file() else path

    def default_output(self) -> Path:
        return self.root

    def list_records(self) -> tuple[list[RecordRef], list[tuple[str, str]]]:
        diag_map = read_scp_statements(self.root / _STATEMENTS)
        if not diag_map:
            raise SystemExit(f"error: {self.root / _STATEMENTS}: no diagnostic code maps to "
                             f"{', '.join(SUPERCLASSES)}")
        self.class_codes = {c: sorted(k for k, v in diag_map.items() if v == c) for c in SUPERCLASSES}
        file_col = "filename_hr" if self.args.rate == 500 else "filename_lr"
        refs, skipped = [], []
        with _open_table(self.root / _DATABASE, _DB_COLUMNS) as (header, rows):
            col = {name: header.index(name) for name in _DB_COLUMNS}
            for line_no, row in enumerate(rows, start=2):
                if len(row) != len(header):
                    skipped.append((f"{_DATABASE} line {line_no}", f"has {len(row)} fields, expected {len(header)}"))
                    continue
                ref = self._ref(row[col["ecg_id"]].strip(), row[col["patient_id"]], row[col["scp_codes"]],
                                row[col["strat_fold"]], file_col, row[col[file_col]].strip(), diag_map)
                if isinstance(ref, RecordRef):
                    refs.append(ref)
                else:
                    skipped.append(ref)
        return refs, skipped

    def _ref(self, ecg_id: str, patient: str, scp_codes: str, strat_fold: str, file_col: str, filename: str,
             diag_map: dict[str, str]) -> RecordRef | tuple[str, str]:
        """One database row → its RecordRef, or (record, reason) when it is rejected."""
        rid = filename or f"ecg_id {ecg_id}"
        if not filename:
            return rid, f"no {file_col}"
        try:
            fold = int(float(strat_fold))
        except ValueError:
            fold = 0
        if fold not in _FOLD_SPLIT:
            return rid, f"strat_fold {strat_fold!r} is not 1-10"
        try:
            codes = _parse_codes(scp_codes)
        except (ValueError, SyntaxError, TypeError) as e:
            return rid, f"scp_codes {scp_codes!r} is not a {{code: likelihood}} dict ({type(e).__name__})"
        label = superclass_label(codes, diag_map, self.multilabel, self.min_likelihood)
        if label is None:
            rule = "" if self.multilabel else f" with likelihood >= {self.min_likelihood:g}"
            return rid, f"no diagnostic superclass{rule} among scp codes {', '.join(codes) or 'none'}"
        return RecordRef(rid, _patient(patient, ecg_id), filename, label, _FOLD_SPLIT[fold])

    def load(self, ref: RecordRef) -> Iterable[Item]:
        yield Item(ref.id, read_wfdb(self.root / ref.source))


def main(argv: list[str] | None = None) -> int:
    """``python ECG/ptbxl_finetune.py --input /path/PTBXL [flags]``; returns the exit code."""
    return main_for(PTBXLSource, argv, prog="ECG/ptbxl_finetune.py")
