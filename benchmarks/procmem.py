"""Peak memory of a command and its process tree (workers included), polled from /proc. Linux only."""
from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass

__all__ = ["TreePeak", "tree", "memory_kb", "run_polled"]


@dataclass
class TreePeak:
    """What :func:`run_polled` saw: exit code, combined output, wall time and peak tree memory."""
    returncode: int
    output: str
    wall_s: float
    peak_rss_mb: float      # sum of RSS over the tree at its largest
    peak_pss_mb: float      # sum of PSS (shared pages split fairly between forked workers)
    max_processes: int


def tree(root: int) -> list[int]:
    """``root`` and its live descendants, from /proc/*/stat."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [root], [root]
    while frontier:
        frontier = [p for p, pp in parent.items() if pp in frontier]
        found += frontier
    return found


def memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in kB; (0, 0) when it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            fields = {ln.split(":")[0]: int(ln.split()[1]) for ln in f if ln.split(":")[0] in ("Rss", "Pss")}
        return fields.get("Rss", 0), fields.get("Pss", 0)
    except (OSError, ValueError, IndexError):
        return 0, 0


def run_polled(cmd: list[str], poll_s: float = 0.2, **popen_kw) -> TreePeak:
    """Run ``cmd`` to completion, polling the summed memory of its process tree every ``poll_s`` seconds."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen_kw)
    peak_rss = peak_pss = peak_procs = 0
    while proc.poll() is None:
        mem = [memory_kb(p) for p in tree(proc.pid)]
        peak_rss = max(peak_rss, sum(m[0] for m in mem))
        peak_pss = max(peak_pss, sum(m[1] for m in mem))
        peak_procs = max(peak_procs, sum(1 for m in mem if m[0]))
        time.sleep(poll_s)
    wall = time.perf_counter() - t0
    return TreePeak(proc.returncode, proc.stdout.read(), wall, peak_rss / 1024, peak_pss / 1024, peak_procs)
