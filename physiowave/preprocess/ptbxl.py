"""PTB-XL (21,799 12-lead 10 s ECGs, WFDB, 500 and 100 Hz) → ``train.h5`` / ``val.h5`` / ``test.h5``, labelled by
one of the ``--task`` rules below from each record's ``scp_codes`` (``ptbxl_database.csv``) and the statement table
``scp_statements.csv``. Split (every task): the official ``strat_fold`` (1-8 train, 9 val, 10 test;
patient-disjoint). Records without a label of the task are rejected (listed in ``skipped.csv`` with the reason).

The 5 diagnostic superclasses, in the original's order NORM 0, MI 1, STTC 2, CD 3, HYP 4:
- ``--task single`` (default, the original rule): scp codes with likelihood >= ``--min_likelihood`` (80) that are
  diagnostic map to their ``diagnostic_class``; of several, the highest index wins (HYP > CD > STTC > MI > NORM).
- ``--task multilabel``: a multi-hot vector of the superclasses of all diagnostic codes listed (likelihood
  ignored); the same labels as ``superdiagnostic`` below, but always all 5 columns in the order above.

The statement tasks of Wagner et al. 2020 (PTB-XL benchmark, ``compute_label_aggregations`` + ``select_data`` with
``min_samples`` 0), multi-hot float32, every listed scp code counting whatever its likelihood (0 included):
- ``all``: every code that ``scp_statements.csv`` lists; ``diagnostic``: the codes with ``diagnostic`` == 1;
  ``subdiagnostic`` / ``superdiagnostic``: the ``diagnostic_subclass`` / ``diagnostic_class`` of those;
  ``form`` / ``rhythm``: the codes with ``form`` / ``rhythm`` == 1 (some codes are both diagnostic and form).
- classes: the labels that occur at least once among the records listed in ``ptbxl_database.csv`` (all folds,
  before any signal is read), sorted (the benchmark's MultiLabelBinarizer order). On the full database: all 71,
  diagnostic 44, subdiagnostic 23, superdiagnostic 5, form 19, rhythm 12.
- one difference: the benchmark's ``all`` keeps codes missing from ``scp_statements.csv`` (none in the release);
  ours ignores them.

Deliberate differences from the original ``ECG/ptbxl_finetune.py``:
- tail: the original added one zero-padded window at (L//step)*step (4096: 904 real samples of 5000) and min-max
  normalised it together with its zeros (a bug); ours uses the core's ``--tail pad --min_real 0.5`` (starts 0,
  1024, 2048, 3072) with statistics on real samples only, the padding staying 0.
- leads are picked by name in the standard order (``--channels``), not as "the first 12".
- every ``--task`` but ``single``, and ``--rate 100``, are new; the original was single-label on the 500 Hz
  records only.
- rejected records are listed with their reason in ``skipped.csv`` instead of being dropped silently.
"""
from __future__ import annotations

import argparse
import ast
import csv
import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from .cli import STANDARD_12_LEADS, main_for
from .core import Item, RecordRef, Source
from .readers import read_wfdb

__all__ = ["PTBXLSource", "SUPERCLASSES", "STATEMENT_TASKS", "Statement", "read_statements", "read_scp_statements",
           "superclass_label", "task_labels", "task_classes", "main"]

SUPERCLASSES = ["NORM", "MI", "STTC", "CD", "HYP"]
STATEMENT_TASKS = ("all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm")
# scp_statements.csv columns each statement task reads, and what its labels are called in a skip reason
_TASK_COLUMNS = {"all": (), "diagnostic": ("diagnostic",), "subdiagnostic": ("diagnostic", "diagnostic_subclass"),
                 "superdiagnostic": ("diagnostic", "diagnostic_class"), "form": ("form",), "rhythm": ("rhythm",)}
_TASK_WHAT = {"all": "code listed in scp_statements.csv", "diagnostic": "diagnostic statement",
              "subdiagnostic": "diagnostic subclass", "superdiagnostic": "diagnostic superclass",
              "form": "form statement", "rhythm": "rhythm statement"}
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


@dataclass(frozen=True, slots=True)
class Statement:
    """One row of ``scp_statements.csv``: its flags (``1.0`` → True, empty → False) and diagnostic (sub)class
    (None when empty)."""
    diagnostic: bool = False
    form: bool = False
    rhythm: bool = False
    diagnostic_class: str | None = None
    diagnostic_subclass: str | None = None


def _flag(text: str) -> bool:
    try:
        return float(text) == 1.0
    except ValueError:  # empty (NaN in pandas): not set
        return False


def _name(text: str) -> str | None:
    text = text.strip()
    return None if not text or text.lower() == "nan" else text


