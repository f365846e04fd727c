"""Evaluation metrics for the three training tasks (single-label, multi-label, masked pretraining).

Inputs are NumPy arrays gathered over the whole evaluation set (never per process shard); outputs are
plain-Python dicts that ``json.dumps`` accepts (NaN as ``float('nan')``).

* ``classification_metrics``: accuracy, balanced accuracy, Cohen's kappa, macro and weighted F1, one-vs-rest
  AUROC averaged over the classes where it is defined, a confusion matrix and a per-class table.
* ``multilabel_metrics``: micro/macro precision, recall, F1, Jaccard, AUROC and AP, Hamming loss, subset accuracy
  and a per-class table, with per-class thresholds allowed; ``tune_thresholds`` picks per-class F1-optimal
  thresholds on validation data.
* ``pretrain_metrics``: the pretraining objective's normalised errors and the front-end's band RMS, from sums that
  can be all-reduced across processes.

How these differ from the original scripts' metrics: docs/original_pipeline.md §4.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.special import expit, softmax

__all__ = ["classification_metrics", "multilabel_metrics", "tune_thresholds", "pretrain_metrics"]

_NAN = float("nan")


# ----------------------------------------------------------------------------------------------------------------
# input checks and small helpers
# ----------------------------------------------------------------------------------------------------------------
def _as_2d(name: str, x: Any) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty 2-D array [N, K], got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: expected finite values, found NaN or inf")
    return arr


def _class_names(class_names: Sequence[str] | None, k: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(k)]
    names = [str(n) for n in class_names]
    if len(names) != k:
        raise ValueError(f"class_names: expected {k} names (one per logit column), got {len(names)}")
    return names


def _binary_score(fn: Callable[..., float], y: np.ndarray, score: np.ndarray) -> float:
    """``fn(y, score)`` for one binary column; NaN unless ``y`` has both positives and negatives."""
    if y.min() == y.max():
        return _NAN
    return float(fn(y, score))


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else _NAN


@contextlib.contextmanager
def _quiet() -> Iterator[Any]:
    """``sklearn.metrics`` with its ill-defined-metric warnings silenced; those cases are resolved by
    ``zero_division=0`` or NaN. (Imported here: sklearn takes seconds to import, and most processes of a
    training run never compute these metrics.)"""
    from sklearn import metrics as skm
    from sklearn.exceptions import UndefinedMetricWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", category=RuntimeWarning)  # kappa 0/0 when one class fills labels+preds
        yield skm


# ----------------------------------------------------------------------------------------------------------------
# single-label classification
# ----------------------------------------------------------------------------------------------------------------
def classification_metrics(logits: np.ndarray, labels: np.ndarray,
                           class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Metrics of a K-way single-label classifier.

    Args:
        logits: ``[N, K]`` raw scores; probabilities are their softmax, predictions their argmax.
        labels: ``[N]`` integer class indices in ``[0, K)``.
        class_names: K names for ``per_class``; default ``"0" .. "K-1"``.

    Returns:
        ``acc``, ``balanced_acc``, ``kappa``, ``macro_f1`` (over the classes present in labels or predictions,
        sklearn's default), ``weighted_f1``, ``auroc`` (macro one-vs-rest over the classes with both positives and
        negatives, NaN if none), ``confusion_matrix`` (K x K ints, rows = true class) and ``per_class`` (one dict per
        class: ``name``, ``support``, ``precision``, ``recall``, ``f1``, ``auroc``).
    """
    scores = _as_2d("logits", logits)
    n, k = scores.shape
    y = np.asarray(labels)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels: expected an integer array of shape ({n},), got {y.dtype} {y.shape}")
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"labels: expected class indices in [0, {k}), got range [{y.min()}, {y.max()}]")
    names = _class_names(class_names, k)
    probs = softmax(scores, axis=1)
    pred = scores.argmax(axis=1)
    classes = np.arange(k)

    with _quiet() as skm:
        prec, rec, f1, support = skm.precision_recall_fscore_support(y, pred, labels=classes, zero_division=0)
        per_auroc = [_binary_score(skm.roc_auc_score, y == c, probs[:, c]) for c in classes]
        out: dict[str, Any] = {
            "acc": float(skm.accuracy_score(y, pred)),
            "balanced_acc": float(skm.balanced_accuracy_score(y, pred)),
            "kappa": float(skm.cohen_kappa_score(y, pred)),
            "macro_f1": float(skm.f1_score(y, pred, average="macro", zero_division=0)),
            "weighted_f1": float(skm.f1_score(y, pred, average="weighted", zero_division=0)),
            "auroc": _nanmean(per_auroc),
            "confusion_matrix": skm.confusion_matrix(y, pred, labels=classes).tolist(),
        }
    out["per_class"] = [
        {"name": names[c], "support": int(support[c]), "precision": float(prec[c]), "recall": float(rec[c]),
         "f1": float(f1[c]), "auroc": per_auroc[c]}
        for c in classes
    ]
    return out


