"""Record-level evaluation: window probabilities aggregated per record_id, metrics against a hand computation, and
what a fine-tuning run writes (record metrics in test_results.json, test_records.npz, label_fraction.json)."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.special import expit, softmax
from sklearn.metrics import roc_auc_score

from physiowave.engine import main
from physiowave.engine.args import parse_args
from physiowave.engine.metrics import aggregate_records, record_labels
from physiowave.engine.tasks import build_task

from .test_engine import TINY, _toy


def test_aggregation_by_record_mean_and_max() -> None:
    ids = np.array(["r2", "r1", "r2", "r3", "r1"])
    p = np.array([[0.2, 0.8], [0.6, 0.4], [0.4, 0.6], [0.9, 0.1], [0.2, 0.8]])
    order, mean = aggregate_records(ids, p, "mean")
    assert order.tolist() == ["r2", "r1", "r3"]
    np.testing.assert_allclose(mean, [[0.3, 0.7], [0.4, 0.6], [0.9, 0.1]])
    np.testing.assert_allclose(aggregate_records(ids, p, "max")[1], [[0.4, 0.8], [0.6, 0.8], [0.9, 0.1]])
    assert record_labels(ids, np.array([1, 0, 1, 2, 0])).tolist() == [1, 0, 2]
    multi = np.array([[0, 1], [1, 0], [1, 0], [0, 0], [0, 0]], dtype=np.float32)
    np.testing.assert_array_equal(record_labels(ids, multi), [[1, 1], [1, 0], [0, 0]])  # the union of its windows


def test_multilabel_record_metrics_equal_a_hand_computation() -> None:
    args = parse_args("multilabel", ["--train_file", "x.h5", "--val_file", "v.h5", "--threshold", "0.5"])
    task = build_task(args)
    task.class_names, task.threshold = ["a", "b"], 0.5
    logits = np.array([[2.0, -1.0], [0.0, -3.0], [-2.0, 1.0], [-1.0, 2.0], [1.0, 1.0], [3.0, 0.0]])
    labels = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [1, 1], [1, 1]], dtype=np.float32)
    ids = np.array(["A", "A", "B", "B", "C", "D"])
    result, arrays = task.record_metrics({"logits": logits, "labels": labels}, ids, "mean",
                                         {"record_thresholds": [0.5, 0.5]})
    p = expit(logits)
    probs = np.array([p[:2].mean(0), p[2:4].mean(0), p[4], p[5]])  # by hand: records A, B, C, D
    y = np.array([[1, 0], [0, 1], [1, 1], [1, 1]])
    np.testing.assert_allclose(arrays["probs"], probs)
    np.testing.assert_array_equal(arrays["labels"], y)
    assert arrays["record_id"].tolist() == ["A", "B", "C", "D"] and result["records"] == 4
    hand = np.mean([roc_auc_score(y[:, k], probs[:, k]) for k in range(2)])
    assert result["auroc_macro"] == pytest.approx(hand)
    assert result["auroc_micro"] == pytest.approx(roc_auc_score(y.ravel(), probs.ravel()))
    pred = probs >= 0.5
    f1 = [2 * (pred[:, k] & (y[:, k] == 1)).sum() / (pred[:, k].sum() + y[:, k].sum()) for k in range(2)]
    assert result["tuned"]["f1_macro"] == pytest.approx(np.mean(f1)) == result["f1_macro_tuned"]
    assert [c["auroc"] for c in result["per_class"]] == pytest.approx([roc_auc_score(y[:, k],
                                                                                     probs[:, k]) for k in range(2)])


def test_single_label_record_metrics_equal_a_hand_computation() -> None:
    task = build_task(parse_args("finetune", ["--train_file", "x.h5"]))
    task.class_names = None
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [0.0, 2.0, 1.0], [1.0, 0.0, 0.0]])
    labels = np.array([0, 0, 2, 1, 1])
    ids = np.array(["A", "A", "B", "C", "C"])
    result, arrays = task.record_metrics({"logits": logits, "labels": labels}, ids, "mean", {})
    p = softmax(logits, axis=1)
    probs = np.array([p[:2].mean(0), p[2], p[3:].mean(0)])
    np.testing.assert_allclose(arrays["probs"], probs)
    assert arrays["labels"].tolist() == [0, 2, 1]
    y, pred = np.array([0, 2, 1]), probs.argmax(1)
    assert result["acc"] == pytest.approx(np.mean(pred == y))
    assert result["confusion_matrix"] == [[int(((y == i) & (pred == j)).sum()) for j in range(3)] for i in range(3)]
    assert result["auroc"] == pytest.approx(np.mean([roc_auc_score(y == k, probs[:, k]) for k in range(3)]))


def _write(path: Path, x: np.ndarray, y: np.ndarray, records: list[str]) -> str:
    with h5py.File(path, "w") as f:
        f["data"], f["label"] = x, y
        f.create_dataset("record_id", data=np.array(records, dtype=object), dtype=h5py.string_dtype())
    return str(path)


def test_a_finetuning_run_reports_and_writes_record_level_results(tmp_path: Path) -> None:
    def split(n_records: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        x, y = _toy(n_records * 3, seed)
        y = np.repeat(y[::3], 3)  # 3 windows per record, one class each
        x, _ = _toy(n_records * 3, seed)
        return x, y, [f"s{seed}r{i // 3}" for i in range(n_records * 3)]

    files = {name: _write(tmp_path / f"{name}.h5", *split(n, seed)) for name, n, seed in
             (("train", 20, 0), ("val", 8, 1), ("test", 10, 2))}
    out = tmp_path / "ft"
    assert main("finetune", ["--train_file", files["train"], "--val_file", files["val"], "--test_file", files["test"],
                             "--epochs", "1", "--batch_size", "8", "--label_fraction", "0.5", "--aggregate", "max",
                             "--output_dir", str(out), *TINY]) == 0
    test = json.loads((out / "test_results.json").read_text())
    assert test["record"]["records"] == 10 and test["record"]["aggregate"] == "max" and "auroc" in test["record"]
    rec = np.load(out / "test_records.npz")
    assert rec["probs"].shape == (10, 3) and len(set(rec["record_id"].tolist())) == 10
    history = json.loads((out / "training_history.json").read_text())
    assert "val_record_acc" in history
    chosen = json.loads((out / "label_fraction.json").read_text())
    assert chosen["by"] == "record_id" and len(chosen["chosen"]) == chosen["records"]["kept"] < 20
    assert "chosen" not in json.loads((out / "args.json").read_text())["data"]["label_fraction"]


def test_record_level_metrics_select_the_best_model(tmp_path: Path, capsys) -> None:
    from physiowave.checkpoint import read_checkpoint

    x, y = _toy(30, 0)
    y = np.repeat(y[::3], 3)
    records = [f"r{i // 3}" for i in range(30)]
    train = _write(tmp_path / "train.h5", x, y, records)
    val = _write(tmp_path / "val.h5", *_toy(12, 1)[:1], np.repeat(_toy(12, 1)[1][::3], 3),
                 [f"v{i // 3}" for i in range(12)])
    out = tmp_path / "sel"
    argv = ["--train_file", train, "--val_file", val, "--epochs", "2", "--batch_size", "8", *TINY]
    assert main("finetune", [*argv, "--select_metric", "record_auroc", "--output_dir", str(out)]) == 0
    history = json.loads((out / "training_history.json").read_text())
    best = read_checkpoint(out / "best_model.pth")
    assert best["best"]["metric"] == "record_auroc"
    assert best["best"]["value"] == max(v for v in history["val_record_auroc"] if v == v)
    capsys.readouterr()
    assert main("finetune", [*argv, "--select_metric", "record_bogus", "--output_dir", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "record_auroc" in err and "record_macro_f1" in err  # the choices include the record-level metrics
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["data"], f["label"] = x, y
    assert main("finetune", ["--train_file", train, "--val_file", str(plain), "--epochs", "1", *TINY,
                             "--select_metric", "record_auroc", "--output_dir", str(tmp_path / "y")]) == 1
