"""Metrics against hand-computed cases and independent NumPy re-derivations."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from physiowave.engine.metrics import classification_metrics, multilabel_metrics, pretrain_metrics, tune_thresholds
from physiowave.models.objective import objective_loss


def _auroc_ranks(y: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney AUROC: an independent derivation from average ranks."""
    pos = y.astype(bool)
    n1, n0 = pos.sum(), (~pos).sum()
    return float((rankdata(score)[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _ap_no_ties(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision = mean over positives of the precision at their rank (scores without ties)."""
    order = np.argsort(-score)
    hits = y[order].astype(float)
    precision_at = np.cumsum(hits) / np.arange(1, len(y) + 1)
    return float((precision_at * hits).sum() / hits.sum())


def _f1_at(prob: np.ndarray, y: np.ndarray, thr: float) -> float:
    pred = prob >= thr
    tp = (pred & (y == 1)).sum()
    return 2 * tp / (pred.sum() + y.sum())


# ---------------------------------------------------------------------------------------------------------------
# single-label
# ---------------------------------------------------------------------------------------------------------------
def test_classification_hand_case():
    labels = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 2, 2])
    logits = np.eye(3)[pred] * 3.0
    m = classification_metrics(logits, labels, class_names=["N", "A", "B"])
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["acc"] == pytest.approx(4 / 6)
    recall = [2 / 3, 1 / 2, 1 / 1]
    precision = [2 / 2, 1 / 2, 1 / 2]
    f1 = [2 * p * r / (p + r) for p, r in zip(precision, recall)]
    assert m["balanced_acc"] == pytest.approx(np.mean(recall))
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert m["weighted_f1"] == pytest.approx(np.average(f1, weights=[3, 2, 1]))
    p_obs = 4 / 6
    p_exp = sum((labels == c).mean() * (pred == c).mean() for c in range(3))
    assert m["kappa"] == pytest.approx((p_obs - p_exp) / (1 - p_exp))
    assert [r["name"] for r in m["per_class"]] == ["N", "A", "B"]
    assert [r["support"] for r in m["per_class"]] == [3, 2, 1]
    assert [r["recall"] for r in m["per_class"]] == pytest.approx(recall)
    assert [r["precision"] for r in m["per_class"]] == pytest.approx(precision)


def test_classification_auroc_matches_references():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(60, 4))
    labels = rng.integers(0, 4, size=60)
    logits[np.arange(60), labels] += 1.0
    m = classification_metrics(logits, labels)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    per = [_auroc_ranks(labels == c, probs[:, c]) for c in range(4)]
    assert [r["auroc"] for r in m["per_class"]] == pytest.approx(per)
    assert m["auroc"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    assert [r["name"] for r in m["per_class"]] == ["0", "1", "2", "3"]
    cm = np.zeros((4, 4), int)
    np.add.at(cm, (labels, logits.argmax(1)), 1)
    assert m["confusion_matrix"] == cm.tolist()


def test_classification_absent_class_is_nan_safe():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=40)  # class 3 never occurs
    logits = rng.normal(size=(40, 4))
    logits[:5, 3] += 10.0  # ... but is predicted a few times
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = classification_metrics(logits, labels)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert math.isnan(m["per_class"][3]["auroc"]) and m["per_class"][3]["support"] == 0
    assert m["auroc"] == pytest.approx(np.mean([_auroc_ranks(labels == c, probs[:, c]) for c in range(3)]))
    assert len(m["confusion_matrix"]) == 4 and m["confusion_matrix"][3] == [0, 0, 0, 0]
    assert sum(row[3] for row in m["confusion_matrix"]) == (logits.argmax(1) == 3).sum()
    json.dumps(m)  # plain Python types only

    single = classification_metrics(rng.normal(size=(5, 3)), np.zeros(5, dtype=int))
    assert math.isnan(single["auroc"]) and all(math.isnan(r["auroc"]) for r in single["per_class"])


def test_classification_bad_input():
    with pytest.raises(ValueError, match="labels"):
        classification_metrics(np.zeros((3, 2)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="logits"):
        classification_metrics(np.zeros(3), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="class_names"):
        classification_metrics(np.zeros((3, 2)), np.array([0, 1, 1]), class_names=["a"])


# ---------------------------------------------------------------------------------------------------------------
# multi-label
# ---------------------------------------------------------------------------------------------------------------
def _multilabel_data(seed: int = 2, n: int = 80, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, k)) < 0.35).astype(int)
    logits = rng.normal(size=(n, k)) + 1.5 * targets - 0.5
    return logits, targets


def test_multilabel_matches_numpy_rederivation():
    logits, t = _multilabel_data()
    thr = np.array([0.5, 0.3, 0.7, 0.45])
    m = multilabel_metrics(logits, t, thresholds=thr)
    probs = 1 / (1 + np.exp(-logits))
    pred = (probs >= thr).astype(int)
    tp, fp, fn = (pred & t).sum(0), (pred & (1 - t)).sum(0), ((1 - pred) & t).sum(0)
    assert m["precision_micro"] == pytest.approx(tp.sum() / (tp.sum() + fp.sum()))
    assert m["recall_micro"] == pytest.approx(tp.sum() / (tp.sum() + fn.sum()))
    assert m["f1_micro"] == pytest.approx(2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()))
    assert m["f1_macro"] == pytest.approx(np.mean(2 * tp / (2 * tp + fp + fn)))
    assert m["precision_macro"] == pytest.approx(np.mean(tp / (tp + fp)))
    assert m["recall_macro"] == pytest.approx(np.mean(tp / (tp + fn)))
    assert m["jaccard_micro"] == pytest.approx(tp.sum() / (tp.sum() + fp.sum() + fn.sum()))
    assert m["jaccard_macro"] == pytest.approx(np.mean(tp / (tp + fp + fn)))
    assert m["hamming_loss"] == pytest.approx((pred != t).mean())
    assert m["subset_accuracy"] == pytest.approx((pred == t).all(1).mean())
    per_auc = [_auroc_ranks(t[:, c], probs[:, c]) for c in range(4)]
    per_ap = [_ap_no_ties(t[:, c], probs[:, c]) for c in range(4)]
    assert m["auroc_macro"] == pytest.approx(np.mean(per_auc))
    assert m["ap_macro"] == pytest.approx(np.mean(per_ap))
    assert m["auroc_micro"] == pytest.approx(_auroc_ranks(t.ravel(), probs.ravel()))
    assert m["ap_micro"] == pytest.approx(_ap_no_ties(t.ravel(), probs.ravel()))
    rows = m["per_class"]
    assert [r["threshold"] for r in rows] == pytest.approx(thr)
    assert [r["support"] for r in rows] == t.sum(0).tolist()
    assert [r["f1"] for r in rows] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    json.dumps(m)


def test_multilabel_per_class_thresholds_change_only_their_class():
    logits, t = _multilabel_data(seed=3)
    base = multilabel_metrics(logits, t, thresholds=0.5)
    shifted = multilabel_metrics(logits, t, thresholds=np.array([0.5, 0.5, 0.9, 0.5]))
    assert shifted["per_class"][2]["recall"] < base["per_class"][2]["recall"]
    assert shifted["f1_macro"] != base["f1_macro"]
    for c in (0, 1, 3):
        assert shifted["per_class"][c]["f1"] == base["per_class"][c]["f1"]
    assert shifted["auroc_macro"] == base["auroc_macro"]  # threshold-free


def test_multilabel_undefined_classes_are_skipped():
    logits, t = _multilabel_data(seed=4)
    t[:, 1] = 0  # no positives
    t[:, 2] = 1  # no negatives
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = multilabel_metrics(logits, t)
    probs = 1 / (1 + np.exp(-logits))
    assert math.isnan(m["per_class"][1]["auroc"]) and math.isnan(m["per_class"][2]["ap"])
    assert m["auroc_macro"] == pytest.approx(np.mean([_auroc_ranks(t[:, c], probs[:, c]) for c in (0, 3)]))
    allneg = multilabel_metrics(logits, np.zeros_like(t))
    assert all(math.isnan(allneg[k]) for k in ("auroc_micro", "auroc_macro", "ap_micro", "ap_macro"))
    with pytest.raises(ValueError, match="thresholds"):
        multilabel_metrics(logits, t, thresholds=np.full(3, 0.5))
    with pytest.raises(ValueError, match="targets"):
        multilabel_metrics(logits, t * 2)


# ---------------------------------------------------------------------------------------------------------------
# thresholds
# ---------------------------------------------------------------------------------------------------------------
def test_tune_thresholds_hand_case():
    probs = np.array([[0.9, 0.2], [0.8, 0.4], [0.7, 0.4], [0.6, 0.1], [0.3, 0.5]])
    targets = np.array([[1, 0], [0, 0], [1, 0], [1, 0], [0, 0]])
    # class 0, F1 per candidate: 0.9 -> 2/4, 0.8 -> 2/5, 0.7 -> 4/6, 0.6 -> 6/7, 0.3 -> 6/8; class 1 has no positive
    assert tune_thresholds(probs, targets, default=0.25).tolist() == [0.6, 0.25]
    # ties: a cut at 0.5 predicts all three tied rows (F1 4/7), never just the positive one (that would be 4/5);
    # 0.9 -> 2/4, 0.1 -> 6/8 wins
    tied = tune_thresholds(np.array([[0.9], [0.5], [0.5], [0.5], [0.1]]), np.array([[1], [1], [0], [0], [1]]))
    assert tied.tolist() == [0.1]


def test_tune_thresholds_beats_fine_grid_and_equals_exhaustive_search():
    rng = np.random.default_rng(5)
    n, k = 200, 5
    targets = (rng.random((n, k)) < 0.3).astype(int)
    probs = np.clip(rng.random((n, k)) * 0.7 + 0.3 * targets, 0, 1).round(2)  # rounding creates ties
    thr = tune_thresholds(probs, targets)
    grid = np.linspace(0, 1, 2001)
    for c in range(k):
        tuned = _f1_at(probs[:, c], targets[:, c], thr[c])
        assert tuned >= max(_f1_at(probs[:, c], targets[:, c], g) for g in grid) - 1e-12
        assert tuned == pytest.approx(max(_f1_at(probs[:, c], targets[:, c], v) for v in np.unique(probs[:, c])))
        assert thr[c] in probs[:, c]


# ---------------------------------------------------------------------------------------------------------------
# pretraining
# ---------------------------------------------------------------------------------------------------------------
def _sums(objective, pred, target, mask):
    return {k: float(v.sum()) for k, v in objective_loss(objective, pred, target, mask)[1].items()}


def test_pretrain_metrics_against_direct_computation():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 7, 6, generator=g), torch.randn(3, 7, 6, generator=g)
    mask = torch.rand(3, 7, generator=g) < 0.5
    mask[1, :3] = True
    p, t, mk = pred.double().numpy(), target.double().numpy(), mask.numpy()

    # original: the loss is the plain masked MSE over all P numbers
    m = pretrain_metrics(_sums("original", pred, target, mask), "original")
    err = (p - t)[mk]
    assert m["loss"] == m["mse"] == pytest.approx((err ** 2).mean())
    centred = t[mk] - t[mk].mean(-1, keepdims=True)
    assert m["shape_nmse"] == pytest.approx((err ** 2).sum() / (centred ** 2).sum())

    # bands: the last number is the log-RMS, scored against its variance over the masked tokens
    m = pretrain_metrics(_sums("bands", pred, target, mask), "bands")
    err = (p - t)[mk]
    centred = t[mk][:, :5] - t[mk][:, :5].mean(-1, keepdims=True)
    shape = (err[:, :5] ** 2).sum() / (centred ** 2).sum()
    energy = (err[:, 5] ** 2).mean() / t[mk][:, 5].var()
    assert m["shape_nmse"] == pytest.approx(shape)
    assert m["energy_nmse"] == pytest.approx(energy)
    assert m["loss"] == pytest.approx(shape + energy)
    loss, _ = objective_loss("bands", pred, target, mask)
    assert loss.item() == pytest.approx(shape + energy, rel=1e-5)  # one batch: the training loss is the same number

    # sums over two half-batches give the whole-batch metrics (what an all-reduce relies on)
    halves = [_sums("bands", pred[s], target[s], mask[s]) for s in (slice(0, 1), slice(1, 3))]
    assert pretrain_metrics({k: halves[0][k] + halves[1][k] for k in halves[0]}, "bands") == pytest.approx(m)


def test_pretrain_metrics_units_and_empty_mask():
    g = torch.Generator().manual_seed(1)
    target = torch.randn(4, 9, 9, generator=g)
    mask = torch.ones(4, 9, dtype=torch.bool)
    # predicting each patch's mean shape and the mean log-RMS scores exactly 1.0 on each part
    pred = target.clone()
    pred[..., :8] = target[..., :8].mean(-1, keepdim=True)
    pred[..., 8] = target[..., 8].mean()
    m = pretrain_metrics(_sums("bands", pred, target, mask), "bands")
    assert m["shape_nmse"] == pytest.approx(1.0) and m["energy_nmse"] == pytest.approx(1.0)
    m = pretrain_metrics(_sums("bands", pred, target, torch.zeros(4, 9, dtype=torch.bool)), "bands")
    assert m == {"shape_nmse": 0.0, "energy_nmse": 0.0, "loss": 0.0}