def read_statements(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, Statement]:
    """``scp_statements.csv`` → {scp code: :class:`Statement`}. The first (unnamed) column holds the code; the
    ``required`` columns must exist, the other flag/class columns are read when present."""
    out = {}
    with _open_table(Path(path), required) as (header, rows):
        col = {name: header.index(name) for name in ("diagnostic", "form", "rhythm", "diagnostic_class",
                                                     "diagnostic_subclass") if name in header}

        def cell(row: list[str], name: str) -> str:
            i = col.get(name)
            return row[i] if i is not None and i < len(row) else ""

        for row in rows:
            if not row or not row[0].strip():
                continue
            out[row[0].strip()] = Statement(_flag(cell(row, "diagnostic")), _flag(cell(row, "form")),
                                            _flag(cell(row, "rhythm")), _name(cell(row, "diagnostic_class")),
                                            _name(cell(row, "diagnostic_subclass")))
    return out


def read_scp_statements(path: str | Path) -> dict[str, str]:
    """``scp_statements.csv`` → {scp code: superclass} for the diagnostic rows (``diagnostic`` == 1) whose
    ``diagnostic_class`` is one of :data:`SUPERCLASSES`."""
    return {code: st.diagnostic_class for code, st in read_statements(path, ("diagnostic", "diagnostic_class")).items()
            if st.diagnostic and st.diagnostic_class in SUPERCLASSES}


def task_labels(codes: Iterable[str], statements: dict[str, Statement], task: str) -> set[str]:
    """Labels of one record for a statement task (:data:`STATEMENT_TASKS`) from its scp codes, every likelihood
    counting (the benchmark's ``compute_label_aggregations``): all → the codes in ``statements``; diagnostic /
    form / rhythm → the codes with that flag; subdiagnostic / superdiagnostic → the ``diagnostic_subclass`` /
    ``diagnostic_class`` of the diagnostic codes."""
    known = [(c, statements[c]) for c in codes if c in statements]
    if task == "all":
        return {c for c, _ in known}
    if task in ("diagnostic", "form", "rhythm"):
        return {c for c, st in known if getattr(st, task)}
    if task == "subdiagnostic":
        return {st.diagnostic_subclass for _, st in known if st.diagnostic and st.diagnostic_subclass}
    if task == "superdiagnostic":
        return {st.diagnostic_class for _, st in known if st.diagnostic and st.diagnostic_class}
    raise ValueError(f"unknown task {task!r}; expected one of {', '.join(STATEMENT_TASKS)}")


