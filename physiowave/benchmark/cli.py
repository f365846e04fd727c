"""A protocol runner: scratch / linear probe / fine-tuning x label fractions x seeds, one table with bootstrap
intervals over test records, for putting PhysioWave beside published results.

    python -m physiowave.benchmark --train train.h5 --val val.h5 --test test.h5 --pretrained ecg.pth \\
        --modes scratch,probe,finetune --fractions 0.01,0.1,1 --seeds 0,1,2 --out DIR [--metric auroc_macro] \\
        [--jobs N] [--bootstrap 1000] [--dry_run] [-- FLAGS FOR EVERY RUN]
    python -m physiowave.benchmark ptbxl --ptbxl PTBXL_FOLDER --out DIR   (the PTB-XL protocol end to end:
                                                                              physiowave/benchmark/ptbxl.py)

Every cell is a run of the training scripts as a subprocess: ``finetune.py`` when the training file's labels are
``[N]`` class indices, ``finetune_multilabel.py`` when they are multi-hot ``[N, K]``; ``scratch`` = no
``--pretrained_path``, ``probe`` = ``--pretrained_path P --freeze_encoder``, ``finetune`` = ``--pretrained_path P``;
each with ``--train_file --val_file --test_file --label_fraction F --seed S --output_dir DIR/runs/<mode>_f<F>_s<S>``
and the flags after ``--``. The script's output (appended over attempts) is ``run.log`` in that folder.

Resuming: run the same command again. A cell whose folder holds ``test_results.json`` is finished and not run
again (unless the run predates its ``test_records.npz`` although its engine writes one: then it is re-evaluated);
a cell with any other run file (killed, failed) is continued with ``--resume auto`` (the engine continues from the
folder's latest checkpoint, or starts afresh when none was written). Children die with the runner (Linux), so a
killed runner leaves no orphan writing into a folder. ``DIR/protocol.json`` records the files, checkpoint and
flags; a later call with other ones is refused (use another ``--out``).

Outputs in ``--out``: ``results.json`` (protocol, every run, every cell), ``results.md`` (the table) and
``results.png`` (metric vs label fraction, log x, one line per mode, error bars = sd over seeds).

Statistics (``--metric``, default ``auroc_macro``):
* a run's score is computed from its ``test_records.npz`` (per-record probabilities: window probabilities
  averaged per record): ``auroc_macro`` = mean over classes with both positives and negatives of the per-class
  ROC AUC (multi-label: per label; single-label: one-vs-rest), ``acc`` = accuracy of the most probable class
  (single-label). Without that file the engine's ``test_results.json`` gives the number (its ``record`` sub-dict
  if present, else the window-level value, marked as such) and there is no interval. Other ``--metric`` names
  are read from ``test_results.json`` the same way (no interval).
* a cell's mean ± sd is over the seeds that finished (sd with ddof 1; none for one seed).
* the 95 % interval is a percentile bootstrap over test records of the seed-mean score: each of B resamples
  (``--bootstrap``, default 1000) draws R records with replacement, the same records for every seed (all seeds
  are tested on the same file); the metric is computed on each seed's predictions of those records and averaged
  over seeds; the interval is the 2.5th and 97.5th percentiles of the B averages. The resamples come from
  ``--bootstrap_seed`` (default 0), so every cell and seed sees the same ones. A resample where the metric is
  undefined (no class with both positives and negatives) is dropped and counted. It measures the uncertainty
  due to the finite test set; the sd measures the spread over training seeds.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..fileio import atomic_write_text, write_json
from .runner import (MODES, OWN_FLAGS, RESNET_SCRIPT, cell_state, child_env, command, floats, ints, plan,
                     progress, run_cells, script_of)
from .stats import label_kind
from .table import collect, draw, known_metrics, markdown, summarize

__all__ = ["parse_args", "main"]

PROTOCOL_FILE = "protocol.json"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m physiowave.benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=Path, required=True, help="training HDF5 file")
    p.add_argument("--val", type=Path, required=True, help="validation HDF5 file (model selection, thresholds)")
    p.add_argument("--test", type=Path, required=True, help="test HDF5 file")
    p.add_argument("--pretrained", type=Path, default=None, help="checkpoint of the probe and finetune modes")
    p.add_argument("--modes", default="scratch,probe,finetune",
                   help="comma-separated, of scratch, probe, finetune, resnet (a supervised 1-D ResNet, multi-label)")
    p.add_argument("--resnet_args", default="", help="flags of the resnet cells (benchmarks/ptbxl_resnet1d.py), "
                                                     "one quoted string; the flags after -- go to the PhysioWave cells")
    p.add_argument("--fractions", default="0.01,0.1,1", help="label fractions in (0, 1], comma-separated")
    p.add_argument("--seeds", default="0,1,2", help="seeds, comma-separated")
    p.add_argument("--out", type=Path, required=True, help="output folder (runs/, results.*, protocol.json)")
    p.add_argument("--metric", default="auroc_macro",
                   help="table metric: auroc_macro or acc (bootstrapped from test_records.npz), or any key of "
                        "test_results.json's record metrics (no interval); default auroc_macro")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--bootstrap_seed", type=int, default=0, help="seed of the resamples (default 0)")
    p.add_argument("--python", default=sys.executable, help="interpreter of the runs (default: this one)")
    p.add_argument("--dry_run", action="store_true", help="print each cell's state and command; run nothing")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The runner's flags; everything after ``--`` goes to every run."""
    argv = list(sys.argv[1:] if argv is None else argv)
    own, extra = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = _parser()
    cfg = p.parse_args(own)
    cfg.extra = extra
    try:
        cfg.modes = [m for m in cfg.modes.replace(",", " ").split()]
        cfg.fractions = floats(cfg.fractions)
        cfg.seeds = ints(cfg.seeds)
    except ValueError as err:
        p.error(f"--fractions / --seeds: {err}")
    if unknown := [m for m in cfg.modes if m not in MODES]:
        p.error(f"--modes: unknown {', '.join(unknown)} (expected {', '.join(MODES)})")
    for flag, items in (("--modes", cfg.modes), ("--fractions", cfg.fractions), ("--seeds", cfg.seeds)):
        if not items or len(set(items)) != len(items):
            p.error(f"{flag}: expected distinct values, got {items}")
    if bad := [f for f in cfg.fractions if not 0 < f <= 1]:
        p.error(f"--fractions: {bad} not in (0, 1]")
    cfg.fractions = sorted(cfg.fractions)
    if cfg.jobs < 1 or cfg.bootstrap < 1:
        p.error("--jobs and --bootstrap must be ≥ 1")
    if any(m in ("probe", "finetune") for m in cfg.modes) and cfg.pretrained is None:
        p.error("--modes probe/finetune need --pretrained CHECKPOINT (or pass --modes scratch)")
    for name in ("train", "val", "test", "pretrained"):
        path = getattr(cfg, name)
        if path is not None:
            if not path.is_file():
                p.error(f"--{name}: {path}: no such file")
            setattr(cfg, name, path.resolve())
    if clash := [a for a in extra if a.split("=")[0] in OWN_FLAGS]:
        p.error(f"flags after --: {', '.join(clash)} are set by the runner per cell; drop them")
    label_key = next((extra[i + 1] for i, a in enumerate(extra[:-1]) if a == "--label_key"), None) or \
        next((a.split("=", 1)[1] for a in extra if a.startswith("--label_key=")), None)
    try:
        cfg.label_kind = label_kind(cfg.train, label_key)
    except (OSError, ValueError) as err:
        p.error(str(err))
    cfg.title = f"{cfg.test.name} ({'multi' if cfg.label_kind == 'multi' else 'single'}-label), {cfg.test.parent}"
    if "resnet" in cfg.modes and cfg.label_kind != "multi":
        p.error(f"--modes resnet: the baseline ({RESNET_SCRIPT.name}) is multi-label; {cfg.train} is single-label")
    if "resnet" in cfg.modes and not RESNET_SCRIPT.is_file():
        p.error(f"--modes resnet: {RESNET_SCRIPT} not found (it ships with the repository, not the package)")
    if cfg.metric == "acc" and cfg.label_kind == "multi":
        p.error("--metric acc is single-label; the data are multi-label (use auroc_macro)")
    if cfg.metric not in (known := known_metrics(cfg.label_kind)):
        p.error(f"--metric {cfg.metric}: not a metric of {cfg.label_kind}-label runs; "
                f"choose from {', '.join(sorted(known))}")
    cfg.out = cfg.out.resolve()
    return cfg


