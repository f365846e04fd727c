"""Command-line flags of the three training scripts, each defined once, and their range checks.

Model flags default to ``None``: the value then comes from the checkpoint being resumed or fine-tuned, else from
the ``--model`` preset (:data:`physiowave.models.PRESETS`, default ``base``), else from the model's own defaults;
``in_channels`` always comes from the data (:func:`physiowave.engine.model_config.resolve_config`).
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ..data.multimodal import parse_modality
from ..flags import DefaultsFormatter
from ..models import PRESETS
from ..models.fusion import FUSIONS
from ..models.heads import POOLINGS
from ..models.input_norm import INPUT_NORMS
from ..models.limits import INT_LIMITS
from ..models.masking import IMPORTANCE_RATIO, MASK_RATIO, MASKING, MASKING_STRATEGIES
from ..models.objective import OBJECTIVES
from .config import RunConfig
from .metrics import AGGREGATIONS
from .preemption import DEFAULT_SIGNALS, parse_signals
from .recipes import DEFAULT_RECIPE, RECIPES, apply_recipe
from .schedule import SCHEDULERS

__all__ = ["TASKS", "MODEL_FLAGS", "ARCH_FLAGS", "RunConfig", "build_parser", "parse_args"]

TASKS = ("pretrain", "finetune", "multilabel")

# Model flags of every script (``None`` = not given); the pretraining decoder flags only exist in pretrain.py.
MODEL_FLAGS = ("in_channels", "max_level", "wave_kernel_size", "wavelet_names", "use_separate_channel", "patch_size",
               "embed_dim", "depth", "num_heads", "mlp_ratio", "dropout", "pos_embed_type", "input_norm", "objective",
               "decoder", "decoder_depth", "decoder_dim")
# Flags that fix tensor shapes or the function computed: they must agree with a checkpoint being fine-tuned.
ARCH_FLAGS = ("in_channels", "max_level", "wave_kernel_size", "wavelet_names", "use_separate_channel", "patch_size",
              "embed_dim", "depth", "num_heads", "mlp_ratio", "pos_embed_type", "input_norm", "objective")

_DESCRIPTIONS = {"pretrain": "PhysioWave pretraining (masked reconstruction)",
                 "finetune": "PhysioWave fine-tuning: single-label classification",
                 "multilabel": "PhysioWave fine-tuning: multi-label classification"}

# Task-specific defaults of the shared flags: the recipe (batch, lr, weight decay, warmup, mask ratio, decoder,
# pooling) measured on real sEMG by benchmarks/bench_ssl.py (docs/benchmarks.md, "Pretraining that learns").
_DEFAULTS: dict[str, dict[str, Any]] = {
    "pretrain": dict(batch_size=64, epochs=100, lr=1e-3, weight_decay=0.05, grad_clip=1.0, warmup_epochs=0,
                     min_lr=0.0, output_dir="./pretrain_output", save_freq=20, max_length=None, label_smoothing=0.0),
    "finetune": dict(batch_size=32, epochs=30, lr=1e-3, weight_decay=0.05, grad_clip=0.0, warmup_epochs=0,
                     min_lr=1e-6, output_dir="./bert_finetune_output", save_freq=0, max_length=None,
                     label_smoothing=0.1),
    "multilabel": dict(batch_size=32, epochs=30, lr=1e-3, weight_decay=0.05, grad_clip=0.0, warmup_epochs=0,
                       min_lr=1e-6, output_dir="./multilabel_output", save_freq=0, max_length=None,
                       label_smoothing=0.1),
}
PROBE_LR = 1e-2  # --lr default with --freeze_encoder: a linear probe on frozen features wants a larger step


def _model_args(p: argparse.ArgumentParser, task: str) -> None:
    g = p.add_argument_group("model (default: the checkpoint's value when fine-tuning or resuming, else the --model "
                             "preset's)")
    g.add_argument("--model", choices=sorted(PRESETS), default=None,
                   help="named architecture (base: the default; ecg and emg: the published checkpoints' shapes); "
                        "model flags given beside it override its values; in_channels always comes from the data")
    g.add_argument("--in_channels", type=int, default=None, help="input channels C (default: the data's)")
    g.add_argument("--max_level", type=int, default=None, help="wavelet decomposition levels L")
    g.add_argument("--wave_kernel_size", type=int, default=None, help="learnable wavelet filter length")
    g.add_argument("--wavelet_names", nargs="+", default=None, help="initial wavelets of the learnable filter bank")
    g.add_argument("--use_separate_channel", action=argparse.BooleanOptionalAction, default=None,
                   help="depthwise (per-channel) wavelet filters (default on; "
                        "--no-use_separate_channel for dense filters)")
    g.add_argument("--patch_size", type=int, default=None, help="patch length P: a token is a 1×P patch of one band")
    g.add_argument("--embed_dim", type=int, default=None, help="token width D")
    g.add_argument("--depth", type=int, default=None, help="transformer blocks")
    g.add_argument("--num_heads", type=int, default=None, help="attention heads (must divide D)")
    g.add_argument("--mlp_ratio", type=float, default=None, help="MLP hidden width / D")
    g.add_argument("--dropout", type=float, default=None, help="encoder dropout (default 0.1)")
    g.add_argument("--use_pos_embed", action="store_true", default=True,
                   help="positional embedding: always on (accepted so that command lines of the original release run)")
    g.add_argument("--pos_embed_type", choices=("1d", "2d"), default=None, help="sin-cos position table (default 2d)")
    g.add_argument("--input_norm", choices=INPUT_NORMS, default=None,
                   help="rms (default): divide each sample by one scale, the RMS over all channels, so the model does "
                        "not depend on the signal's units and keeps the ratios between channels; none: the raw input "
                        "(the published checkpoints)")
    g.add_argument("--grad_checkpointing", action="store_true",
                   help="recompute encoder blocks in backward: ~2× less training memory, ~25%% slower")


def _data_args(p: argparse.ArgumentParser, task: str) -> None:
    g = p.add_argument_group("data")
    if task == "pretrain":
        g.add_argument("--train_files", required=True, help="HDF5 files, separated by commas or whitespace")
        g.add_argument("--val_files", default="", help="validation HDF5 files (optional)")
    else:
        g.add_argument("--train_file", dest="train_files", default="",
                       help="HDF5 file(s), separated by commas or whitespace (required, except with --eval: the "
                            "checkpoint gives the classes, --val_file the input shape)")
        g.add_argument("--val_file", dest="val_files", default="", required=(task == "multilabel"),
                       help="validation HDF5 file(s)" + ("" if task == "multilabel" else
                       "; empty: hold out --val_split_ratio of the training records (by record_id when the file has "
                       "one)"))
        g.add_argument("--test_file", dest="test_files", default="",
                       help="test HDF5 file(s), evaluated with the best model at the end")
        if task == "finetune":
            g.add_argument("--val_split_ratio", type=float, default=0.1,
                           help="held-out fraction in [0, 1) when --val_file is empty (0: no validation)")
        g.add_argument("--label_fraction", type=float, default=1.0, metavar="F",
                       help="train on fraction F in (0, 1] of the labelled training records: whole patients (by "
                            "group_id when the files have one, else whole records by record_id), stratified by label, "
                            "drawn with --seed; taken after "
                            "the --val_split_ratio hold-out; validation and test sets are untouched (default 1.0)")
    g.add_argument("--data_key", default=None,
                   help="data dataset name (default: the first of data, input, X present in the file)")
    g.add_argument("--label_key", default=None,
                   help="label dataset name (default: the first of label, labels, y, Y present in the file)")
    g.add_argument("--max_length", type=int, default=None,
                   help="crop (random in training, centre in evaluation) or right-pad samples to this length "
                        "(default: the stored length)")
    g.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=False,
                   help="z-score each sample per channel at load time (default off)")
    g.add_argument("--use_augmentation", action="store_true",
                   help="training augmentation: noise 0.01, amplitude and time-stretch 0.9-1.1, with probability 0.5")
    g.add_argument("--check_data", action=argparse.BooleanOptionalAction, default=True,
                   help="read every file once before training to find NaN/inf values (streaming, about disk speed); "
                        "--no-check_data skips the scan")
    g.add_argument("--num_workers", type=int, default=8, help="DataLoader worker processes per rank")


def _optim_args(p: argparse.ArgumentParser, task: str) -> None:
    d = _DEFAULTS[task]
    g = p.add_argument_group("optimisation")
    g.add_argument("--batch_size", type=int, default=d["batch_size"], help="per process")
    g.add_argument("--epochs", type=int, default=d["epochs"], help="training epochs")
    if task == "pretrain":
        g.add_argument("--lr", type=float, default=d["lr"], help="peak learning rate")
    else:
        g.add_argument("--lr", type=float, default=None,
                       help=f"peak learning rate (default {d['lr']:g}; {PROBE_LR:g} with --freeze_encoder)")
    g.add_argument("--min_lr", type=float, default=d["min_lr"],
                   help="floor of cosine/linear decay, eta_min of cosine_restarts")
    g.add_argument("--weight_decay", type=float, default=d["weight_decay"], help="AdamW weight decay")
    g.add_argument("--grad_accumulation_steps", type=int, default=1, help="micro-batches per optimizer step")
    g.add_argument("--betas", type=float, nargs=2, default=None, metavar=("BETA1", "BETA2"),
                   help="AdamW betas (default: the recipe's; both recipes: 0.9 0.95 in pretraining, 0.9 0.999 in "
                        "fine-tuning)")
    g.add_argument("--grad_clip", type=float, default=d["grad_clip"], help="max total grad norm; ≤ 0 disables")
    g.add_argument("--warmup_epochs", type=int, default=d["warmup_epochs"],
                   help="linear warmup epochs (cosine, linear); 0 (default) = 10%% of the steps")
    g.add_argument("--scheduler", choices=SCHEDULERS, default="cosine",
                   help="cosine: warmup then cosine to --min_lr, per step; cosine_restarts: T_0/T_mult in epochs; "
                        "onecycle: peak 10×lr; linear: warmup then linear to --min_lr; step: ×--lr_gamma every "
                        "--lr_step_size epochs; plateau: ×--lr_gamma after --plateau_patience epochs without "
                        "improvement of --select_metric; none: constant")
    g.add_argument("--T_0", type=int, default=10, help="cosine_restarts: first period in epochs")
    g.add_argument("--T_mult", type=int, default=2, help="cosine_restarts: period multiplier")
    g.add_argument("--lr_step_size", type=int, default=10, help="step: epochs between decays")
    g.add_argument("--lr_gamma", type=float, default=0.1, help="step / plateau: decay factor")
    g.add_argument("--plateau_patience", type=int, default=5, help="plateau: epochs without improvement")
    g.add_argument("--use_amp", action=argparse.BooleanOptionalAction, default=False,
                   help="mixed precision: bf16 autocast (fp16 + GradScaler on GPUs without bf16); default fp32")
    g.add_argument("--compile", action="store_true",
                   help="CUDA only: torch.compile the wavelet decomposition and each transformer block (the first "
                        "steps compile, about a minute); on an H100 in bf16 pretraining steps are 1.4-1.7x faster")


def _task_args(p: argparse.ArgumentParser, task: str) -> None:
    g = p.add_argument_group(task)
    if task == "pretrain":
        g.add_argument("--masking_strategy", choices=MASKING_STRATEGIES, default=MASKING,
                       help="random: drawn per sample; frequency_guided: the paper's FgM; frequency_guided_original: "
                            "the original code's variant")
        g.add_argument("--importance_ratio", type=float, default=IMPORTANCE_RATIO,
                       help="weight of spectral importance vs noise")
        g.add_argument("--mask_ratio", type=float, default=MASK_RATIO, help="fraction of tokens masked, in (0, 1)")
        g.add_argument("--decoder", choices=("mlp", "transformer"), default=None,
                       help="transformer (default): MAE-style, the encoder sees only the visible tokens; mlp: an MLP "
                            "head on the full sequence with mask tokens (the published checkpoints)")
        g.add_argument("--decoder_depth", type=int, default=None, help="transformer decoder blocks (default 2)")
        g.add_argument("--decoder_dim", type=int, default=None, help="transformer decoder width (default embed_dim/2)")
        g.add_argument("--objective", choices=OBJECTIVES, default=None,
                       help="bands (default): predict each masked patch's standardised shape and log-RMS from a fixed "
                            "wavelet transform of the input, a target no parameter can move; original: MSE to the "
                            "model's own front-end output (the published checkpoints; that target can shrink)")
        g.add_argument("--detach_target", action="store_true",
                       help="with --objective original: stop gradients through the target (the front-end output)")
        return
    g.add_argument("--task_type",
                   choices=("classification",) if task == "finetune" else ("multilabel", "classification"),
                   default="classification" if task == "finetune" else "multilabel",
                   help="classification: single-label softmax (as finetune.py); multilabel: sigmoid per label")
    if task == "finetune":
        g.add_argument("--num_classes", type=int, default=None, help="classes (default: max label + 1 in the data)")
    else:
        g.add_argument("--threshold", type=float, default=0.5,
                       help="default decision threshold; per-class thresholds are also tuned on validation")
        g.add_argument("--hidden_factor", type=int, default=None,
                       help="head hidden size = hidden_factor × embed_dim (when --head_hidden_dim is not given)")
    g.add_argument("--aggregate", choices=AGGREGATIONS, default="mean",
                   help="record-level metrics (files with record_id): a record's probabilities are the mean or the "
                        "max of its windows' probabilities")
    g.add_argument("--head_hidden_dim", type=int, default=None, help="head hidden size (default embed_dim)")
    g.add_argument("--head_dropout", type=float, default=0.1, help="dropout in the classification head")
    g.add_argument("--pooling", choices=POOLINGS, default="bands",
                   help="token pooling: bands (default) = each band row's (wavelet band of one channel) mean token, "
                        "concatenated, so the head sees which channel and band carry what; mean = one mean token "
                        "(the published checkpoints); first/cls = token 0")
    g.add_argument("--label_smoothing", type=float, default=_DEFAULTS[task]["label_smoothing"],
                   help="cross-entropy smoothing s/K" if task == "finetune" else "BCE targets y·(1−s) + s/2")
    g.add_argument("--use_class_weights", action="store_true",
                   help="weight the loss by inverse class frequency" if task == "finetune"
                   else "BCE pos_weight = negatives / positives per label")
    g.add_argument("--pretrained_path", default="", help="published ecg.pth/emg.pth or a PhysioWave checkpoint")
    g.add_argument("--freeze_encoder", action="store_true",
                   help="linear probing: frozen encoder in eval mode, features computed once (per epoch with random "
                        "crops or augmentation), only the probe is trained")
    g.add_argument("--probe", choices=("linear", "mlp"), default=None,
                   help="with --freeze_encoder: linear = LayerNorm + Linear (default); mlp = the fine-tuning head")
    g.add_argument("--eval", action="store_true",
                   help="only evaluate the --resume checkpoint on the val and test files")


def _modality(spec: str) -> str:
    """The spec as given (kept as text in args.json and checkpoints), once it parses."""
    try:
        parse_modality(spec)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err
    return spec


def _fusion_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("multi-modal fusion (one PhysioWave branch per --modality)")
    g.add_argument("--modality", action="append", type=_modality, default=None,
                   metavar="NAME:KEY_OR_CHANNELS[:CHECKPOINT]",
                   help="repeat once per modality: its HDF5 dataset (e.g. ecg:data_ecg), or inclusive channel ranges "
                        "of --data_key (e.g. emg:12-19); an optional checkpoint initialises its branch (its own "
                        "architecture); without one the branch is fresh, shaped by the model flags")
    g.add_argument("--fusion", choices=FUSIONS, default=None,
                   help="weighted: learned softmax modality weights (default); concat: concatenated projections")
    g.add_argument("--fusion_dim", type=int, default=None,
                   help="common width of the projected branches (default: the widest branch)")
    g.add_argument("--fusion_lr", type=float, default=None,
                   help="peak learning rate (default 1e-2) of the modality weights' logits (no weight decay), "
                        "on the --lr schedule. With Adam a logit moves about this much per step, "
                        "so at --lr they would barely leave uniform")
    g.add_argument("--freeze_branch", action="append", default=None, metavar="NAME",
                   help="keep this modality's branch fixed (eval mode) while the others and the fusion train; "
                        "repeatable")


def _check_fusion(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not args.modality:
        for flag in ("fusion", "fusion_dim", "fusion_lr", "freeze_branch"):
            if getattr(args, flag) is not None:
                p.error(f"--{flag} applies to multi-modal fusion: give the modalities with --modality")
        return
    names = [parse_modality(m).name for m in args.modality]
    if len(set(names)) != len(names):
        p.error(f"--modality: each name once, got {names}")
    for flag, why in (("pretrained_path", "give each branch its checkpoint as --modality NAME:SOURCE:CHECKPOINT"),
                      ("in_channels", "each branch takes its modality's channel count"),
                      ("max_length",
                       "each modality keeps its stored length (right-padded to its branch's patch size)")):
        if getattr(args, flag):
            p.error(f"--{flag} does not apply with --modality: {why}")
    for name in args.freeze_branch or []:
        if name not in names:
            p.error(f"--freeze_branch {name}: no such --modality (have {', '.join(names)})")
    if args.freeze_branch and args.freeze_encoder:
        p.error("--freeze_branch with --freeze_encoder: --freeze_encoder already freezes every branch")
    if args.fusion_lr is None:
        args.fusion_lr = 1e-2


def _run_args(p: argparse.ArgumentParser, task: str) -> None:
    d = _DEFAULTS[task]
    g = p.add_argument_group("run")
    g.add_argument("--recipe", choices=sorted(RECIPES), default=DEFAULT_RECIPE,
                   help="named configuration (physiowave/engine/recipes.py): physiowave (default) = the engine's own "
                        "settings; paper = the original release's published configuration (with --model ecg/emg its "
                        "launchers' values). A flag given on the command line wins over the recipe's value")
    g.add_argument("--dry_run", action="store_true",
                   help="resolve the configuration (flags, recipe, checkpoint), build the model, check the data files, "
                        "print one JSON object {script, recipe, parameters, config} and exit, "
                        "training and writing nothing")
    g.add_argument("--output_dir", default=d["output_dir"],
                   help="the run's folder; one that holds another run is refused unless --resume continues it or "
                        "--overwrite replaces it")
    g.add_argument("--overwrite", action="store_true",
                   help="delete another run's files (checkpoints, history, results, tensorboard) in --output_dir first")
    g.add_argument("--resume", default=None,
                   help="checkpoint to continue from, or 'auto' (the output dir's latest, if any)")
    if task == "pretrain":
        g.add_argument("--pretrained_path", default="", help="initialise from a checkpoint (continue pretraining)")
    g.add_argument("--save_freq", type=int, default=d["save_freq"],
                   help="also keep checkpoint_epoch_N.pth every N epochs (0: never)")
    g.add_argument("--save_every_steps", type=int, default=0, metavar="N",
                   help="also rewrite the latest checkpoint every N optimizer steps inside an epoch, so --resume "
                        "continues from that step (for corpora where one epoch takes hours; 0: at epoch ends only)")
    g.add_argument("--preempt_signals", type=_signals, default=DEFAULT_SIGNALS, metavar="SIGS",
                   help="signals that stop training cleanly (what SLURM sends before it kills or requeues a job): "
                        "the current optimizer step finishes, the latest checkpoint is written and the run exits "
                        "with status 128+signal (143 for SIGTERM, 138 for SIGUSR1); the same command with "
                        "--resume auto continues exactly. Comma-separated names, or none (default: %(default)s)")
    g.add_argument("--val_every", type=int, default=1, metavar="N",
                   help="validate every N epochs and after the last one (default 1); best_model.pth is chosen among "
                        "the validated epochs, so a larger N saves evaluation time on short epochs (small label "
                        "fractions)")
    g.add_argument("--select_metric", default="loss",
                   help="validation metric that picks best_model.pth (loss, or e.g. acc, macro_f1, auroc, f1_macro; "
                        "record_<metric> for a record-level one, e.g. record_auroc_macro, when the files have "
                        "record_id); training loss when there is no validation set")
    g.add_argument("--seed", type=int, default=42, help="seed of every random draw (weights, splits, batches, masks)")
    g.add_argument("--device", default=None, help="cuda, cuda:N, cpu, mps (default: cuda when available)")
    g.add_argument("--world_size", type=int, default=None,
                   help="expected number of processes; the WORLD_SIZE set by torchrun wins (a mismatch is reported)")


def _signals(text: str) -> str:
    """``--preempt_signals`` checked → its canonical spelling (e.g. ``SIGTERM,SIGUSR1``, or ``none``)."""
    try:
        return ",".join(sig.name for sig in parse_signals(text)) or "none"
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None




class _Parser(argparse.ArgumentParser):
    """argparse with the scripts' error convention: one line, exit status 1."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(1, f"error: {message} (see --help)\n")


