"""Linear probing (``--freeze_encoder``): the frozen model's features are computed once (per epoch when crops or
augmentation make them random) and only the head is trained on them."""
from __future__ import annotations


import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..models import FusionModel
from .config import RunConfig
from .data import Indexed
from .distributed import DistEnv
from .loop import Precision, evaluate
from .preemption import dataloader_worker_init
from .samplers import EvalSampler
from .tasks import Task

__all__ = ["feature_head", "FeatureSet", "compute_features", "eval_loader"]


class _FeatureTask(Task):
    """The frozen model's features (``model.features``: pooled encoder tokens, or a fusion model's branch features)."""

    def eval_step(self, model, batch, generator):
        x, y = batch
        return {"features": model.features(x).float().cpu().numpy(), "labels": y.cpu().numpy()}


class _ProbeHead(nn.Module):
    """The classification head applied to cached pooled features ``[B, D]`` → logits ``[B, K]``."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head.classify(features)


def feature_head(model: nn.Module) -> nn.Module:
    """The part of the model that maps ``model.features(x)`` to logits: what linear probing trains."""
    return model.fusion if isinstance(model, FusionModel) else _ProbeHead(model.task_heads["classification"])


class FeatureSet(Dataset):
    """Cached features ``[N, D]`` with their labels, as ``(features, label)`` items."""

    def __init__(self, features: np.ndarray, labels: np.ndarray):
        self.features, self.labels = torch.from_numpy(features), torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int):
        return self.features[i], self.labels[i]


def eval_loader(ds: Dataset, args: RunConfig, env: DistEnv, batch_size: int,
                workers: bool = True) -> DataLoader:
    """This rank's shard of ``ds`` in order, as ``(index, item)`` batches."""
    return DataLoader(Indexed(ds), batch_size=batch_size, sampler=EvalSampler(len(ds), env.rank, env.world_size),
                      num_workers=args.num_workers if workers else 0, pin_memory=env.device.type == "cuda",
                      worker_init_fn=dataloader_worker_init)  # workers ignore the signals training handles


def compute_features(model: nn.Module, ds: Dataset, args: RunConfig, env: DistEnv,
                     precision: Precision) -> FeatureSet:
    """The features of every sample of ``ds`` (gathered over processes, in dataset order)."""
    model.eval()
    out = evaluate(model, eval_loader(ds, args, env, args.batch_size), _FeatureTask(args), env, precision,
                   seed=args.seed, desc="features")
    return FeatureSet(out["features"].astype(np.float32), out["labels"])