def _protocol(cfg: argparse.Namespace) -> dict[str, Any]:
    """What a finished run's numbers depend on besides its cell: a later call must agree."""
    return {"train": str(cfg.train), "val": str(cfg.val), "test": str(cfg.test),
            "pretrained": None if cfg.pretrained is None else str(cfg.pretrained), "extra": cfg.extra,
            "resnet_args": cfg.resnet_args, "task": cfg.label_kind, "script": script_of(cfg.label_kind, "python")[1]}


def _check_protocol(cfg: argparse.Namespace) -> None:
    path = cfg.out / PROTOCOL_FILE
    mine = _protocol(cfg)
    if path.is_file():
        old = json.loads(path.read_text())
        diff = [k for k in ("train", "val", "test", "extra", "task") if old.get(k) != mine[k]]
        diff += ["resnet_args"] if old.get("resnet_args", "") != mine["resnet_args"] else []
        if mine["pretrained"] is not None and old.get("pretrained") not in (None, mine["pretrained"]):
            diff.append("pretrained")
        if diff:
            sys.exit(f"error: {cfg.out} holds runs made with other {', '.join(diff)} ({path}); pass another --out")
        mine["pretrained"] = mine["pretrained"] or old.get("pretrained")
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_json(path, mine)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["ptbxl"]:  # the PTB-XL protocol end to end
        from .ptbxl import main as ptbxl_main

        return ptbxl_main(argv[1:])
    cfg = parse_args(argv)
    cells = plan(cfg.out, cfg.modes, cfg.fractions, cfg.seeds, shlex.split(cfg.resnet_args))
    if cfg.dry_run:
        for c in cells:
            state = cell_state(c.folder)
            print(f"# {c.name}: {state}" + (" (not run again)" if state == "done" else ""))
            print(shlex.join(command(c, cfg, state)))
        return 0
    _check_protocol(cfg)
    env = child_env(cfg.jobs)
    script = "multi-label (finetune_multilabel.py)" if cfg.label_kind == "multi" else "single-label (finetune.py)"
    print(f"{len(cells)} runs, {script}, into {cfg.out / 'runs'}", flush=True)
    t0 = time.perf_counter()
    run_cells(cells, cfg, env, progress)
    records = collect(cells, cfg)
    summary = summarize(cells, records, cfg)
    table = markdown(summary, cells, cfg)
    write_json(cfg.out / "results.json", {
        "protocol": {**_protocol(cfg), "title": cfg.title, "modes": cfg.modes, "fractions": cfg.fractions,
                     "seeds": cfg.seeds, "metric": cfg.metric, "bootstrap": cfg.bootstrap,
                     "bootstrap_seed": cfg.bootstrap_seed,
                     "interval": "95 % percentile bootstrap over test records of the seed-mean score (the same "
                                 "resampled records for every seed)"},
        "cells": summary,
        "runs": [{"name": c.name, "mode": c.mode, "fraction": c.fraction, "seed": c.seed, "folder": str(c.folder),
                  **c.result} for c in cells],
        "wall_s": time.perf_counter() - t0})
    atomic_write_text(cfg.out / "results.md", table)
    draw(summary, cfg, cfg.out / "results.png")
    print(f"\n{table}\nwritten: {cfg.out / 'results.md'}, results.json, results.png", flush=True)
    failed = [c.name for c in cells if c.result.get("status") == "failed" or c.result.get("error")]
    if failed:
        print(f"failed: {', '.join(failed)} (run the same command again to retry them)", file=sys.stderr)
    return 1 if failed else 0
