"""The settings of one training run, typed: :class:`RunConfig` is what :func:`physiowave.engine.args.parse_args`
returns, resolved once from the flags and the ``--recipe``, checked once, and read (never changed) by every part of
the engine.

The flags and their defaults are defined once, in :mod:`physiowave.engine.args` (the parsers of the three scripts);
this class lists their values with their types. A script without a flag (``--eval`` in ``pretrain.py``, the
masking flags in the fine-tuning scripts) gets the neutral value below, which means "does not apply".
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

from ..data.multimodal import Modality, parse_modality

__all__ = ["RunConfig"]


@dataclass(frozen=True)
class RunConfig:
    task: str                              # "pretrain", "finetune" or "multilabel": the script
    # data
    train_files: str
    val_files: str
    data_key: str | None
    label_key: str | None
    max_length: int | None
    normalize: bool
    use_augmentation: bool
    check_data: bool
    num_workers: int
    # optimisation
    batch_size: int
    epochs: int
    lr: float
    min_lr: float
    weight_decay: float
    grad_accumulation_steps: int
    betas: list[float] | None
    grad_clip: float
    warmup_epochs: int
    scheduler: str
    T_0: int
    T_mult: int
    lr_step_size: int
    lr_gamma: float
    plateau_patience: int
    use_amp: bool
    compile: bool
    # model (None: from the checkpoint, else the --model preset)
    model: str | None
    in_channels: int | None
    max_level: int | None
    wave_kernel_size: int | None
    wavelet_names: list[str] | None
    use_separate_channel: bool | None
    patch_size: int | None
    embed_dim: int | None
    depth: int | None
    num_heads: int | None
    mlp_ratio: float | None
    dropout: float | None
    use_pos_embed: bool
    pos_embed_type: str | None
    input_norm: str | None
    grad_checkpointing: bool
    # run
    recipe: str
    dry_run: bool
    output_dir: str
    overwrite: bool
    resume: str | None
    pretrained_path: str
    save_freq: int
    save_every_steps: int
    preempt_signals: str
    val_every: int
    select_metric: str
    seed: int
    device: str | None
    world_size: int | None
    # pretraining only
    masking_strategy: str | None = None
    importance_ratio: float | None = None
    mask_ratio: float | None = None
    decoder: str | None = None
    decoder_depth: int | None = None
    decoder_dim: int | None = None
    objective: str | None = None
    detach_target: bool = False
    # fine-tuning only
    test_files: str = ""
    val_split_ratio: float = 0.0
    label_fraction: float = 1.0
    task_type: str | None = None
    num_classes: int | None = None
    threshold: float | None = None
    hidden_factor: int | None = None
    aggregate: str | None = None
    head_hidden_dim: int | None = None
    head_dropout: float | None = None
    pooling: str | None = None
    label_smoothing: float = 0.0
    use_class_weights: bool = False
    freeze_encoder: bool = False
    probe: str | None = None
    eval: bool = False
    modality: list[str] | None = None      # the --modality specs as given (NAME:KEY_OR_CHANNELS[:CHECKPOINT])
    fusion: str | None = None
    fusion_dim: int | None = None
    fusion_lr: float | None = None
    freeze_branch: list[str] | None = None

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> "RunConfig":
        """The parsed and checked flags → the config (a TypeError names an attribute that is not a setting)."""
        return cls(**vars(args))

    @property
    def modalities(self) -> list[Modality]:
        """The ``--modality`` specs parsed ([] for a single-modality run)."""
        return [parse_modality(spec) for spec in self.modality or []]

    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)
