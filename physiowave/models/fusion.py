"""Multi-modal fusion (the paper's unified multi-modal framework): one PhysioWave branch per modality, fused by
learned modality weights.

Each branch encodes its own modality ``[B, C_m, T_m]`` (own channels, length, rate and configuration) and is
pooled to ``[B, D_m]``; :class:`FusionHead` projects every branch to a common width, mixes them with
``softmax(modality_logits)`` (or concatenates them) and classifies. A modality absent from a sample (its input
all NaN, or flagged absent) drops out: the weights are renormalised over the modalities present.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..contract import check_modality_name
from .heads import POOLINGS, ClassificationHead, pool_tokens, pooled_size
from .physiowave import LEGACY_CONFIG, PhysioWave

__all__ = ["FusionModel", "FusionHead", "FUSIONS", "modality_present"]

FUSIONS = ("weighted", "concat")




def modality_present(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, T]`` → bool ``[B]``: False where every value of the sample is NaN (the modality is absent)."""
    return ~torch.isnan(x).flatten(1).all(dim=1)


class FusionHead(nn.Module):
    """Branch features ``[B, ΣD_m]`` (a modality's slice all NaN where it is absent) → logits ``[B, K]``.

    Per modality LayerNorm + Linear to ``fusion_dim``. ``weighted``: ``Σ_m w_bm · z_bm`` with
    ``w = softmax(modality_logits)`` renormalised over the modalities present in sample b (a sample with none
    present fuses to zeros); ``concat``: ``[z_b1, …, z_bM]``, absent modalities zero. Then a classification head.
    """

    def __init__(self, dims: Mapping[str, int], fusion_dim: int, num_classes: int, fusion: str = "weighted",
                 hidden: int | Sequence[int] | None = None, dropout: float = 0.1):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.names, self.dims, self.fusion = list(dims), [int(d) for d in dims.values()], fusion
        self.projections = nn.ModuleDict({n: nn.Sequential(nn.LayerNorm(d),
                                                           nn.Linear(d, fusion_dim)) for n, d in dims.items()})
        if fusion == "weighted":
            self.modality_logits = nn.Parameter(torch.zeros(len(self.names)))  # uniform weights at the start
        width = fusion_dim if fusion == "weighted" else fusion_dim * len(self.names)
        self.classifier = ClassificationHead(width, num_classes, hidden, dropout)

    def weights(self) -> torch.Tensor | None:
        """The learned modality weights ``[M]`` (sum 1), or None for concatenation."""
        return torch.softmax(self.modality_logits.float(), dim=0) if self.fusion == "weighted" else None

    def sample_weights(self, present: torch.Tensor) -> torch.Tensor:
        """Presence bool ``[B, M]`` → per-sample weights ``[B, M]``: the learned weights renormalised over present
        modalities."""
        w = self.weights().to(present.device) * present  # [B, M]
        return w / w.sum(dim=1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)

    def fuse(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, ΣD_m]`` → fused ``[B, fusion_dim]`` (weighted) or ``[B, M·fusion_dim]`` (concat)."""
        if features.ndim != 2 or features.shape[1] != sum(self.dims):
            raise ValueError(f"expected branch features [B, {sum(self.dims)}], got shape {tuple(features.shape)}")
        parts = features.split(self.dims, dim=1)
        present = torch.stack([~torch.isnan(p).all(dim=1) for p in parts], dim=1)  # [B, M]
        z = torch.stack([proj(torch.nan_to_num(p, nan=0.0)) for proj, p in zip(self.projections.values(), parts)],
                        dim=1)
        z = torch.where(present.unsqueeze(-1), z, torch.zeros((), dtype=z.dtype, device=z.device))  # [B, M, fusion_dim]
        if self.fusion == "concat":
            return z.flatten(1)
        return torch.einsum("bm,bmf->bf", self.sample_weights(present).to(z.dtype), z)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier.classify(self.fuse(features))


class FusionModel(nn.Module):
    """Per-modality PhysioWave branches fused by learned weights. Input ``{name: [B, C_m, T_m]}`` → logits ``[B, K]``.

    ``branches`` are PhysioWave encoders built with ``num_classes=None`` (fresh, from ``create_model``, or loaded
    with ``load_model`` from their own checkpoints). Each input is right zero-padded to a multiple of its branch's
    patch size, as the data loader pads short samples. NaN values inside a present modality count as zeros.
    """

    def __init__(self, branches: Mapping[str, PhysioWave], num_classes: int, fusion: str = "weighted",
                 fusion_dim: int | None = None, pooling: str = "mean",
                 head_hidden_dim: int | Sequence[int] | None = None, head_dropout: float = 0.1):
        super().__init__()
        if not branches:
            raise ValueError("FusionModel needs at least one branch")
        for name, branch in branches.items():
            check_modality_name(name)
            if not isinstance(branch, PhysioWave):
                raise ValueError(f"branch {name!r} is a {type(branch).__name__}, expected a PhysioWave encoder")
            if "classification" in branch.task_heads:
                raise ValueError(f"branch {name!r} has a classification head: load it with load_model(path, "
                                 "num_classes=None), or del branch.task_heads['classification']")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        dims = {n: pooled_size(int(b.config["embed_dim"]), pooling, b.num_bands) for n, b in branches.items()}
        fusion_dim = int(fusion_dim or max(int(b.config["embed_dim"]) for b in branches.values()))
        self.branches = nn.ModuleDict(dict(branches))
        self.pooling = pooling
        self.fusion = FusionHead(dims, fusion_dim, num_classes, fusion, head_hidden_dim, head_dropout)
        self.frozen_branches: list[str] = []
        self.config: dict[str, Any] = dict(
            modalities={n: dict(b.config) for n, b in branches.items()}, num_classes=num_classes, fusion=fusion,
            fusion_dim=fusion_dim, pooling=pooling, head_dropout=head_dropout,
            head_hidden_dim=list(head_hidden_dim) if isinstance(head_hidden_dim, Sequence) else head_hidden_dim,
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "FusionModel":
        """A fresh model of the shape ``config`` (a ``FusionModel.config``) describes: for loading its state dict."""
        branches = {n: PhysioWave(**{**LEGACY_CONFIG, **c,
                                     "num_classes": None}) for n, c in config["modalities"].items()}
        return cls(branches, **{k: v for k, v in config.items() if k != "modalities"})

    @property
    def names(self) -> list[str]:
        """Modality names, in branch order."""
        return list(self.branches)

    def features(self, inputs: Mapping[str, torch.Tensor],
                 present: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``{name: [B, C_m, T_m]}`` (optional ``present``: ``{name: bool [B]}``) → branch features ``[B, ΣD_m]``,
        each branch's slice NaN for the samples where its modality is absent."""
        if set(inputs) != set(self.branches):
            raise ValueError(f"expected inputs for modalities {self.names}, got {sorted(inputs)}")
        if present is not None and not set(present) <= set(self.branches):
            raise ValueError(f"present: unknown modalities {sorted(set(present) - set(self.branches))}; "
                             f"have {self.names}")
        out = []
        for name, branch in self.branches.items():
            x = inputs[name]
            if x.ndim != 3:
                raise ValueError(f"modality {name!r}: expected input [B, C, T], got shape {tuple(x.shape)}")
            here = modality_present(x)
            if present is not None and name in present:
                here = here & present[name].to(device=x.device, dtype=torch.bool)
            x = F.pad(torch.nan_to_num(x, nan=0.0), (0, -x.shape[-1] % branch.patch_size))
            try:
                f = pool_tokens(branch.encode(x), self.pooling, branch.num_bands)  # [B, D_m] (bands: [B, F_m·D_m])
            except ValueError as err:
                raise ValueError(f"modality {name!r}: {err}") from err
            out.append(torch.where(here.unsqueeze(1), f, torch.full((), float("nan"), dtype=f.dtype, device=f.device)))
        return torch.cat(out, dim=1)

    def forward(self, inputs: Mapping[str, torch.Tensor],
                present: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``{name: [B, C_m, T_m]}`` → logits ``[B, num_classes]``."""
        return self.fusion(self.features(inputs, present))

    def modality_weights(self) -> dict[str, float] | None:
        """``{name: weight}`` of the weighted fusion (sum 1); None for concatenation."""
        w = self.fusion.weights()
        return None if w is None else {n: float(v) for n, v in zip(self.names, w.detach().cpu())}

    def freeze_branches(self, names: Iterable[str]) -> "FusionModel":
        """Stop training these branches: no gradients, and kept in eval mode (no dropout) by :meth:`train`."""
        names = list(names)
        unknown = [n for n in names if n not in self.branches]
        if unknown:
            raise ValueError(f"no branch {unknown[0]!r}: the modalities are {self.names}")
        for name in names:
            self.branches[name].requires_grad_(False)
            if name not in self.frozen_branches:
                self.frozen_branches.append(name)
        return self.train(self.training)

    def train(self, mode: bool = True) -> "FusionModel":
        super().train(mode)
        for name in self.frozen_branches:
            self.branches[name].eval()
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> "FusionModel":
        """Activation checkpointing in every branch's encoder."""
        for branch in self.branches.values():
            branch.set_grad_checkpointing(enable)
        return self

    def compile_regions(self, **compile_kwargs: Any) -> "FusionModel":
        """:meth:`PhysioWave.compile_regions` in every branch."""
        for branch in self.branches.values():
            branch.compile_regions(**compile_kwargs)
        return self

