"""Sharing the CPU cores with other jobs.

PyTorch's CPU wheels use GNU OpenMP, whose idle threads spin for a while before they sleep. On cores that another
job also uses, the spinning threads take the time the working ones need: two small trainings on 2 cores each ran
4× slower than alone, where a fair share is 2× (``benchmarks/bench_sharing.py``). With ``OMP_WAIT_POLICY=PASSIVE``
idle threads sleep at once and each ran 1.6× slower; alone, passive waiting costs 10-20 % on a small network, so it
is chosen only when other processes are already busy at start. The policy must be set before torch is imported
(OpenMP reads it once) and changes no number a run computes. Threads are never chosen here: their count changes
the order of floating-point sums, and a resumed run must compute what the killed one would have.
"""
from __future__ import annotations

import os
import sys
import time

__all__ = ["busy_cores", "sleep_idle_threads_if_busy", "note"]

_USER_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")
note: str | None = None  # what sleep_idle_threads_if_busy did in this process, for the run's log


def _proc_stat() -> tuple[int, int, int] | None:
    """(busy jiffies, total jiffies, runnable tasks) of all CPUs from /proc/stat, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
        fields = [int(v) for v in lines[0].split()[1:]]
        running = next(int(line.split()[1]) for line in lines if line.startswith("procs_running"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields), running


def busy_cores(seconds: float = 0.2) -> float | None:
    """How many cores other processes keep busy: the larger of the tasks runnable besides this one now (which sees
    a job starting at the same moment) and the cores they used over the next ``seconds`` (this one sleeps
    meanwhile); None where /proc/stat cannot be read."""
    before = _proc_stat()
    time.sleep(seconds)
    after = _proc_stat()
    if before is None or after is None or after[1] <= before[1]:
        return None
    used = (after[0] - before[0]) / (after[1] - before[1]) * (os.cpu_count() or 1)
    return max(used, float(before[2] - 1))


def sleep_idle_threads_if_busy(threshold: float = 0.5) -> str | None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` when other processes keep at least ``threshold`` cores busy, unless the user
    set the policy, the spin count or the thread count, or torch is already loaded (too late). → a line saying
    what was done, or None."""
    if "torch" in sys.modules or any(k in os.environ for k in _USER_SETTINGS):
        return None
    busy = busy_cores()
    if busy is None or busy < threshold:
        return None
    global note
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    note = (f"other processes were using {busy:.1f} of {os.cpu_count()} cores: idle threads sleep instead of "
            "spinning (OMP_WAIT_POLICY=PASSIVE; set OMP_NUM_THREADS or OMP_WAIT_POLICY to choose yourself)")
    return note
