"""``--label_fraction``: stratified, seeded, whole-record subsampling of the labelled training set."""
from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest

from physiowave.data.fractions import label_fraction_indices
from physiowave.engine import main
from physiowave.engine.args import parse_args
from physiowave.engine.data import open_datasets, split_indices
from physiowave.engine.tasks import build_task

TINY = ["--max_level", "1", "--wave_kernel_size", "4", "--wavelet_names", "db2", "--patch_size", "32", "--embed_dim",
        "16", "--depth", "1", "--num_heads", "2", "--num_workers", "0", "--device", "cpu"]


def _records(per_class: list[int], windows: int = 3, shuffle: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Labels [N] and string record ids [N]: ``per_class[c]`` records of class c, ``windows`` windows each,
    the windows of different records interleaved (so a record is not a contiguous block)."""
    labels, groups = [], []
    for c, n in enumerate(per_class):
        for r in range(n):
            labels += [c] * windows
            groups += [f"class{c}/rec{r}"] * windows
    order = np.random.default_rng(0).permutation(len(labels)) if shuffle else np.arange(len(labels))
    return np.asarray(labels)[order], np.asarray(groups)[order]


def _kept_records(groups: np.ndarray, keep: np.ndarray) -> set[str]:
    return set(groups[keep].tolist())


# ------------------------------------------------------------------------------------------------- selection
def test_single_label_stratification_is_exact_per_class():
    per_class = [10, 7, 3, 1, 0, 2]  # class 4 absent
    labels, groups = _records(per_class)
    for fraction in (0.25, 0.5, 0.1):
        keep = label_fraction_indices(labels, fraction, seed=0, groups=groups)
        kept = _kept_records(groups, keep)
        for c, n in enumerate(per_class):
            expected = max(1, math.floor(fraction * n + 0.5)) if n else 0  # round half up, ≥ 1 per present class
            assert sum(g.startswith(f"class{c}/") for g in kept) == expected, (fraction, c)
        assert np.all(np.diff(keep) > 0) and keep.dtype == np.int64


def test_same_seed_same_subset_other_seed_other_subset():
    labels, groups = _records([12, 12, 12])
    a = label_fraction_indices(labels, 0.25, seed=3, groups=groups)
    assert np.array_equal(a, label_fraction_indices(labels, 0.25, seed=3, groups=groups))
    assert not np.array_equal(a, label_fraction_indices(labels, 0.25, seed=4, groups=groups))
    # nested: for one seed, a smaller fraction keeps a subset of a larger one's records
    assert set(a.tolist()) <= set(label_fraction_indices(labels, 0.5, seed=3, groups=groups).tolist())


def test_whole_records_are_kept_or_dropped():
    labels, groups = _records([9, 6, 5], windows=5)
    for seed in range(5):
        keep = label_fraction_indices(labels, 0.3, seed=seed, groups=groups)
        kept = np.zeros(len(labels), dtype=bool)
        kept[keep] = True
        for g in np.unique(groups):
            assert len(set(kept[groups == g].tolist())) == 1, f"record {g} split (seed {seed})"


def test_fraction_one_keeps_everything_and_no_groups_means_by_sample():
    labels, groups = _records([4, 3])
    assert np.array_equal(label_fraction_indices(labels, 1.0, seed=0, groups=groups), np.arange(len(labels)))
    y = np.repeat([0, 1], [40, 8])
    keep = label_fraction_indices(y, 0.25, seed=0)
    assert np.bincount(y[keep]).tolist() == [10, 2]
    with pytest.raises(ValueError, match="fraction"):
        label_fraction_indices(y, 0.0, seed=0)


def test_multilabel_keeps_every_label_and_about_the_fraction():
    rng = np.random.default_rng(1)
    Y = (rng.random((80, 6)) < [0.5, 0.3, 0.2, 0.1, 0.03, 0.0]).astype(np.float32)
    Y[0, 4] = 1  # label 4: at least one positive, rare; label 5: none
    groups = np.repeat(np.arange(40), 2)  # 2 windows per record; a record's labels = union of its windows
    for seed in range(4):
        keep = label_fraction_indices(Y, 0.2, seed=seed, groups=groups)
        records = np.unique(groups[keep])
        assert 8 <= len(records) <= 8 + 6  # round(0.2 · 40), plus at most one record per uncovered label
        assert np.array_equal(np.isin(groups, records), np.isin(np.arange(80), keep))
        assert (Y[keep].sum(0) > 0).tolist() == [True] * 5 + [False]


# ------------------------------------------------------------------------------------------------- flags
@pytest.mark.parametrize("task", ["finetune", "multilabel"])
@pytest.mark.parametrize("value", ["0", "-0.5", "1.5", "nan"])
def test_invalid_fraction_is_a_one_line_error(task, value, capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(task, ["--train_file", "x.h5", "--val_file", "v.h5", "--label_fraction", value])
    assert e.value.code == 1
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 1 and "--label_fraction" in err[0] and "(0, 1]" in err[0], err


def test_pretraining_has_no_label_fraction(capsys):
    with pytest.raises(SystemExit):
        parse_args("pretrain", ["--train_files", "x.h5", "--label_fraction", "0.5"])
    assert "unrecognized arguments: --label_fraction" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """train.h5: 40 records × 4 windows (record_id as the preprocess writer stores it), classes of 20/12/8 records;
    test.h5: 12 windows without record ids."""
    d = tmp_path_factory.mktemp("frac")
    labels, groups = _records([20, 12, 8], windows=4)
    rng = np.random.default_rng(0)
    t = np.arange(64) / 32
    out = {}
    for name, y, ids in (("train", labels, groups), ("test", np.arange(12) % 3, None)):
        x = rng.normal(0, 0.3, (len(y), 2, 64)) + np.sin(2 * np.pi * (y[:, None, None] + 1) * t)
        with h5py.File(d / f"{name}.h5", "w") as f:
            f["data"] = x.astype(np.float32)
            f["label"] = y.astype(np.int64)
            if ids is not None:
                f.create_dataset("record_id", data=ids.astype(object), dtype=h5py.string_dtype())
        out[name] = str(d / f"{name}.h5")
    out["labels"], out["groups"] = labels, groups
    return out


def test_open_datasets_carves_validation_first_then_subsamples(files):
    args = parse_args("finetune",
                      ["--train_file", files["train"], "--label_fraction", "0.25", "--val_split_ratio", "0.2",
                                   "--seed", "7", *TINY])
    data = open_datasets(args, build_task(args))
    labels, groups = files["labels"], files["groups"]
    tr, va = split_indices(len(labels), 0.2, 7, groups)
    expected = tr[label_fraction_indices(labels[tr], 0.25, 7, groups[tr])]
    assert np.array_equal(data["train"].indices, expected)
    assert np.array_equal(data["val"].indices, va)  # validation untouched by the fraction
    assert not set(groups[expected]) & set(groups[va])
    info = data["info"]
    assert info["train_samples"] == len(expected)
    assert info["class_counts"] == np.bincount(labels[expected], minlength=3).tolist()
    assert info["label_fraction"] == {"fraction": 0.25, "by": "record_id",
                                      "samples": {"kept": len(expected), "of": len(tr)},
                                      "records": {"kept": len(set(groups[expected])), "of": len(set(groups[tr]))},
                                      "chosen": sorted(set(groups[expected]))}


def test_finetune_run_trains_on_the_fraction(files, tmp_path):
    out = tmp_path / "ft"
    assert main("finetune", ["--train_file", files["train"], "--test_file", files["test"], "--label_fraction", "0.25",
                             "--val_split_ratio", "0", "--epochs", "1", "--batch_size", "8", "--seed", "1",
                             "--output_dir", str(out), *TINY]) == 0
    data = json.loads((out / "args.json").read_text())["data"]
    # 20/12/8 records → 5/3/2 records of 4 windows
    assert data["label_fraction"]["records"] == {"kept": 10, "of": 40}
    assert data["train_samples"] == 40 and data["class_counts"] == [20, 12, 8]
    assert json.loads((out / "training_history.json").read_text())["epoch"] == [1]
    assert sum(map(sum, json.loads((out / "test_results.json").read_text())["confusion_matrix"])) == 12