def build_parser(task: str) -> argparse.ArgumentParser:
    """The parser of ``pretrain.py`` (task "pretrain"), ``finetune.py`` ("finetune") or ``finetune_multilabel.py``."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    p = _Parser(description=f"{_DESCRIPTIONS[task]}. The defaults shown are those of --recipe physiowave; "
                            "--recipe paper replaces the values its table lists (physiowave/engine/recipes.py).",
                formatter_class=DefaultsFormatter)
    _data_args(p, task)
    _optim_args(p, task)
    _model_args(p, task)
    _task_args(p, task)
    if task != "pretrain":
        _fusion_args(p)
    _run_args(p, task)
    return p


# (flag, test, what is expected): checked for every flag the script has, before anything else runs.
_RANGES: list[tuple[str, Callable[[Any], bool], str]] = [
    *[(f, lambda v: v >= 1, "≥ 1") for f in ("batch_size", "epochs", "grad_accumulation_steps", "max_length",
                                             "max_level",
                                              "patch_size", "embed_dim", "depth", "num_heads", "decoder_depth",
                                              "decoder_dim", "num_classes", "head_hidden_dim", "hidden_factor",
                                              "T_0", "T_mult", "lr_step_size", "world_size", "fusion_dim",
                                              "val_every")],
    *[(f, lambda v: v >= 0, "≥ 0") for f in ("lr", "min_lr", "weight_decay", "warmup_epochs", "num_workers",
                                             "save_freq",
                                              "save_every_steps", "plateau_patience", "seed", "fusion_lr")],
    ("wave_kernel_size", lambda v: v >= 2, "≥ 2"),
    ("in_channels", lambda v: v >= 1, "≥ 1"),
    ("mlp_ratio", lambda v: v > 0, "> 0"),
    ("lr_gamma", lambda v: v > 0, "> 0"),
    *[(f, lambda v: 0 <= v < 1, "in [0, 1)") for f in ("dropout", "head_dropout", "label_smoothing",
                                                       "val_split_ratio")],
    ("importance_ratio", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("mask_ratio", lambda v: 0 < v < 1, "in (0, 1): the fraction of tokens the model must reconstruct"),
    ("threshold", lambda v: 0 < v < 1, "in (0, 1)"),
    ("label_fraction", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("betas", lambda v: 0 <= v < 1, "in [0, 1)"),
]


def _check_ranges(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for flag, ok, expected in _RANGES:
        value = getattr(args, flag, None)
        if isinstance(value, list):
            bad = [v for v in value if not ok(v)]
            value = bad[0] if bad else None
        if value is not None and not ok(value):
            p.error(f"--{flag} must be {expected}, got {value}")
    for flag, (lo, hi) in INT_LIMITS.items():  # the architecture's bounds (models/limits.py), as flags
        values = getattr(args, flag, None)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, int) and not lo <= value <= hi:
                p.error(f"--{flag} must be in [{lo}, {hi}], got {value}")


def explicit_flags(task: str, argv: list[str] | None = None) -> set[str]:
    """The destinations of the flags ``argv`` gives (a parse with every default suppressed)."""
    p = build_parser(task)
    for action in p._actions:
        action.default = argparse.SUPPRESS
        action.required = False
    return set(vars(p.parse_known_args(argv)[0]))


def parse_args(task: str, argv: list[str] | None = None) -> RunConfig:
    """Parse and check flag values and combinations → the run's :class:`RunConfig`; errors are argparse one-liners
    naming the flag. The ``--recipe``'s values replace the defaults of the flags not given
    (:func:`physiowave.engine.recipes.apply_recipe`)."""
    p = build_parser(task)
    args = p.parse_args(argv)
    args.task = task
    explicit = explicit_flags(task, argv)
    apply_recipe(args, explicit)  # sets the probe kind with --freeze_encoder: the recipe's unless --probe is given
    if task != "pretrain" and args.freeze_encoder and "head_hidden_dim" in explicit \
            and (args.probe or "linear") == "linear" and args.head_hidden_dim is not None:
        p.error(f"--head_hidden_dim sizes the MLP head's hidden layer; the linear probe of --freeze_encoder (--recipe "
                f"{args.recipe}) has none: add --probe mlp, or drop --head_hidden_dim")
    _check_ranges(p, args)
    if task != "pretrain":
        if args.lr is None:  # not reached through a recipe; kept for a recipe without lr
            args.lr = PROBE_LR if args.freeze_encoder else _DEFAULTS[task]["lr"]
        if args.probe and not args.freeze_encoder:
            p.error("--probe only applies with --freeze_encoder")
        if getattr(args, "hidden_factor", None) and args.head_hidden_dim:
            p.error("give --head_hidden_dim or --hidden_factor, not both")
        if args.eval and not args.resume:
            p.error("--eval evaluates the --resume checkpoint: pass --resume PATH")
        if args.eval and args.resume == "auto":
            p.error("--eval needs the checkpoint's path: --resume PATH")
        if not args.eval and not args.train_files.strip():
            p.error("the following arguments are required: --train_file (only --eval runs without training data)")
        if args.eval and not args.val_files.strip():
            p.error("--eval without --val_file would score a slice of the training file: pass the --val_file "
                    "(and --test_file) to evaluate on")
        _check_fusion(p, args)
    if not args.output_dir.strip():
        p.error("--output_dir is empty: name the run's folder")
    if args.resume and args.overwrite and not getattr(args, "eval", False):  # pretrain.py has no --eval
        p.error("--resume continues the folder's run and --overwrite deletes it: give one of them")
    if args.resume and args.resume != "auto" and args.pretrained_path:
        p.error("--resume continues a run with its own weights; --pretrained_path starts a new one: give one of them "
                "(or --resume auto: continue the folder's run if it has one, else start from --pretrained_path)")
    return RunConfig.from_namespace(args)
