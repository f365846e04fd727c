"""Seeded train/val/test assignment at group (patient, subject, record) level, stratified where labels allow."""
from __future__ import annotations

from collections import Counter

import numpy as np
from sklearn.model_selection import train_test_split

__all__ = ["split_groups", "group_strata"]


def group_strata(labels: list) -> str:
    """A stratum key for one group's label(s): an int class, a multi-hot vector or a list of them.

    The key is the sorted set of positive classes (label combination); :func:`split_groups` pools
    combinations too rare to split."""
    pos: set[int] = set()
    for lab in labels:
        a = np.asarray(lab)
        pos.update(np.flatnonzero(a > 0.5).tolist() if a.ndim else [int(a)])
    return ",".join(map(str, sorted(pos)))


def _stratify(keys: list[str], n_min: int) -> list[str] | None:
    """Strata with fewer than ``n_min`` members are pooled into one; None when that leaves nothing to stratify."""
    counts = Counter(keys)
    pooled = [k if counts[k] >= n_min else "~rare" for k in keys]
    c2 = Counter(pooled)
    if len(c2) < 2 or min(c2.values()) < n_min:
        return None
    return pooled


def split_groups(groups: list[str], fractions: dict[str, float], seed: int,
                 strata: dict[str, str] | None = None) -> dict[str, str]:
    """Assign each distinct group to a split, e.g. ``fractions={"train": .7, "val": .2, "test": .1}``.

    The split is drawn over groups, never over windows or records of one group, with sklearn's
    ``train_test_split`` (seeded; stratified on ``strata[group]`` where every stratum has enough groups,
    plain random otherwise). Returns ``{group: split}``."""
    uniq = sorted(set(groups))
    names = [n for n, f in fractions.items() if f > 0]
    if not uniq or not names:
        return {}
    total = sum(fractions[n] for n in names)
    assign: dict[str, str] = {}
    rest = uniq
    remaining = 1.0
    for i, name in enumerate(names[:-1]):
        frac = fractions[name] / total / remaining
        remaining -= fractions[name] / total
        n_take = int(round(frac * len(rest)))
        if n_take <= 0 or len(rest) < 2:
            continue
        if n_take >= len(rest):
            assign.update({g: name for g in rest})
            rest = []
            break
        keys = None if strata is None else _stratify([strata[g] for g in rest], 2)
        try:
            take, rest = train_test_split(rest, train_size=n_take, random_state=seed + i, shuffle=True,
                                          stratify=keys)
        except ValueError:  # a stratum too small for the requested sizes: fall back to a plain split
            take, rest = train_test_split(rest, train_size=n_take, random_state=seed + i, shuffle=True)
        assign.update({g: name for g in take})
    assign.update({g: names[-1] for g in rest})
    return assign
