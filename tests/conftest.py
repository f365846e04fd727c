"""Shared test helpers. ``../shared`` (beside the checkout) holds reference fixtures; users' clones lack it."""
from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture
def shared() -> Path:
    """The ../shared folder, or skip with the reason."""
    if not SHARED.is_dir():
        pytest.skip(f"reference fixtures not available: {SHARED} is absent (only the project's CI machines have it)")
    return SHARED


# Denormal floats (e.g. from softmax tails) make CPU kernels 5× slower; training on CPU should flush them too.
torch.set_flush_denormal(True)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def randomize_(model: torch.nn.Module, std: float = 0.1) -> torch.nn.Module:
    """Perturb every parameter, so zero-initialised residual scales no longer hide paths."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * std)
    return model


@contextlib.contextmanager
def lock_held_by_another_process(folder: Path) -> Iterator[subprocess.Popen]:
    """A real process holding ``folder``'s lock (:func:`physiowave.fileio.folder_lock`) while the block runs."""
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom physiowave.fileio import folder_lock\n"
                               "with folder_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)",
                               str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.kill()
        holder.wait()
