"""``physiowave export CKPT -o model.onnx``: the classifier (logits) or the encoder (pooled features) as ONNX.

The graph's input is ``x`` float32 ``[batch, C, T]``: the same windows the model's forward takes (what ``predict``
feeds it), with a dynamic batch size and T fixed to the training window (recorded in our checkpoints; pass
--length for files that record none, e.g. original ecg.pth/emg.pth). With --with_norm (the default) the model's
input normalisation (input_norm="rms": each window divided by one RMS scale) is inside the graph, so it takes raw
windows; --no-with_norm leaves it out, and the graph then expects windows already divided by that scale. Original
checkpoints (input_norm="none") take raw windows either way. Output: ``logits [batch, K]`` (--what logits) or
``features [batch, D]`` (--what features: the encoder output under the model's pooling, [batch, F·D] for bands).

After the export the file is run in ONNX Runtime (CPU) on real windows (--check_inputs, else the checkpoint's
own HDF5 data when it still exists, else seeded random windows) at batch 1 and batch n, and compared with
PyTorch: the max over windows of max|onnx − torch| / max|torch| must be ≤ --rtol (1e-4). The file is written
under a temporary name and renamed only when the check passes. Needs the export extra: pip install
physiowave[export].
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..export import EXPORTERS, RTOL, WHATS, collect_windows, export_onnx, recorded_length, require_export_extra
from ..inference import Skipped, find_inputs, read_units
from .common import INPUTS_HELP, check_positive, prepare_output, trained_from_args

__all__ = ["add_parser", "run"]

MIN_DYNAMO_OPSET = 18  # torch.onnx's dynamo exporter writes this opset or newer, whatever is asked


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX (checked in ONNX Runtime)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint",
                   help="PhysioWave checkpoint (.pth): ours or an original ecg.pth/emg.pth/best_model.pth")
    p.add_argument("-o", "--output", required=True, help="output file (.onnx)")
    p.add_argument("--what", choices=WHATS, default="logits",
                   help="logits [batch, K] (classification head) or features [batch, D] (pooled encoder output)")
    p.add_argument("--with_norm", action=argparse.BooleanOptionalAction, default=True,
                   help="put the model's input normalisation inside the graph, so it takes raw windows as the model's "
                        "forward does (default); --no-with_norm: the graph expects windows already RMS-normalised")
    p.add_argument("--length", type=int, default=None,
                   help="input length T in samples (default: the training length the checkpoint records; required "
                        "when it records none)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's, 18 and up for dynamo)")
    p.add_argument("--exporter", choices=EXPORTERS, default="dynamo",
                   help="torch.onnx exporter: dynamo (torch.export + onnxscript, default) or the older torchscript")
    p.add_argument("--check_inputs", nargs="+", metavar="INPUT", default=None,
                   help=f"windows for the check: {INPUTS_HELP} (prepared as predict does)")
    p.add_argument("--check_windows", type=int, default=16, help="at most this many windows for the check")
    p.add_argument("--rtol", type=float, default=RTOL, help="largest accepted relative difference ONNX vs PyTorch")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run, device="cpu")


def _windows(trained, inputs: list[str], limit: int):
    skipped = Skipped()
    units = read_units(find_inputs(inputs), trained.preparation, trained.model.in_channels, skipped)
    return collect_windows((u.windows for u in units), limit), skipped


def run(args: argparse.Namespace) -> int:
    require_export_extra(args.exporter)  # before any work: one line naming the extra
    check_positive(args, integers=("length", "opset", "check_windows"), numbers=("rtol",))
    if args.opset is not None and args.exporter == "dynamo" and args.opset < MIN_DYNAMO_OPSET:
        raise ValueError(f"--opset {args.opset}: the dynamo exporter writes opset {MIN_DYNAMO_OPSET} and up; pass "
                         f"--opset {MIN_DYNAMO_OPSET} or more, or --exporter torchscript for older opsets")
    if Path(args.output).suffix.lower() != ".onnx":
        raise ValueError(f"-o {args.output}: expected an ONNX file name (.onnx)")
    trained = trained_from_args(argparse.Namespace(checkpoint=args.checkpoint, device="cpu", length=args.length),
                                quiet=True)
    length = args.length or recorded_length(trained.checkpoint, trained.args)
    if length is None:
        raise ValueError(f"{args.checkpoint}: the checkpoint records no training input length: pass --length T "
                         f"(a multiple of patch_size {trained.model.patch_size})")
    output = prepare_output(args.output, (".onnx",), "an ONNX file name",
                            reads=[args.checkpoint, *(args.check_inputs or [])])
    trained.preparation.length = length
    windows, source = None, ""
    if args.check_inputs:
        windows, skipped = _windows(trained, args.check_inputs, args.check_windows)
        if windows is None:
            raise ValueError("--check_inputs: no usable window" + (f" ({skipped.summary()})" if skipped else ""))
        source = f"{len(windows)} windows of --check_inputs"
    else:
        data = trained.checkpoint.get("data") or {}
        files = [f for key in ("val_files", "test_files", "train_files") for f in (data.get(key) or [])
                 if isinstance(f, str) and Path(f).is_file()]
        if files:
            try:
                windows, _ = _windows(trained, files[:1], args.check_windows)
                source = f"{len(windows)} windows of {files[0]} (the checkpoint's data)" if windows is not None else ""
            except (ValueError, OSError):
                windows = None
    meta = {"physiowave.checkpoint": Path(args.checkpoint).name}
    if trained.class_names and args.what == "logits":
        meta["physiowave.classes"] = trained.class_names
        meta["physiowave.task"] = trained.task
    report = export_onnx(trained.model, output, length, what=args.what, with_norm=args.with_norm, opset=args.opset,
                         windows=windows, check_source=source, rtol=args.rtol, exporter=args.exporter, metadata=meta)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    _, C, T = report.input_shape
    graph_input = ("raw windows (input_norm inside the graph)" if report.input_norm != "none" and report.with_norm
                   else "raw windows" if report.input_norm == "none"
                   else f"windows already divided by their {report.input_norm} scale")
    print(f"wrote {output}: x [batch, {C}, {T}] float32, {graph_input} -> {report.what} [batch, "
          f"{report.output_shape[1]}] ({report.exporter} exporter, opset {report.opset}, {report.seconds:.1f} s)")
    print(f"check in ONNX Runtime (CPU, batch 1 and {report.windows}) on {report.check_source}: max relative "
          f"difference {report.max_rel_diff:.2e} <= {report.rtol:g}", file=sys.stdout)
    return 0
