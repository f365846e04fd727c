"""``physiowave plot KIND ...``: the figures of a checkpoint, its training run and its predictions (PNG, or the
format of the -o suffix: .pdf, .svg, ...).

    physiowave plot bands CKPT RECORD -o bands.png            input signal and its learned wavelet bands
    physiowave plot filters CKPT -o filters.png               learned filters vs PyWavelets init, frequency responses
    physiowave plot selector CKPT INPUT... -o selector.png    the selector's wavelet weights per level
    physiowave plot reconstruction CKPT RECORD -o recon.png   a masked input and its reconstruction
    physiowave plot confusion CKPT TEST.h5 -o confusion.png   confusion matrix on labelled HDF5 data
    physiowave plot roc CKPT TEST.h5 -o roc.png               ROC and precision-recall curves on labelled data
    physiowave plot history RUN_DIR -o curves.png             training curves from training_history.json

Windows that hold NaN/inf after preprocessing are left out (and named on stderr); --window_index counts the
usable windows.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from .. import figures
from ..inference import Skipped, TrainedModel, find_inputs, no_usable_input, read_units
from ..models import introspect
from ..models.masking import MASK_RATIO, MASKING, MASKING_STRATEGIES
from .common import (INPUTS_HELP, add_model_arguments, add_preparation_arguments, check_positive, check_preparation,
                     prepare_output, report_skipped, trained_from_args)
from .predict import predict

__all__ = ["add_parser", "KINDS"]

KINDS = {"bands": "input signal and its learned wavelet bands",
         "filters": "learned wavelet filters vs their PyWavelets initialisation, frequency responses",
         "selector": "the selector's wavelet weights per level",
         "reconstruction": "a masked input and its reconstruction",
         "confusion": "confusion matrix on labelled HDF5 data",
         "roc": "ROC and precision-recall curves on labelled data",
         "history": "training curves from training_history.json"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="figures (PNG, PDF, SVG, ...)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, help_text in KINDS.items():
        k = kinds.add_parser(kind, help=help_text, description=help_text)
        if kind == "history":
            k.add_argument("run_dir", metavar="RUN", help="training output folder or its training_history.json")
        else:
            labelled = " (HDF5 with labels)" if kind in ("confusion", "roc") else ""
            add_model_arguments(k, None if kind == "filters" else INPUTS_HELP + labelled)
            if kind != "filters":
                add_preparation_arguments(k)
        k.add_argument("-o", "--output", required=True,
                       help="image file to write: .png, or another format matplotlib writes (.pdf, .svg, ...)")
        k.add_argument("--dpi", type=int, default=100)
        if kind in ("bands", "reconstruction"):
            k.add_argument("--channel", default="0", help="channel to show: index or name (default 0)")
            k.add_argument("--window_index", type=int, default=0, help="which window of the first input to show")
        if kind == "reconstruction":
            k.add_argument("--mask_ratio", type=float, default=MASK_RATIO, help="fraction of tokens masked")
            k.add_argument("--masking", default=MASKING, choices=MASKING_STRATEGIES)
            k.add_argument("--seed", type=int, default=0)
        if kind == "selector":
            k.add_argument("--max_windows", type=int, default=256, help="windows to average over")
        if kind == "filters":
            k.add_argument("--fs", type=float, default=None, help="sampling rate for a Hz axis (default: recorded)")
        k.set_defaults(run=run)


def _windows(trained: TrainedModel, inputs: list[str], limit: int, skipped: Skipped) -> np.ndarray:
    """Up to ``limit`` model-ready windows ``[n, C, L]`` of the inputs (windows with NaN/inf left out)."""
    out, n = [], 0
    for unit in read_units(find_inputs(inputs), trained.preparation, trained.model.in_channels, skipped):
        out.append(unit.windows[: limit - n])
        n += len(out[-1])
        if n >= limit:
            break
    if not out:
        raise no_usable_input(skipped)
    return np.concatenate(out)


def _channel(trained: TrainedModel, spec: str) -> tuple[int, str]:
    names = trained.preparation.channels
    if spec.lstrip("-").isdigit():
        i = int(spec)
    elif names and spec.lower() in [str(n).lower() for n in names]:
        i = [str(n).lower() for n in names].index(spec.lower())
    else:
        raise ValueError(f"--channel {spec}: expected an index or one of {names or 'the channel indices'}")
    if not 0 <= i < trained.model.in_channels:
        raise ValueError(f"--channel {spec}: the model has {trained.model.in_channels} channels")
    label = str(names[i]) if names and not str(names[i]).isdigit() else f"channel {i}"
    return i, label


def _one_window(trained: TrainedModel, args: argparse.Namespace, skipped: Skipped) -> torch.Tensor:
    x = _windows(trained, args.inputs[:1], args.window_index + 1, skipped)
    if args.window_index >= len(x):
        raise ValueError(f"--window_index {args.window_index}: {args.inputs[0]} has {len(x)} usable windows")
    return torch.from_numpy(x[args.window_index: args.window_index + 1]).to(trained.device)


def _figure(args: argparse.Namespace, skipped: Skipped):
    if args.kind == "history":
        path = Path(args.run_dir)
        path = path / "training_history.json" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no training_history.json (written by pretrain.py / finetune.py)")
        return figures.training_curves(json.loads(path.read_text()))
    trained = trained_from_args(args, quiet=args.kind == "filters")  # filters read no input: only --fs matters
    model, prep = trained.model, trained.preparation
    fs = getattr(args, "fs", None) or prep.fs
    if args.kind == "filters":
        return figures.wavelet_filters(*introspect.learned_filters(model), fs=fs)
    if args.kind == "selector":
        x = torch.from_numpy(_windows(trained, args.inputs, args.max_windows, skipped)).to(trained.device)
        return figures.selector_weights(introspect.selector_weights(model, x), model.config["wavelet_names"])
    if args.kind in ("bands", "reconstruction"):
        c, label = _channel(trained, args.channel)
        x = _one_window(trained, args, skipped)
        names = introspect.band_names(model.config["max_level"])
        if args.kind == "bands":
            return figures.wavelet_bands(x[0, c].cpu().numpy(), introspect.wavelet_bands(model, x)[0, c], fs, label,
                                         names)
        target, pred, mask = introspect.masked_reconstruction(model, x, args.mask_ratio, args.masking, seed=args.seed)
        return figures.masked_reconstruction(target[0, c], pred[0, c], mask[0, c], model.patch_size, names, fs)
    pred, found = predict(trained, args.inputs, args.batch_size)
    skipped.records += found.records
    skipped.windows += found.windows
    if pred.labels is None:
        raise ValueError(f"plot {args.kind}: the inputs have no labels (give preprocessed HDF5 files with 'label')")
    names = trained.class_names
    if args.kind == "roc":
        return figures.roc_pr_curves(pred.probs, pred.labels, names)
    if trained.task != "single":
        raise ValueError("plot confusion: a multi-label model has one 2x2 table per class; use `plot roc`")
    k = len(names)
    matrix = np.bincount(pred.labels.astype(np.int64) * k + pred.probs.argmax(1), minlength=k * k).reshape(k, k)
    return figures.confusion_matrix(matrix, names)


def check_args(args: argparse.Namespace) -> None:
    """Every flag and the output name, before any work (one-line ValueError naming the flag)."""
    if args.kind not in ("history", "filters"):
        check_preparation(args)
    check_positive(args, integers=("dpi", "max_windows"), numbers=("fs",))
    if getattr(args, "window_index", 0) < 0:
        raise ValueError(f"--window_index {args.window_index}: expected an index >= 0")
    if getattr(args, "mask_ratio", None) is not None and not 0 < args.mask_ratio < 1:
        raise ValueError(f"--mask_ratio {args.mask_ratio}: expected a fraction in (0, 1)")
    prepare_output(args.output, figures.save_formats(), "an image file name",
                   reads=[args.checkpoint] if hasattr(args, "checkpoint") else [])


def run(args: argparse.Namespace) -> int:
    check_args(args)
    skipped = Skipped()
    fig = _figure(args, skipped)
    report_skipped(skipped)
    if skipped.windows:
        print(f"left out: {skipped.summary()}", file=sys.stderr)
    path = figures.save_figure(fig, args.output, dpi=args.dpi)
    print(f"wrote {path}")
    return 0
