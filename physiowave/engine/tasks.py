"""Everything that differs between the three scripts, one class per task.

A task knows its labels (``label_kind``), its optimizer betas and checkpoint name, the model settings it needs
(pretraining decoder, classification head), which parameters it never trains, how a batch becomes a loss, which
per-sample arrays evaluation gathers, the metrics they give, and the figures it logs. :func:`build_task` is the
only place that reads ``args.task``.

Loaders yield ``(index, x)`` (pretraining) or ``(index, (x, y))``; evaluation outputs are per-sample arrays that the
engine gathers across processes, so metrics are those of the whole set.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import expit, softmax
from torch import nn

from ..models import FusionModel, PhysioWave
from ..fileio import scalars_of
from .config import RunConfig
from .logger import RunLogger
from .metrics import (aggregate_records, classification_metrics, multilabel_metrics, pretrain_metrics, record_labels,
                      tune_thresholds)

__all__ = ["Task", "PretrainTask", "SingleLabelTask", "MultiLabelTask", "build_task", "LOWER_IS_BETTER"]

LOWER_IS_BETTER = {"loss", "hamming_loss", "rmse", "mae", "mse", "shape_nmse", "energy_nmse"}


class MaskedReconstruction(nn.Module):
    """``forward(x, generator)`` = ``model.pretrain_loss(x, …)`` with the run's masking settings, so DDP can wrap it."""

    def __init__(self, model: nn.Module, mask_ratio: float, masking: str, importance_ratio: float, detach_target: bool):
        super().__init__()
        self.model = model
        self.settings = dict(mask_ratio=mask_ratio, masking=masking, importance_ratio=importance_ratio,
                             detach_target=detach_target)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        return self.model.pretrain_loss(x, generator=generator, **self.settings)


