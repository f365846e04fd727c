"""Scores of a benchmark's runs: the metric of per-record predictions (macro AUROC in its rank form, equal to
scikit-learn's), the percentile bootstrap over records, and reading a run's ``test_records.npz``."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..contract import LABEL_KEYS

__all__ = ["BOOTSTRAP_METRICS", "Records", "label_kind", "metric_value", "bootstrap", "read_records"]

BOOTSTRAP_METRICS = ("auroc_macro", "acc")


def label_kind(path: str | Path, label_key: str | None = None) -> str:
    """"single" when the file's labels are ``[N]`` class indices, "multi" when they are multi-hot ``[N, K]``."""
    import h5py

    with h5py.File(path, "r") as f:
        key = label_key or next((k for k in LABEL_KEYS if k in f), None)
        if key is None or key not in f:
            raise ValueError(f"{path}: no label dataset ({label_key or ', '.join(LABEL_KEYS)})")
        ndim = f[key].ndim
    if ndim not in (1, 2):
        raise ValueError(f"{path}: labels '{key}' have {ndim} dimensions; expected [N] or [N, K]")
    return "single" if ndim == 1 else "multi"


def _onehot(labels: np.ndarray, k: int) -> np.ndarray:
    """``[R, K]`` bool positives: multi-hot labels as given, class indices one-vs-rest."""
    return labels > 0.5 if labels.ndim == 2 else labels[:, None] == np.arange(k)


def metric_value(name: str, probs: np.ndarray, labels: np.ndarray) -> float:
    """``name`` ("auroc_macro" or "acc") of per-record ``probs [R, K]`` against ``labels`` (``[R]`` class
    indices or ``[R, K]`` 0/1); NaN when undefined (no class with both positives and negatives). The AUROC of each
    class is the Mann-Whitney statistic over scipy's average ranks (ties count one half), which is what
    ``sklearn.metrics.roc_auc_score`` gives, for all classes in one call: the bootstrap calls this thousands of
    times."""
    from scipy.stats import rankdata

    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if name == "acc":
        if labels.ndim != 1:
            raise ValueError("acc is a single-label metric; use auroc_macro for multi-label data")
        return float(np.mean(probs.argmax(1) == labels))
    if name != "auroc_macro":
        raise ValueError(f"unknown bootstrap metric {name!r}: expected one of {', '.join(BOOTSTRAP_METRICS)}")
    onehot = _onehot(labels, probs.shape[1])
    positives = onehot.sum(0)
    valid = (positives > 0) & (positives < len(onehot))  # classes with both labels among these records
    if not valid.any():
        return math.nan
    pos = onehot[:, valid]
    n_pos = pos.sum(0)
    n_neg = len(pos) - n_pos
    rank_sum = (rankdata(probs[:, valid], axis=0) * pos).sum(0)  # [K]: ranks of the positives
    return float(np.mean((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)))



def bootstrap(name: str, probs: Sequence[np.ndarray], labels: np.ndarray, n: int = 1000, seed: int = 0,
              level: float = 0.95) -> dict[str, Any]:
    """Percentile bootstrap over records of the seed-mean ``name``: ``probs`` holds one ``[R, K]`` array per seed
    (rows = the same records, in the same order, as ``labels``). Each resample draws R record indices with
    replacement from ``np.random.default_rng(seed)``, the same for every seed; the metric of each seed on them is
    averaged → ``{value (on all records), low, high, n, dropped (resamples where it was undefined)}``."""
    if not len(probs):
        raise ValueError("bootstrap: no predictions")
    labels = np.asarray(labels)
    r = len(labels)
    if any(len(p) != r for p in probs):
        raise ValueError(f"bootstrap: predictions for {[len(p) for p in probs]} records, labels for {r}")
    value = float(np.mean([metric_value(name, p, labels) for p in probs]))  # also checks name fits the labels
    probs = [np.asarray(p, dtype=np.float64) for p in probs]
    rng = np.random.default_rng(seed)
    means = np.empty(n)
    for b in range(n):
        idx = rng.integers(0, r, r)
        means[b] = np.mean([metric_value(name, p[idx], labels[idx]) for p in probs])
    kept = means[~np.isnan(means)]
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(kept, [tail, 100 - tail]) if len(kept) else (math.nan, math.nan)
    return {"value": value, "low": float(low), "high": float(high), "n": n, "dropped": int(n - len(kept))}


@dataclass
class Records:
    """A run's ``test_records.npz``, rows sorted by ``record_id``."""

    record_id: np.ndarray
    probs: np.ndarray
    labels: np.ndarray
    thresholds: np.ndarray | None = None


def read_records(path: str | Path) -> Records:
    """Read and check ``test_records.npz`` (``record_id [R]``, ``probs [R, K]``, ``labels [R]`` or ``[R, K]``,
    optional ``thresholds [K]``)."""
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in ("record_id", "probs", "labels") if k not in z.files]
        if missing:
            raise ValueError(f"{path}: missing array(s) {', '.join(missing)}")
        ids, probs, labels = z["record_id"].astype(str), z["probs"].astype(np.float64), z["labels"]
        thresholds = z["thresholds"] if "thresholds" in z.files else None
    r = len(ids)
    if probs.ndim != 2 or len(probs) != r or len(labels) != r or labels.ndim not in (1, 2) \
            or (labels.ndim == 2 and labels.shape[1] != probs.shape[1]):
        raise ValueError(f"{path}: shapes record_id {ids.shape}, probs {probs.shape}, labels {labels.shape} do not fit")
    if len(np.unique(ids)) != r:
        raise ValueError(f"{path}: record_id repeats; expected one row per record")
    order = np.argsort(ids, kind="stable")
    return Records(ids[order], probs[order], labels[order], thresholds)
