"""Label-fraction sampling: which labelled training samples a ``--label_fraction`` run keeps.

Whole records (``record_id`` groups) are kept or dropped, so the windows of one recording never split, and the
draw is stratified by label, seeded, and nested: for one seed, the records kept at a fraction are a subset of
those kept at any larger fraction (each stratum's records are taken from one seeded permutation).
"""
from __future__ import annotations

import numpy as np

__all__ = ["label_fraction_indices"]

_SALT = 0x1ABE1F  # a stream of its own: the same --seed also draws the validation split (split_indices)


def label_fraction_indices(labels: np.ndarray, fraction: float, seed: int,
                           groups: np.ndarray | None = None) -> np.ndarray:
    """Sorted indices of the samples kept when training on ``fraction`` of the labelled records.

    Args:
        labels: ``[N]`` integer class indices (single-label), or ``[N, K]`` multi-hot 0/1 (multi-label).
        fraction: in (0, 1]; 1.0 keeps every sample.
        seed: the run's ``--seed``; the same seed gives the same subset.
        groups: ``[N]`` record id of each sample (any comparable dtype, e.g. str), or None: each sample is its
            own record.

    Returns:
        int64 ``[M]``, sorted, ``M ≤ N``: every sample of each kept record.

    A record's label is the most frequent class of its windows (single-label; ties → the smaller class) or
    the union of its windows' positive labels (multi-label).

    Single-label: per class, ``round(fraction · records of that class)`` records (rounded half up), at least 1.
    Multi-label: records are stratified by their label set (the tuple of positive labels); the total
    ``round(fraction · records)`` is shared between label sets by largest remainder (ties drawn at random), then
    for every label with positives but no kept positive record (rarest label first) one random record holding it
    is added, so the subset can exceed the rounded total by at most K records.
    """
    labels = np.asarray(labels)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if labels.ndim not in (1, 2):
        raise ValueError(f"labels must be [N] or [N, K], got shape {labels.shape}")
    n = len(labels)
    if groups is not None and len(groups) != n:
        raise ValueError(f"groups has {len(groups)} entries for {n} labels")
    if fraction == 1.0 or n == 0:
        return np.arange(n, dtype=np.int64)
    if groups is None:
        inverse, n_records = np.arange(n), n
    else:
        _, inverse = np.unique(np.asarray(groups), return_inverse=True)
        inverse = inverse.reshape(-1)
        n_records = int(inverse.max()) + 1
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) % 2**63, _SALT]))
    if labels.ndim == 1:
        kept = _single(_record_majority(labels.astype(np.int64), inverse, n_records), fraction, rng)
    else:
        kept = _multi(_record_union(labels > 0.5, inverse, n_records), fraction, rng)
    keep = np.zeros(n_records, dtype=bool)
    keep[kept] = True
    return np.flatnonzero(keep[inverse]).astype(np.int64)


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5 + 1e-9))


def _record_majority(labels: np.ndarray, inverse: np.ndarray, n_records: int) -> np.ndarray:
    """``[R]`` most frequent class of each record's samples."""
    counts = np.zeros((n_records, int(labels.max()) + 1), dtype=np.int64)
    np.add.at(counts, (inverse, labels), 1)
    return counts.argmax(1)


def _record_union(positive: np.ndarray, inverse: np.ndarray, n_records: int) -> np.ndarray:
    """``[R, K]`` bool: labels positive in any sample of the record."""
    out = np.zeros((n_records, positive.shape[1]), dtype=bool)
    np.logical_or.at(out, inverse, positive)
    return out


def _single(record_class: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    kept = []
    for c in np.unique(record_class):
        members = rng.permutation(np.flatnonzero(record_class == c))
        kept.append(members[: max(1, _round_half_up(fraction * len(members)))])
    return np.concatenate(kept)


def _multi(record_labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    n_records = len(record_labels)
    _, stratum = np.unique(record_labels, axis=0, return_inverse=True)
    stratum = stratum.reshape(-1)
    members = [rng.permutation(np.flatnonzero(stratum == s)) for s in range(int(stratum.max()) + 1)]
    exact = np.array([fraction * len(m) for m in members])
    take = np.floor(exact + 1e-9).astype(np.int64)
    extra = _round_half_up(fraction * n_records) - int(take.sum())
    if extra > 0:
        tiebreak = rng.random(len(members))
        order = np.lexsort((tiebreak, -(exact - take)))  # largest remainder first, random among equal ones
        take[order[:extra]] += 1
    chosen = np.zeros(n_records, dtype=bool)
    for m, k in zip(members, take):
        chosen[m[:k]] = True
    for label in np.argsort(record_labels.sum(0), kind="stable"):  # rarest label first
        holders = np.flatnonzero(record_labels[:, label])
        if len(holders) and not chosen[holders].any():
            chosen[rng.choice(holders)] = True
    return np.flatnonzero(chosen)