def _per_sample(sums: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """:meth:`PhysioWave.pretrain_loss` sums → per-sample arrays, ``band_rms`` ``[B, L+1]`` split into
    ``band_rms_<k>``."""
    out = {k: v.cpu().numpy() for k, v in sums.items() if k != "band_rms"}
    bands = sums["band_rms"].cpu().numpy()
    out.update({f"band_rms_{k}": bands[:, k] for k in range(bands.shape[1])})
    out["count"] = np.ones(len(bands))
    return out


def _branches(model: PhysioWave | FusionModel) -> dict[str, PhysioWave]:
    """The encoders of a model with their parameter-name prefixes."""
    if isinstance(model, FusionModel):
        return {f"branches.{name}.": branch for name, branch in model.branches.items()}
    return {"": model}


class Task:
    """Interface and the settings shared by the classification tasks."""

    kind = "task"              # stored in checkpoints: which script can continue them
    label_kind = "none"        # "none" | "single" | "multi"
    betas = (0.9, 0.999)
    latest_name = "latest_model.pth"
    model_defaults: dict[str, Any] = {}

    def __init__(self, args: RunConfig):
        self.class_names: list[str] | None = None
        self.num_classes: int | None = None

    def attach(self, info: dict[str, Any], num_classes: int | None, model: nn.Module) -> None:
        """Data- and model-dependent settings (class weights, class names), once both are known."""

    def head_config(self, num_classes: int, embed_dim: int) -> dict[str, Any]:
        """The model's head settings for this task (none for pretraining)."""
        return {}

    def frozen_parameters(self, model: PhysioWave | FusionModel) -> list[str]:
        """Parameters that never get a gradient in this task; frozen so DDP needs no ``find_unused_parameters``."""
        names = []
        for prefix, branch in _branches(model).items():
            unused = set(branch.unused_parameter_names()) | set(self._unused(branch))
            names += [prefix + n for n, _ in branch.named_parameters() if n in unused]
        return sorted(names)

    def _unused(self, model: PhysioWave) -> list[str]:
        """Classification: the reconstruction head and mask token are kept (checkpoint keys) but unused."""
        return [n for n, _ in model.named_parameters() if n.startswith("task_heads.pretrain.") or n == "mask_token"]

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module trained (and DDP-wrapped): its ``forward`` is what ``train_step`` calls."""
        return model

    def train_step(self, model: nn.Module, batch: Any,
                   generator: torch.Generator | None) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def train_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        return {"loss": sums["loss_sum"] / max(sums["count"], 1.0)}

    def eval_step(self, model: nn.Module, batch: Any, generator: torch.Generator | None) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def metrics(self, outputs: dict[str, np.ndarray], state: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def metric_names(self, validation: bool) -> set[str]:
        """Scalar metrics that ``--select_metric`` can name: validation metrics, or training metrics without them."""
        raise NotImplementedError

    def checkpoint_entries(self, val: dict[str, Any]) -> dict[str, Any]:
        """What a checkpoint stores beside the weights from the validation metrics (thresholds, val_<metric>)."""
        entries: dict[str, Any] = {f"val_{k}": v for k, v in scalars_of(val).items()}
        entries["val_metrics"] = val
        if "thresholds" in val:
            entries["thresholds"] = val["thresholds"]
        if "thresholds" in (val.get("record") or {}):
            entries["record_thresholds"] = val["record"]["thresholds"]
        return entries

    def log_figures(self, logger: RunLogger, model: nn.Module, val: dict[str, Any], sample: torch.Tensor,
                    step: int) -> None:
        """TensorBoard figures after an epoch (``sample``: one validation input ``[1, C, T]``)."""


class PretrainTask(Task):
    """Masked reconstruction with the model's objective (:mod:`physiowave.models.objective`); metrics in normalised
    units, plus the RMS of each front-end band (``band_rms_<k>``: details of levels 1..L, then the approximation)."""

    kind = "pretrain"
    betas = (0.9, 0.95)
    latest_name = "latest_checkpoint.pth"
    model_defaults = {"decoder": "transformer"}

    def __init__(self, args: RunConfig):
        super().__init__(args)
        self.mask_ratio, self.masking = args.mask_ratio, args.masking_strategy
        self.importance_ratio, self.detach_target = args.importance_ratio, args.detach_target
        self.objective, self.levels = "bands", 0

    def attach(self, info, num_classes, model):
        self.objective, self.levels = model.config["objective"], model.config["max_level"]

    def _unused(self, model):
        return []

    def wrap(self, model):
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

    def metric_names(self, validation):
        bands = {f"band_rms_{k}": 1.0 for k in range(self.levels + 1)}
        return set(pretrain_metrics(bands, self.objective)) | ({"samples_per_sec"} if not validation else set())

    def checkpoint_entries(self, val):
        return {}

    def log_figures(self, logger, model, val, sample, step):
        from .. import figures
        from ..models import introspect

        model.eval()
        target, pred, mask = introspect.masked_reconstruction(model, sample, self.mask_ratio, self.masking,
                                                              self.importance_ratio, seed=0)
        bands = introspect.band_names(model.config["max_level"])
        logger.figure("pretrain/reconstruction", lambda: figures.masked_reconstruction(
            target[0, 0], pred[0, 0], mask[0, 0], model.patch_size, bands), step)
        logger.figure("pretrain/wavelet_filters", lambda: figures.wavelet_filters(*introspect.learned_filters(model)),
                      step)


class _Classification(Task):
    """Head settings and class-balance weights shared by the two classification tasks."""

    def __init__(self, args: RunConfig):
        super().__init__(args)
        self.label_smoothing, self.use_class_weights = args.label_smoothing, args.use_class_weights
        self.head = dict(head_hidden_dim=args.head_hidden_dim, head_dropout=args.head_dropout, pooling=args.pooling)
        self.linear_probe = args.freeze_encoder and (args.probe or "linear") == "linear"
        self.hidden_factor = args.hidden_factor

    def head_config(self, num_classes, embed_dim):
        hidden: Any = self.head["head_hidden_dim"]
        if self.linear_probe:
            hidden = []  # LayerNorm + Linear
        elif hidden is None and self.hidden_factor:
            hidden = self.hidden_factor * embed_dim
        return {**self.head, "num_classes": num_classes, "head_hidden_dim": hidden}

    def attach(self, info, num_classes, model):
        self.num_classes, self.class_names = num_classes, info.get("class_names")
        counts = np.asarray(info.get("class_counts", []), dtype=np.float64)
        self.weights = self._class_weights(counts, info["train_samples"]) if self.use_class_weights else None

    def _class_weights(self, counts: np.ndarray, n: int) -> torch.Tensor:
        raise NotImplementedError

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def record_metrics(self, outputs: dict[str, np.ndarray], record_ids: np.ndarray, how: str,
                       state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Window outputs → one probability row per record (the ``how`` = mean or max of its windows'
        probabilities) → (record-level metrics, the arrays ``record_id``, ``probs`` [R, K], ``labels``)."""
        ids, probs = aggregate_records(record_ids, self.probabilities(outputs["logits"]), how)
        labels = record_labels(record_ids, outputs["labels"])
        return {"records": len(ids), "aggregate": how, **self._record_scores(probs, labels, state)}, \
            {"record_id": ids.astype(str), "probs": probs, "labels": labels}

    def _record_scores(self, probs: np.ndarray, labels: np.ndarray, state: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def record_metric_names(self) -> set[str]:
        """The scalar record-level metrics (``--select_metric record_<name>``), read off a small example."""
        k = self.num_classes
        probs = np.full((k, k), 0.5 / k) + 0.5 * np.eye(k)
        labels = np.arange(k) if self.label_kind == "single" else np.eye(k, dtype=np.float32)
        return set(scalars_of(self._record_scores(probs, labels, {})))

    def _weight(self, device: torch.device) -> torch.Tensor | None:
        return self.weights.to(device) if self.weights is not None else None


class SingleLabelTask(_Classification):
    """Softmax classification: cross-entropy with label smoothing and optional inverse-frequency class weights."""

    kind = "classification"
    label_kind = "single"

    def _class_weights(self, counts, n):
        k = self.num_classes
        counts = np.pad(counts[:k], (0, k - len(counts[:k])))
        return torch.tensor(np.where(counts > 0, n / (k * np.maximum(counts, 1)), 0.0), dtype=torch.float32)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), y, weight=self._weight(logits.device),
                               label_smoothing=self.label_smoothing)

    def probabilities(self, logits):
        return softmax(logits.astype(np.float64), axis=1)

    def _record_scores(self, probs, labels, state):
        # the log of a probability row is a logit row whose softmax gives it back (rows of max-aggregated
        # probabilities are renormalised: the ranking within a record is kept)
        return classification_metrics(np.log(np.clip(probs, 1e-300, None)), labels, self.class_names)

    def train_step(self, model, batch, generator):
        x, y = batch
        logits = model(x)
        loss = self.loss(logits, y)
        correct = (logits.argmax(-1) == y).sum().item()
        return loss, {"loss_sum": loss.item() * len(y), "count": float(len(y)), "correct": float(correct)}

    def train_metrics(self, sums):
        return {"loss": sums["loss_sum"] / max(sums["count"], 1.0),
                "acc": sums.get("correct", 0.0) / max(sums["count"], 1.0)}

    def eval_step(self, model, batch, generator):
        x, y = batch
        return {"logits": model(x).float().cpu().numpy(), "labels": y.cpu().numpy()}

    def metrics(self, outputs, state):
        logits, labels = outputs["logits"], outputs["labels"]
        loss = self.loss(torch.from_numpy(logits), torch.from_numpy(labels)).item()
        return {"loss": loss, **classification_metrics(logits, labels, self.class_names)}

    def metric_names(self, validation):
        if not validation:
            return {"loss", "acc", "samples_per_sec"}
        k = self.num_classes
        return {"loss"} | set(scalars_of(classification_metrics(np.zeros((k, k)), np.arange(k))))

    def log_figures(self, logger, model, val, sample, step):
        if "confusion_matrix" in val:
            from .. import figures

            matrix = np.asarray(val["confusion_matrix"])
            names = self.class_names or [str(i) for i in range(len(matrix))]
            logger.figure("val/confusion_matrix", lambda: figures.confusion_matrix(matrix, names), step)


