"""A benchmark's results: each finished cell's score, mean ± sd over seeds with a pooled bootstrap interval, the
Markdown table and the figure."""
from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import scalars_of
from .runner import MODES, RECORDS_FILE, RESULTS_FILE, Cell, cell_state, percent, wall_seconds
from .stats import BOOTSTRAP_METRICS, Records, bootstrap, read_records

__all__ = ["known_metrics", "collect", "summarize", "markdown", "draw"]

# Names of the metric in the engine's test_results.json, per task, where they differ from ours.
_ENGINE_KEYS = {("auroc_macro", "single"): "auroc"}


def known_metrics(label_kind: str) -> set[str]:
    """The table metrics of a run's results for ``label_kind`` ("multi" or single-label): the bootstrapped ones and the
    engine's scalar metrics, read off a small example as the engine computes them."""
    from ..engine.metrics import classification_metrics, multilabel_metrics
    k = 3
    probs = np.full((k, k), 0.5 / k) + 0.5 * np.eye(k)
    if label_kind == "multi":
        p = np.clip(probs, 1e-6, 1 - 1e-6)
        scores = multilabel_metrics(np.log(p) - np.log1p(-p), np.eye(k, dtype=np.float32), 0.5, None)
    else:
        scores = classification_metrics(np.log(probs), np.arange(k), None)
    names = set(scalars_of(scores)) | ({"f1_macro_tuned"} if label_kind == "multi" else set())
    return names | {m for m in BOOTSTRAP_METRICS if label_kind != "multi" or m != "acc"}


def _engine_value(results: dict[str, Any], metric: str, label_kind: str) -> tuple[float | None, str]:
    """The metric from ``test_results.json``: its ``record`` sub-dict, else the window-level value."""
    key = _ENGINE_KEYS.get((metric, label_kind), metric)
    for where, level in ((results.get("record") or {}, "record (engine)"), (results, "window")):
        for k in (metric, key):
            v = where.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return float(v), level
    return None, "missing"


