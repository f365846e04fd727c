"""What differs between the three scripts: batch → loss, per-sample evaluation outputs, metrics.

Loaders yield ``(index, x)`` (pretraining) or ``(index, (x, y))``. Every task returns, for evaluation, per-sample
arrays that the engine gathers across processes, so metrics are those of the whole set.
"""
from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import expit
from torch import nn

from .metrics import classification_metrics, multilabel_metrics, pretrain_metrics, tune_thresholds

__all__ = ["Task", "PretrainTask", "SingleLabelTask", "MultiLabelTask", "build_task", "LOWER_IS_BETTER"]

LOWER_IS_BETTER = {"loss", "hamming_loss", "rmse", "mae", "mse", "shape_nmse", "energy_nmse"}


class MaskedReconstruction(nn.Module):
    """``forward(x, generator)`` = ``model.pretrain_loss(x, …)`` with the run's masking settings, so DDP can wrap it."""

    def __init__(self, model: nn.Module, mask_ratio: float, masking: str, importance_ratio: float, detach_target: bool):
        super().__init__()
        self.model = model
        self.settings = dict(mask_ratio=mask_ratio, masking=masking, importance_ratio=importance_ratio, detach_target=detach_target)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        return self.model.pretrain_loss(x, generator=generator, **self.settings)


