"""``physiowave info CKPT``: architecture, parameters, task and classes, training run and preprocessing."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..fileio import scalars_of
from ..fileio import to_jsonable
from ..inference import TrainedModel, load_trained
from ..models import FusionModel

__all__ = ["add_parser", "summarize", "format_summary"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a checkpoint", description=__doc__)
    p.add_argument("checkpoint", help="PhysioWave checkpoint (.pth), ours or original, or a model folder / Hub repo id")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=run)


def _count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file()) if path.is_dir() else path.stat().st_size


def summarize(trained: TrainedModel) -> dict[str, Any]:
    """Everything a checkpoint (or model folder) says about itself, as a JSON-able dict."""
    model, ckpt = trained.model, trained.checkpoint
    folder = ckpt.get("pretrained_folder")  # a save_pretrained / convert folder: its config.json
    fusion = isinstance(model, FusionModel)
    heads = ({"fusion": _count(model.fusion)} if fusion
             else {name: _count(head) for name, head in model.task_heads.items()})
    data = ckpt.get("data") or {}
    epoch = ckpt.get("epoch")
    return to_jsonable({
        "file": str(trained.path), "size_mb": round(_size(Path(trained.path)) / 2**20, 2),
        "written_by": f"physiowave {ckpt['physiowave_version']} (a model folder: model.safetensors, config.json)"
        if folder else f"physiowave {ckpt['physiowave_version']}" if ckpt.get("physiowave_version")
        else "the original PhysioWave release (or another tool)",
        "architecture": model.config,
        "parameters": {"total": _count(model), "without_heads": _count(model) - sum(heads.values()), "heads": heads},
        "task": {"single": "single-label classification", "multi": "multi-label classification"}.get(
            trained.task, "none (no classification head: embeddings and reconstruction)"),
        "classes": trained.class_names, "thresholds": trained.thresholds,
        "training": {"epoch": None if epoch is None else int(epoch) + 1, "global_step": ckpt.get("global_step"),
                     "best": ckpt.get("best"),
                     "validation": scalars_of(ckpt.get("val_metrics") or {})
                     or {k[4:]: v for k, v in ckpt.items() if k.startswith("val_") and isinstance(v, (int, float))}},
        "args": trained.args or None,
        "data": {k: data[k] for k in ("train_files", "train_samples", "channels", "length", "modalities",
                                      "class_counts", "pretrained") if k in data} or None,
        "modality_weights": model.modality_weights() if fusion else None,
        "preprocessing": trained.preparation.as_dict() if trained.preparation else None, "assumed": trained.assumed,
        **({"folder_assumed": folder.get("assumed") or None, "source": (folder.get("training") or {}).get("source")}
           if folder else {}),
    })


def _block(title: str, values: Any, indent: str = "  ") -> list[str]:
    if not values:
        return []
    if isinstance(values, dict):
        return [f"{title}:"] + [f"{indent}{k}: {v}" for k, v in values.items()]
    return [f"{title}: {values}"]


def format_summary(s: dict[str, Any]) -> str:
    """The summary as readable text."""
    p = s["parameters"]
    lines = [f"{s['file']} ({s['size_mb']} MB), written by {s['written_by']}",
             f"parameters: {p['total']:,} ({p['without_heads']:,} without heads; "
             + ", ".join(f"{k} head {v:,}" for k, v in p["heads"].items()) + ")",
             f"task: {s['task']}"]
    if s["classes"]:
        lines.append(f"classes ({len(s['classes'])}): {', '.join(s['classes'])}")
    if s["thresholds"] is not None:
        lines.append("thresholds: " + ", ".join(f"{t:.3f}" for t in s["thresholds"]))
    lines += _block("modality weights", s["modality_weights"])
    lines += _block("architecture", s["architecture"])
    t = s["training"]
    lines += _block("training", {k: v for k, v in t.items() if v not in (None, {}, [])})
    lines += _block("data", s["data"])
    lines += _block("preprocessing (for embed/predict)", s["preprocessing"])
    if s["assumed"]:
        lines += _block("not recorded in the checkpoint (assumed; embed, predict and plot take flags of these names)",
                         s["assumed"])
    if s.get("folder_assumed"):
        lines += _block("assumed when the folder was written (not recorded by its source)", s["folder_assumed"])
    lines += _block("args", dict(sorted((s["args"] or {}).items())))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    s = summarize(load_trained(args.checkpoint, "cpu", fusion=True))
    print(json.dumps(s, indent=2) if args.json else format_summary(s))
    return 0