def collect(cells: list[Cell], cfg: argparse.Namespace) -> dict[tuple[str, float, int], Records]:
    """Each finished cell's score into ``cell.result`` (``value``, ``level``, ``records``, a per-run ``ci``)
    → the records read, by (mode, fraction, seed). A cell carried from a published results folder
    (``result["carried"]``, see benchmark/carry.py) is scored from the records carried."""
    records: dict[tuple[str, float, int], Records] = {}
    for cell in cells:
        r = cell.result
        carried = r.get("carried")
        r["wall_s"] = wall_seconds(cell.folder) or (carried or {}).get("wall_s") or None
        rec, test = None, {}
        if carried is not None:
            rec = carried["records"]
        else:
            results = cell.folder / RESULTS_FILE
            if r.get("status") == "failed" or not results.is_file():
                continue
            try:
                test = json.loads(results.read_text())
            except (OSError, ValueError) as err:
                r.update(status="failed", error=f"{results}: {err}")
                continue
            npz = cell.folder / RECORDS_FILE
            if cfg.metric in BOOTSTRAP_METRICS and npz.is_file():
                try:
                    rec = read_records(npz)
                except ValueError as err:
                    r.update(status="failed", error=str(err))
                    continue
        if cfg.metric in BOOTSTRAP_METRICS and rec is not None:
            try:
                ci = bootstrap(cfg.metric, [rec.probs], rec.labels, cfg.bootstrap, cfg.bootstrap_seed)
            except ValueError as err:
                r.update(status="failed", error=str(err))
                continue
            records[(cell.mode, cell.fraction, cell.seed)] = rec
            r.update(value=ci["value"], level="record", records=len(rec.record_id), ci=[ci["low"], ci["high"]],
                     ci_dropped=ci["dropped"])
        else:
            r["value"], r["level"] = _engine_value(test, cfg.metric, cfg.label_kind)
            if r["value"] is None:
                r["error"] = f"{cell.folder / RESULTS_FILE}: no '{cfg.metric}'"
    return records


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample sd (ddof 1; None for fewer than two values)."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def summarize(cells: list[Cell], records: dict[tuple[str, float, int], Records], cfg: argparse.Namespace
              ) -> list[dict[str, Any]]:
    """One entry per (mode, fraction): mean ± sd over the seeds with a value, and the pooled bootstrap interval
    of the seed-mean score when every one of those seeds has per-record predictions of the same records."""
    out = []
    for mode in cfg.modes:
        for fraction in cfg.fractions:
            group = [c for c in cells if c.mode == mode and c.fraction == fraction]
            scored = [c for c in group if c.result.get("value") is not None and not math.isnan(c.result["value"])]
            values = [c.result["value"] for c in scored]
            mean, sd = _mean_sd(values)
            entry: dict[str, Any] = {"mode": mode, "fraction": fraction, "n": len(values),
                                     "seeds": [c.seed for c in scored], "values": values, "mean": mean, "sd": sd,
                                     "levels": sorted({c.result["level"] for c in scored}), "ci": None}
            recs = [records.get((mode, fraction, c.seed)) for c in scored]
            if not scored:
                entry["ci_note"] = "no finished run"
            elif any(r is None for r in recs):
                entry["ci_note"] = f"no {RECORDS_FILE} (the engine does not write it yet)" \
                    if cfg.metric in BOOTSTRAP_METRICS else f"no interval for {cfg.metric}"
            elif any(not np.array_equal(r.record_id, recs[0].record_id) for r in recs):
                entry["ci_note"] = "the seeds' test records differ: no pooled interval"
            else:
                ci = bootstrap(cfg.metric, [r.probs for r in recs], recs[0].labels, cfg.bootstrap, cfg.bootstrap_seed)
                entry.update(ci=[ci["low"], ci["high"]], ci_dropped=ci["dropped"], records=len(recs[0].record_id))
            out.append(entry)
    return out


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def markdown(summary: list[dict[str, Any]], cells: list[Cell], cfg: argparse.Namespace) -> str:
    """The table (mode x fraction: mean ± sd over seeds, [95 % bootstrap interval]) and one row per run."""
    by = {(e["mode"], e["fraction"]): e for e in summary}
    window = any("window" in e["levels"] for e in summary)
    lines = [f"# {cfg.title}", "",
             f"Test {cfg.metric}, mean ± sd over seeds ({', '.join(map(str, cfg.seeds))}; n = seeds that finished), "
             f"[95 % percentile bootstrap interval over test records of the seed-mean score, "
             f"{cfg.bootstrap} resamples, seed {cfg.bootstrap_seed}].", "",
             "| method | " + " | ".join(f"{percent(f)} labels" for f in cfg.fractions) + " |",
             "|---|" + "---:|" * len(cfg.fractions)]
    for mode in cfg.modes:
        row = []
        for f in cfg.fractions:
            e = by[(mode, f)]
            if not e["n"]:
                row.append("—")
                continue
            text = (f"{_fmt(e['mean'])} ± {_fmt(e['sd'])}"
                    + (f" [{_fmt(e['ci'][0])}, {_fmt(e['ci'][1])}]" if e["ci"] else ""))
            text += " (window-level)" if "window" in e["levels"] else ""
            row.append(text + (f" (n = {e['n']})" if e["n"] != len(cfg.seeds) else ""))
        lines.append(f"| {MODES[mode]} | " + " | ".join(row) + " |")
    notes = sorted({e["ci_note"] for e in summary if e.get("ci_note") and e["n"]})
    if window:
        notes.append("window-level: a run without per-record scores; its number is the engine's window-level metric")
    lines += [""] + [f"- {n}" for n in notes] + ([""] if notes else [])
    lines += ["## Runs", "", "| run | status | " + cfg.metric + " | 95 % interval | level | wall seconds |",
              "|---|---|---:|---|---|---:|"]
    for c in cells:
        r = c.result
        ci = f"[{_fmt(r['ci'][0])}, {_fmt(r['ci'][1])}]" if r.get("ci") else ""
        secs = f"{r['wall_s']:.0f}" if r.get("wall_s") else ""
        # a report-only call ran nothing: say the state (a cell carried from a published folder is done there)
        status = r.get("status") or ("done (carried)" if "carried" in r else cell_state(c.folder, c.done_file))
        lines.append(f"| {c.name} | {status} | {_fmt(r.get('value'))} | {ci} | "
                     f"{r.get('level', '')} | {secs} |")
    return "\n".join(lines) + "\n"


def draw(summary: list[dict[str, Any]], cfg: argparse.Namespace, path: Path) -> Path:
    """``metric`` vs label fraction (log x), one line per mode, error bars = sd over seeds."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullLocator

    from ..figures import PALETTE, save_figure

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for i, mode in enumerate(cfg.modes):
        pts = [e for e in summary if e["mode"] == mode and e["mean"] is not None]
        if not pts:
            continue
        dodge = 10 ** (0.015 * (i - (len(cfg.modes) - 1) / 2))  # side by side, so the error bars do not overlap
        ax.errorbar([e["fraction"] * dodge for e in pts], [e["mean"] for e in pts], yerr=[e["sd"] or 0.0 for e in pts],
                    color=PALETTE[i % len(PALETTE)], marker="o", capsize=4, lw=1.5, label=MODES[mode])
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(list(cfg.fractions)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([percent(f) for f in cfg.fractions])
    ax.set_xlabel("labelled training records")
    ax.set_ylabel(f"test {cfg.metric}")
    ax.set_title(cfg.title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=9, title="error bars: sd over seeds", title_fontsize=8)
    return save_figure(fig, path)