def _per_sample(sums: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """:meth:`PhysioWave.pretrain_loss` sums → per-sample arrays, ``band_rms`` ``[B, L+1]`` split into ``band_rms_<k>``."""
    out = {k: v.cpu().numpy() for k, v in sums.items() if k != "band_rms"}
    bands = sums["band_rms"].cpu().numpy()
    out.update({f"band_rms_{k}": bands[:, k] for k in range(bands.shape[1])})
    out["count"] = np.ones(len(bands))
    return out


class Task:
    """Interface. ``train_step`` → (loss, sums for logging); ``eval_step`` → per-sample arrays; ``metrics`` → dict."""

    name = "task"

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module trained (and DDP-wrapped): its ``forward`` is what ``train_step`` calls."""
        return model

    def train_step(self, model: nn.Module, batch: Any, generator: torch.Generator | None) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def eval_step(self, model: nn.Module, batch: Any, generator: torch.Generator | None) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def metrics(self, outputs: dict[str, np.ndarray], state: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def train_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        return {"loss": sums["loss_sum"] / max(sums["count"], 1.0)}


class PretrainTask(Task):
    """Masked reconstruction with the model's objective (:mod:`physiowave.models.objective`); metrics in normalised
    units, plus the RMS of each front-end band (``band_rms_<k>``: details of levels 1..L, then the approximation)."""

    name = "pretrain"

    def __init__(self, mask_ratio: float, masking: str, importance_ratio: float, detach_target: bool, objective: str):
        self.mask_ratio, self.masking = mask_ratio, masking
        self.importance_ratio, self.detach_target = importance_ratio, detach_target
        self.objective = objective

    def wrap(self, model: nn.Module) -> nn.Module:
        return MaskedReconstruction(model, self.mask_ratio, self.masking, self.importance_ratio, self.detach_target)

    def train_step(self, model, batch, generator):
        loss, sums = model(batch, generator)
        stats = {k: float(v.sum()) for k, v in _per_sample(sums).items()}
        return loss, {**stats, "loss_sum": loss.item() * batch.shape[0]}

    def train_metrics(self, sums):
        return pretrain_metrics(sums, self.objective)

    def eval_step(self, model, batch, generator):
        return _per_sample(model(batch, generator)[1])

    def metrics(self, outputs, state):
        return pretrain_metrics({k: float(v.sum()) for k, v in outputs.items()}, self.objective)


class SingleLabelTask(Task):
    """Softmax classification: cross-entropy with label smoothing and optional class weights."""

    name = "classification"

    def __init__(self, num_classes: int, label_smoothing: float = 0.0, class_weights: torch.Tensor | None = None,
                 class_names: list[str] | None = None):
        self.num_classes, self.label_smoothing = num_classes, label_smoothing
        self.class_weights, self.class_names = class_weights, class_names

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w = self.class_weights.to(logits.device) if self.class_weights is not None else None
        return F.cross_entropy(logits.float(), y, weight=w, label_smoothing=self.label_smoothing)

    def train_step(self, model, batch, generator):
        x, y = batch
        logits = model(x)
        loss = self.loss(logits, y)
        correct = (logits.argmax(-1) == y).sum().item()
        return loss, {"loss_sum": loss.item() * len(y), "count": float(len(y)), "correct": float(correct)}

    def train_metrics(self, sums):
        return {"loss": sums["loss_sum"] / max(sums["count"], 1.0), "acc": sums.get("correct", 0.0) / max(sums["count"], 1.0)}

    def eval_step(self, model, batch, generator):
        x, y = batch
        return {"logits": model(x).float().cpu().numpy(), "labels": y.cpu().numpy()}

    def metrics(self, outputs, state):
        logits, labels = outputs["logits"], outputs["labels"]
        loss = self.loss(torch.from_numpy(logits), torch.from_numpy(labels)).item()
        return {"loss": loss, **classification_metrics(logits, labels, self.class_names)}


class MultiLabelTask(Task):
    """Sigmoid per label: BCE with smoothed targets ``y·(1−s) + s/2`` and optional ``pos_weight``.

    Validation tunes one threshold per label (max F1); the test split applies them, and both the default-threshold
    and tuned-threshold metrics are reported.
    """

    name = "multilabel"

    def __init__(self, num_labels: int, label_smoothing: float = 0.0, pos_weight: torch.Tensor | None = None,
                 threshold: float = 0.5, class_names: list[str] | None = None):
        self.num_labels, self.label_smoothing, self.pos_weight = num_labels, label_smoothing, pos_weight
        self.threshold, self.class_names = threshold, class_names

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = y.float() * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        pw = self.pos_weight.to(logits.device) if self.pos_weight is not None else None
        return F.binary_cross_entropy_with_logits(logits.float(), target, pos_weight=pw)

    def train_step(self, model, batch, generator):
        x, y = batch
        loss = self.loss(model(x), y)
        return loss, {"loss_sum": loss.item() * len(y), "count": float(len(y))}

    def eval_step(self, model, batch, generator):
        x, y = batch
        return {"logits": model(x).float().cpu().numpy(), "labels": y.float().cpu().numpy()}

    def metrics(self, outputs, state):
        """``state["thresholds"]`` (from validation) is applied when present; otherwise they are tuned here."""
        logits, labels = outputs["logits"], outputs["labels"]
        loss = self.loss(torch.from_numpy(logits), torch.from_numpy(labels)).item()
        result = {"loss": loss, **multilabel_metrics(logits, labels, self.threshold, self.class_names)}
        thresholds = state.get("thresholds")
        if thresholds is None:
            thresholds = tune_thresholds(expit(logits), labels, self.threshold)
        result["thresholds"] = [float(t) for t in thresholds]
        tuned = multilabel_metrics(logits, labels, np.asarray(thresholds), self.class_names)
        result["tuned"] = tuned
        return result


def build_task(args: argparse.Namespace, num_classes: int | None, class_counts: np.ndarray | None,
               num_samples: int, class_names: list[str] | None, objective: str = "bands") -> Task:
    """The task of a parsed command line (``objective``: the pretraining model's, from its configuration)."""
    if args.task == "pretrain":
        return PretrainTask(args.mask_ratio, args.masking_strategy, args.importance_ratio, args.detach_target, objective)
    if args.task_type == "classification":
        weights = None
        if args.use_class_weights:
            counts = np.asarray(class_counts[:num_classes], dtype=np.float64)
            counts = np.pad(counts, (0, num_classes - len(counts)))
            weights = torch.tensor(np.where(counts > 0, num_samples / (num_classes * np.maximum(counts, 1)), 0.0), dtype=torch.float32)
        return SingleLabelTask(num_classes, args.label_smoothing, weights, class_names)
    pos_weight = None
    if args.use_class_weights:
        pos = np.asarray(class_counts, dtype=np.float64)
        pos_weight = torch.tensor((num_samples - pos) / np.maximum(pos, 1.0), dtype=torch.float32)
    return MultiLabelTask(num_classes, args.label_smoothing, pos_weight, args.threshold, class_names)