class MultiLabelTask(_Classification):
    """Sigmoid per label: BCE with smoothed targets ``y·(1−s) + s/2`` and optional ``pos_weight``.

    Validation tunes one threshold per label (max F1); the test split applies them, and both the default-threshold
    and tuned-threshold metrics are reported.
    """

    kind = "multilabel"
    label_kind = "multi"

    def __init__(self, args: RunConfig):
        super().__init__(args)
        self.threshold = args.threshold

    def _class_weights(self, counts, n):
        return torch.tensor((n - counts) / np.maximum(counts, 1.0), dtype=torch.float32)

    def probabilities(self, logits):
        return expit(logits.astype(np.float64))

    def _record_scores(self, probs, labels, state):
        """Metrics at ``--threshold`` and at per-label thresholds tuned on validation records
        (``state["record_thresholds"]``, else tuned here), as in :meth:`metrics`."""
        p = np.clip(probs, 1e-12, 1 - 1e-12)
        logits = np.log(p) - np.log1p(-p)
        result = multilabel_metrics(logits, labels, self.threshold, self.class_names)
        thresholds = state.get("record_thresholds")
        if thresholds is None:
            thresholds = tune_thresholds(probs, labels, self.threshold)
        result["thresholds"] = [float(t) for t in thresholds]
        result["tuned"] = multilabel_metrics(logits, labels, np.asarray(thresholds), self.class_names)
        result["f1_macro_tuned"] = result["tuned"]["f1_macro"]
        return result

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = y.float() * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        return F.binary_cross_entropy_with_logits(logits.float(), target, pos_weight=self._weight(logits.device))

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
        result["tuned"] = multilabel_metrics(logits, labels, np.asarray(thresholds), self.class_names)
        return result

    def metric_names(self, validation):
        if not validation:
            return {"loss", "samples_per_sec"}
        k = self.num_classes
        return {"loss"} | set(scalars_of(multilabel_metrics(np.zeros((2, k)), np.eye(2, k))))


def build_task(args: RunConfig) -> Task:
    """The task of a parsed command line: pretraining, or the ``--task_type`` of a fine-tuning script."""
    if args.task == "pretrain":
        return PretrainTask(args)
    return SingleLabelTask(args) if args.task_type == "classification" else MultiLabelTask(args)
