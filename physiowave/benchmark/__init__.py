"""Benchmarks of PhysioWave beside baselines and published results (``python -m physiowave.benchmark``).

``stats`` (metric, bootstrap, per-record predictions) ← ``runner`` (cells, commands, running them) ← ``table``
(scores, mean ± sd, intervals, Markdown, figure) ← ``cli`` (the generic grid over given files) and ``ptbxl`` (the
PTB-XL protocol end to end).
"""
from .cli import main, parse_args
from .runner import MODES, Cell, cell_state, check_command, command, plan, run_cells
from .stats import BOOTSTRAP_METRICS, Records, bootstrap, label_kind, metric_value, read_records
from .table import collect, draw, known_metrics, markdown, summarize

__all__ = ["MODES", "BOOTSTRAP_METRICS", "Records", "label_kind", "metric_value", "bootstrap", "read_records",
           "Cell", "plan", "cell_state", "check_command", "command", "run_cells", "collect", "summarize", "markdown",
           "draw", "known_metrics", "parse_args", "main"]
