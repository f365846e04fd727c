"""The repository passes `ruff check` under pyproject.toml's [tool.ruff] (line length 120, rules E, W, F, B)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_is_clean() -> None:
    pytest.importorskip("ruff", reason="ruff is not installed: pip install -e '.[test]' (the test extra lists it)")
    cmd = [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (
        f"`python -m ruff check .` reported problems (configuration: pyproject.toml [tool.ruff]; "
        f"`python -m ruff check --fix .` repairs those marked [*]):\n{proc.stdout}{proc.stderr}")
