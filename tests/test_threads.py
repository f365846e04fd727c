"""physiowave.threads: idle OpenMP threads sleep when other processes already keep the cores busy at start."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from physiowave import threads

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="reads /proc/stat (Linux)")


@pytest.fixture
def busy_machine():
    """One process per core spinning for ~20 s (killed at the end of the test)."""
    hogs = [subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 20: pass"])
            for _ in range(os.cpu_count() or 1)]
    time.sleep(0.5)
    yield
    for hog in hogs:
        hog.kill()
        hog.wait()


def _fresh(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    done = subprocess.run([sys.executable, "-c", code], env={**clean, "PYTHONPATH": str(ROOT), **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_busy_cores_sees_other_processes(busy_machine) -> None:
    assert threads.busy_cores(0.5) >= 0.5 * (os.cpu_count() or 1)


def test_busy_machine_makes_idle_threads_sleep_before_torch_loads(busy_machine) -> None:
    out = _fresh("import os, sys, physiowave.engine\n"
                 "from physiowave import threads\n"
                 "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules, bool(threads.note))")
    assert out == "PASSIVE True True"  # set by importing the engine, which then loaded torch


@pytest.mark.parametrize("setting", ["OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"])
def test_a_users_setting_is_left_alone(setting, busy_machine) -> None:
    value = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "1000"}[setting]
    out = _fresh("import os\nfrom physiowave import threads\n"
                 "print(threads.sleep_idle_threads_if_busy(), os.environ.get('OMP_WAIT_POLICY'))", **{setting: value})
    assert out == f"None {value if setting == 'OMP_WAIT_POLICY' else None}"


def test_too_late_once_torch_is_loaded(busy_machine) -> None:
    out = _fresh("import os, torch\nfrom physiowave import threads\n"
                 "print(threads.sleep_idle_threads_if_busy(), os.environ.get('OMP_WAIT_POLICY'))")
    assert out == "None None"
