"""``physiowave predict CKPT INPUT... -o predictions.csv``: class probabilities and labels per record.

Records are windowed as the training data was; the window probabilities (softmax, or sigmoid for multi-label)
are averaged per record, and the record's label is the most probable class (single-label) or every class whose
mean probability reaches its threshold (multi-label: the thresholds tuned on validation data and stored in the
checkpoint, else ``--threshold``). ``--per_window`` writes one row per window instead.

A window that holds NaN/inf after preprocessing (which interpolates NaN runs up to --max_nan_gap seconds) is
never given to the model: it has no row, is not counted in its record's windows, and is named in the last line
(RECORD@START); a record without a usable window has no row and is reported as skipped.
"""
from __future__ import annotations

import argparse
import csv
import io
from dataclasses import dataclass

import numpy as np

from ..fileio import atomic_write_text, csv_text
from ..inference import Skipped, TrainedModel, group_mean, probabilities, run_inputs
from .common import (INPUTS_HELP, add_model_arguments, add_preparation_arguments, check_preparation, prepare_output,
                     report_skipped, trained_from_args)

__all__ = ["add_parser", "predict", "Predictions"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="class probabilities of recordings", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p, INPUTS_HELP)
    p.add_argument("-o", "--output", required=True, help="CSV file to write")
    p.add_argument("--per_window", action="store_true",
                   help="one row per window (with its start) instead of per record")
    p.add_argument("--threshold", type=float, default=None,
                   help="multi-label decision threshold for every class (default: the checkpoint's tuned thresholds, "
                        "else 0.5)")
    add_preparation_arguments(p)
    p.set_defaults(run=run)


@dataclass
class Predictions:
    """Window-level results: ``records`` [n] ids, ``starts`` [n], ``probs`` [n, K], ``labels`` [n(, K)] or None."""
    records: np.ndarray
    starts: np.ndarray
    probs: np.ndarray
    labels: np.ndarray | None

    def per_record(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(record ids in first-seen order, window counts [R], mean probabilities [R, K])."""
        return group_mean(self.records, self.probs)


def predict(trained: TrainedModel, inputs: list[str], batch_size: int = 64, progress: bool = True
            ) -> tuple[Predictions, Skipped]:
    """Run the classifier over every usable window of ``inputs`` → (window predictions, what was skipped:
    records and windows with NaN/inf)."""
    if trained.task is None:
        raise ValueError(f"{trained.path}: has no classification head (a pretraining checkpoint): "
                         "use `physiowave embed`")
    skipped = Skipped()
    records, starts, probs, labels = [], [], [], []
    for keys, out, y in run_inputs(trained, inputs, batch_size, lambda model, x: {"logits": model(x)}, skipped,
                                   "predict", progress):
        records += [k for k, _ in keys]
        starts += [s for _, s in keys]
        probs.append(probabilities(out["logits"], trained.task))
        labels.append(y)
    y = np.concatenate(labels) if all(v is not None for v in labels) else None
    return Predictions(np.asarray(records), np.asarray(starts, np.int64), np.concatenate(probs), y), skipped


def decide(probs: np.ndarray, task: str, names: list[str], thresholds: np.ndarray) -> list[str]:
    """Predicted label text per row: the argmax class, or the ';'-joined classes at or above their thresholds."""
    if task == "single":
        return [names[i] for i in probs.argmax(1)]
    return [";".join(n for n, hit in zip(names, row) if hit) for row in probs >= thresholds]


def to_csv(pred: Predictions, trained: TrainedModel, per_window: bool, threshold: float | None) -> str:
    names = trained.class_names or []
    k = len(names)
    thresholds = np.full(k, threshold if threshold is not None else 0.5)
    if threshold is None and trained.thresholds is not None:
        thresholds = trained.thresholds
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if per_window:
        w.writerow(["record", "start", *(csv_text(f"prob_{n}") for n in names), "predicted"])
        for r, s, p, label in zip(pred.records, pred.starts, pred.probs,
                                  decide(pred.probs, trained.task, names, thresholds)):
            w.writerow([csv_text(r), s, *(f"{v:.6g}" for v in p), csv_text(label)])
    else:
        ids, counts, mean = pred.per_record()
        w.writerow(["record", "windows", *(csv_text(f"prob_{n}") for n in names), "predicted"])
        for r, c, p, label in zip(ids, counts, mean, decide(mean, trained.task, names, thresholds)):
            w.writerow([csv_text(r), c, *(f"{v:.6g}" for v in p), csv_text(label)])
    return buf.getvalue()


def run(args: argparse.Namespace) -> int:
    check_preparation(args)
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise ValueError(f"--threshold {args.threshold}: expected a probability in [0, 1]")
    output = prepare_output(args.output, reads=[args.checkpoint, *args.inputs])
    trained = trained_from_args(args)
    pred, skipped = predict(trained, args.inputs, args.batch_size)
    atomic_write_text(output, to_csv(pred, trained, args.per_window, args.threshold))
    report_skipped(skipped)
    n_records = len(dict.fromkeys(pred.records.tolist()))
    print(f"{len(pred.records)} windows of {n_records} records ({skipped.summary()}) -> {args.output}")
    return 0