def task_classes(statements: dict[str, Statement], task: str) -> dict[str, list[str]]:
    """Every label the statement table defines for ``task``, sorted, with the codes that give it: 71 / 44 / 23 / 5 /
    19 / 12 labels for all / diagnostic / subdiagnostic / superdiagnostic / form / rhythm on the real table."""
    out: dict[str, list[str]] = {}
    for code in sorted(statements):
        for label in task_labels([code], statements, task):
            out.setdefault(label, []).append(code)
    return {label: out[label] for label in sorted(out)}


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
    """PTB-XL records listed in ``ptbxl_database.csv``, labelled by ``--task``: the 5 diagnostic superclasses
    (``single``, ``multilabel``) or a statement task of the PTB-XL benchmark (classes found in the data)."""

    name = "ptbxl"
    description = ("PTB-XL → train.h5 / val.h5 / test.h5 (official strat_fold split 1-8 / 9 / 10): the 5 diagnostic "
                   "superclasses NORM, MI, STTC, CD, HYP, single-label by priority (default) or multi-label, or the "
                   "multi-label statement tasks of the PTB-XL benchmark (Wagner et al. 2020): all, diagnostic, "
                   "subdiagnostic, superdiagnostic, form, rhythm.")
    splits = ("train", "val", "test")
    drawn_splits = False  # official strat_fold
    class_names = SUPERCLASSES  # a statement task sets its own in list_records
    multilabel = False
    defaults = {"window": 2048, "step": 1024, "normalize": "minmax", "norm_scope": "window",
                "channels": STANDARD_12_LEADS}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("PTB-XL")
        g.add_argument("--task", default="single", choices=["single", "multilabel", *STATEMENT_TASKS],
                       help="single: one superclass by priority HYP > CD > STTC > MI > NORM (the original); "
                            "multilabel: multi-hot superclasses of all diagnostic codes, columns NORM MI STTC CD HYP; "
                            "all | diagnostic | subdiagnostic | superdiagnostic | form | rhythm: the multi-label "
                            "statement tasks of the PTB-XL benchmark (Wagner et al. 2020), every listed code "
                            "counting, classes = the labels found in the data, sorted (71/44/23/5/19/12 on the "
                            "full database)")
        g.add_argument("--rate", type=int, default=500, choices=[500, 100],
                       help="read the 500 Hz (filename_hr) or 100 Hz (filename_lr) records; 100 Hz records have "
                            "1000 samples, so pass e.g. --window 1000 --step 500 with it")
        g.add_argument("--min_likelihood", type=float, default=None,
                       help="--task single: keep scp codes with at least this likelihood (default 80)")

    def __init__(self, args: argparse.Namespace):
        super().__init__(args)
        if args.task != "single" and args.min_likelihood is not None:
            raise SystemExit(f"error: --min_likelihood applies to --task single only; --task {args.task} counts "
                             "every listed code, whatever its likelihood (as the PTB-XL benchmark)")
        if len(args.input) != 1:
            raise SystemExit(f"error: --input: expected one PTB-XL folder, got {len(args.input)} paths")
        self.task = args.task
        self.multilabel = args.task != "single"
        self.nominal_fs = float(args.rate)  # records at other rates are resampled to it (or to --target_fs)
        if not self.multilabel and args.min_likelihood is None:
            args.min_likelihood = 80.0  # resolved here so that the metadata records the value used
        self.min_likelihood = args.min_likelihood
        path = Path(args.input[0])
        self.root = path.parent if path.is_file() else path

    def default_output(self) -> Path:
        return self.root

    def list_records(self) -> tuple[list[RecordRef], list[tuple[str, str]]]:
        if self.task in STATEMENT_TASKS:
            statements = read_statements(self.root / _STATEMENTS, _TASK_COLUMNS[self.task])
            defined = task_classes(statements, self.task)
            if not defined:
                raise SystemExit(f"error: {self.root / _STATEMENTS}: defines no {_TASK_WHAT[self.task]}")
            labeller = lambda codes: task_labels(codes, statements, self.task)  # noqa: E731
        else:
            diag_map = read_scp_statements(self.root / _STATEMENTS)
            if not diag_map:
                raise SystemExit(f"error: {self.root / _STATEMENTS}: no diagnostic code maps to "
                                 f"{', '.join(SUPERCLASSES)}")
            self.class_codes = {c: sorted(k for k, v in diag_map.items() if v == c) for c in SUPERCLASSES}
            labeller = lambda codes: superclass_label(codes, diag_map, self.multilabel,  # noqa: E731
                                                      self.min_likelihood)
        file_col = "filename_hr" if self.args.rate == 500 else "filename_lr"
        refs, skipped = [], []
        with _open_table(self.root / _DATABASE, _DB_COLUMNS) as (header, rows):
            col = {name: header.index(name) for name in _DB_COLUMNS}
            for line_no, row in enumerate(rows, start=2):
                if len(row) != len(header):
                    skipped.append((f"{_DATABASE} line {line_no}", f"has {len(row)} fields, expected {len(header)}"))
                    continue
                ref = self._ref(row[col["ecg_id"]].strip(), row[col["patient_id"]], row[col["scp_codes"]],
                                row[col["strat_fold"]], file_col, row[col[file_col]].strip(), labeller)
                if isinstance(ref, RecordRef):
                    refs.append(ref)
                else:
                    skipped.append(ref)
        if self.task in STATEMENT_TASKS:
            # the benchmark's select_data with min_samples 0: the labels found in the data, sorted, multi-hot
            self.class_names = sorted(set().union(*(r.label for r in refs)))
            self.class_codes = {c: defined[c] for c in self.class_names}
            index = {c: i for i, c in enumerate(self.class_names)}
            for r in refs:
                hot = np.zeros(len(self.class_names), dtype=np.float32)
                hot[sorted(index[c] for c in r.label)] = 1.0
                r.label = hot
        return refs, skipped

    def _ref(self, ecg_id: str, patient: str, scp_codes: str, strat_fold: str, file_col: str, filename: str,
             labeller: Callable[[dict[str, float]], object]) -> RecordRef | tuple[str, str]:
        """One database row → its RecordRef (label: the superclass rule's, or a statement task's label set), or
        (record, reason) when it is rejected."""
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
        label = labeller(codes)
        listed = ", ".join(codes) or "none"
        if self.task in STATEMENT_TASKS:
            if not label:
                return rid, f"--task {self.task}: no {_TASK_WHAT[self.task]} among scp codes {listed}"
            label = frozenset(label)
        elif label is None:
            rule = "" if self.multilabel else f" with likelihood >= {self.min_likelihood:g}"
            return rid, f"no diagnostic superclass{rule} among scp codes {listed}"
        return RecordRef(rid, _patient(patient, ecg_id), filename, label, _FOLD_SPLIT[fold])

    def load(self, ref: RecordRef) -> Iterable[Item]:
        yield Item(ref.id, read_wfdb(self.root / ref.source))


def main(argv: list[str] | None = None) -> int:
    """``python ECG/ptbxl_finetune.py --input /path/PTBXL [flags]``; returns the exit code."""
    return main_for(PTBXLSource, argv, prog="ECG/ptbxl_finetune.py")