# ----------------------------------------------------------------------------------------------------------------
# multi-label classification
# ----------------------------------------------------------------------------------------------------------------
def _check_targets(targets: Any, shape: tuple[int, int]) -> np.ndarray:
    t = np.asarray(targets)
    if t.shape != shape:
        raise ValueError(f"targets: expected shape {shape} (same as logits), got {t.shape}")
    if not np.isin(t, (0, 1)).all():
        raise ValueError("targets: expected only 0/1 values")
    return t.astype(np.int64)


def _check_thresholds(thresholds: float | np.ndarray, k: int) -> np.ndarray:
    thr = np.asarray(thresholds, dtype=np.float64)
    if thr.ndim == 0:
        thr = np.full(k, float(thr))
    if thr.shape != (k,):
        raise ValueError(f"thresholds: expected a float or an array of shape ({k},), got shape {thr.shape}")
    return thr


def multilabel_metrics(logits: np.ndarray, targets: np.ndarray, thresholds: float | np.ndarray = 0.5,
                       class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Metrics of a K-label multi-label classifier.

    Args:
        logits: ``[N, K]`` raw scores; probabilities are their sigmoid.
        targets: ``[N, K]`` in {0, 1}.
        thresholds: one float, or ``[K]`` per-class thresholds; class k is predicted when ``prob >= thresholds[k]``.
        class_names: K names for ``per_class``; default ``"0" .. "K-1"``.

    Returns:
        ``precision/recall/f1/jaccard`` ``_micro`` and ``_macro`` (``zero_division=0``), ``auroc_micro``,
        ``ap_micro`` (NaN unless the flattened targets hold both values), ``auroc_macro`` and ``ap_macro`` (mean over
        the classes with both positives and negatives, NaN if none), ``hamming_loss``, ``subset_accuracy`` (exact
        match of the whole label vector) and ``per_class`` (``name``, ``support``, ``precision``, ``recall``,
        ``f1``, ``auroc``, ``ap``, ``threshold``; AUROC and AP are NaN for a class lacking positives or negatives).
    """
    scores = _as_2d("logits", logits)
    n, k = scores.shape
    t = _check_targets(targets, (n, k))
    thr = _check_thresholds(thresholds, k)
    names = _class_names(class_names, k)
    probs = expit(scores)
    pred = (probs >= thr[None, :]).astype(np.int64)

    out: dict[str, Any] = {}
    with _quiet() as skm:
        for avg in ("micro", "macro"):
            out[f"precision_{avg}"] = float(skm.precision_score(t, pred, average=avg, zero_division=0))
            out[f"recall_{avg}"] = float(skm.recall_score(t, pred, average=avg, zero_division=0))
            out[f"f1_{avg}"] = float(skm.f1_score(t, pred, average=avg, zero_division=0))
        per_auroc = [_binary_score(skm.roc_auc_score, t[:, c], probs[:, c]) for c in range(k)]
        per_ap = [_binary_score(skm.average_precision_score, t[:, c], probs[:, c]) for c in range(k)]
        out["auroc_micro"] = _binary_score(skm.roc_auc_score, t.ravel(), probs.ravel())
        out["auroc_macro"] = _nanmean(per_auroc)
        out["ap_micro"] = _binary_score(skm.average_precision_score, t.ravel(), probs.ravel())
        out["ap_macro"] = _nanmean(per_ap)
        out["hamming_loss"] = float(skm.hamming_loss(t, pred))
        out["jaccard_micro"] = float(skm.jaccard_score(t, pred, average="micro", zero_division=0))
        out["jaccard_macro"] = float(skm.jaccard_score(t, pred, average="macro", zero_division=0))
        out["subset_accuracy"] = float(skm.accuracy_score(t, pred))
        prec, rec, f1, support = skm.precision_recall_fscore_support(t, pred, average=None, zero_division=0)
    out["per_class"] = [
        {"name": names[c], "support": int(support[c]), "precision": float(prec[c]), "recall": float(rec[c]),
         "f1": float(f1[c]), "auroc": per_auroc[c], "ap": per_ap[c], "threshold": float(thr[c])}
        for c in range(k)
    ]
    return out


def tune_thresholds(probs: np.ndarray, targets: np.ndarray, default: float = 0.5) -> np.ndarray:
    """Per-class threshold maximising that class's F1 on ``probs [N, K]`` / ``targets [N, K]`` (validation data).

    Candidates are the distinct probability values of each class (exact search): with the column sorted in
    descending order, thresholding at the value ending a run of ties predicts exactly the rows up to that point,
    so TP is a cumulative sum and ``F1 = 2 TP / (n_pred + n_pos)``. Ties in F1 go to the highest threshold. A class
    without positives keeps ``default``. Returns ``[K]`` float64; use as ``pred = prob >= threshold``.
    """
    p = _as_2d("probs", probs)
    n, k = p.shape
    t = _check_targets(targets, (n, k))
    order = np.argsort(-p, axis=0, kind="stable")
    p_sorted = np.take_along_axis(p, order, axis=0)  # [N, K] descending
    tp = np.cumsum(np.take_along_axis(t, order, axis=0), axis=0)  # [N, K] true positives when predicting rows 0..i
    n_pred = np.arange(1, n + 1, dtype=np.float64)[:, None]
    n_pos = t.sum(axis=0)[None, :]
    f1 = 2.0 * tp / (n_pred + n_pos)
    run_end = np.ones_like(p_sorted, dtype=bool)  # only the last row of a run of equal values is a valid cut
    run_end[:-1] = p_sorted[:-1] != p_sorted[1:]
    f1 = np.where(run_end, f1, -1.0)
    best = f1.argmax(axis=0)
    thr = p_sorted[best, np.arange(k)]
    return np.where(n_pos[0] > 0, thr, float(default)).astype(np.float64)


# ----------------------------------------------------------------------------------------------------------------
# masked-reconstruction pretraining
# ----------------------------------------------------------------------------------------------------------------
def pretrain_metrics(sums: Mapping[str, float], objective: str) -> dict[str, float]:
    """Pretraining metrics from sums over samples of :func:`physiowave.models.objective.objective_loss` (and
    ``band_rms_<k>``, ``count``) → ``loss``, ``shape_nmse`` (1.0 = predicting each masked patch's mean),
    ``energy_nmse`` (``bands``: 1.0 = predicting the mean log-RMS), ``mse`` (``original``: the plain MSE its loss
    is), and ``band_rms_<k>`` (mean per-sample RMS of band k of the learnable front-end). Empty sums give zeros.
    """
    s = {key: float(value) for key, value in sums.items()}

    def ratio(num: str, den: str) -> float:
        return s.get(num, 0.0) / s[den] if s.get(den, 0.0) > 0 else 0.0

    out = {"shape_nmse": ratio("shape_sq", "shape_var")}
    if objective == "original":
        out["mse"] = ratio("shape_sq", "elements")
        out["loss"] = out["mse"]
    else:
        tokens = s.get("tokens", 0.0)
        var = (s.get("energy_sq2", 0.0) - s.get("energy_sum", 0.0) ** 2 / tokens) / tokens if tokens > 0 else 0.0
        out["energy_nmse"] = ratio("energy_sq", "tokens") / var if var > 0 else 0.0
        out["loss"] = out["shape_nmse"] + out["energy_nmse"]
    out.update({k: ratio(k, "count") for k in sorted(s) if k.startswith("band_rms_")})
    return out


# ----------------------------------------------------------------------------------------------------------------
# record level
# ----------------------------------------------------------------------------------------------------------------
AGGREGATIONS = ("mean", "max")


def aggregate_records(record_ids: np.ndarray, values: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
    """Window rows ``values [N, ...]`` → one row per record (in order of first appearance): the ``mean`` or the
    ``max`` over the record's windows → (record ids ``[R]``, values ``[R, ...]``)."""
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregate must be one of {AGGREGATIONS}, got {how!r}")
    ids = np.asarray(record_ids)
    uniq, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")          # unique ids in order of first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    group = rank[inverse]                              # [N] record index of each window
    vals = np.asarray(values, dtype=np.float64)
    out = np.zeros((len(uniq), *vals.shape[1:]))
    if how == "mean":
        np.add.at(out, group, vals)
        out /= np.bincount(group, minlength=len(uniq)).reshape(-1, *[1] * (vals.ndim - 1))
    else:
        out.fill(-np.inf)
        np.maximum.at(out, group, vals)
    return uniq[order], out


def record_labels(record_ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each record's label: its windows' class (single-label, the most frequent one if they differ) or the union
    of its windows' labels (multi-label), in the order of :func:`aggregate_records`."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return aggregate_records(record_ids, labels, "max")[1].astype(labels.dtype)
    k = int(labels.max()) + 1 if labels.size else 1
    counts = aggregate_records(record_ids, np.eye(k)[labels], "mean")[1]
    return counts.argmax(axis=1).astype(labels.dtype)
