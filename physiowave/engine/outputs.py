"""A run's output folder: which files are a run's, who may write them, and writing them safely.

A folder that holds another run's files is refused unless ``--resume`` continues that run (its checkpoint is in
the folder) or ``--overwrite`` replaces it; a checkpoint given to start from never lives in the folder it would be
overwritten in. Every file is written under a temporary name and renamed, and a failed write (full disk,
read-only folder) is a one-line error.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..checkpoint import save_checkpoint
from ..fileio import FolderBusyError, atomic_write_text, folder_lock, nearest_existing, write_failure, write_json
from ..contract import RESULT_FILES, run_files
from .errors import ConfigError

__all__ = ["lock_output_dir", "check_output_dir", "claim_output_dir", "write_checkpoint",
           "write_result", "write_text"]

@contextlib.contextmanager
def lock_output_dir(out: Path) -> Iterator[None]:
    """Hold ``out``'s lock (:func:`physiowave.fileio.folder_lock`) for the run: a second run started into the same
    folder is refused at once with one line, and a lock left by a killed run is free."""
    _check_writable(out)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(folder_lock(out, "--output_dir"))
        except FolderBusyError as err:
            raise ConfigError(str(err)) from None
        except OSError as err:
            raise ConfigError(err.strerror and f"--output_dir {out}: {err.strerror}" or str(err)) from err
        yield


def _check_writable(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output_dir {out}: is a file, not a folder")
    base = nearest_existing(out)
    if not os.access(base, os.W_OK | os.X_OK):
        raise ConfigError(f"--output_dir {out}: {base} is not writable")


def _inside(path: Path, folder: Path) -> bool:
    return folder.resolve() in path.resolve().parents


def check_output_dir(out: Path, *, resume: Path | None, resuming: bool, starts_from: Iterable[str],
                     overwrite: bool) -> list[Path]:
    """Check, writing nothing, that this run may use ``out`` → the files to delete before it starts.

    ``resume``: the checkpoint being continued (None for a new run); ``resuming``: ``--resume`` was given (with
    ``auto``, a folder whose run never wrote a checkpoint is taken over); ``starts_from``: checkpoints the run
    reads and must not overwrite (``--pretrained_path``, modality checkpoints, the one ``--eval`` evaluates).
    """
    _check_writable(out)
    for path in starts_from:
        if path and _inside(Path(path), out):
            raise ConfigError(f"--output_dir {out} holds {path}, the checkpoint this run starts from: the run would "
                              "overwrite it; pass another --output_dir")
    existing = run_files(out)
    if resume is not None and _inside(resume, out):
        return [p for p in existing if p.name in RESULT_FILES]  # the continued run rewrites them at its end
    if not existing or overwrite or (resuming and not any(p.suffix == ".pth" for p in existing)):
        return existing
    names = ", ".join(p.name for p in existing[:4]) + (", …" if len(existing) > 4 else "")
    hint = "--resume auto to continue it, " if not resuming else ""
    raise ConfigError(f"--output_dir {out} holds another run ({names}): pass {hint}--overwrite to replace it, or "
                      "another --output_dir")


def claim_output_dir(out: Path, stale: list[Path]) -> None:
    """Create ``out`` and delete ``stale`` (what :func:`check_output_dir` returned)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        for path in stale:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    except OSError as err:
        raise ConfigError(f"--output_dir {out}: {err.strerror or err}") from err


def _write_error(path: Path, err: BaseException) -> ConfigError:
    return ConfigError(write_failure(path, err))


def write_checkpoint(ckpt: dict[str, Any], *paths: Path) -> None:
    """Save ``ckpt`` to each path atomically (temporary name, then rename)."""
    for path in paths:
        try:
            save_checkpoint(ckpt, path)
        except (OSError, RuntimeError) as err:
            path.with_name(path.name + ".tmp").unlink(missing_ok=True)
            raise _write_error(path, err) from err


def write_result(path: Path, obj: Any) -> None:
    """JSON, atomically."""
    try:
        write_json(path, obj)
    except OSError as err:
        raise _write_error(path, err) from err


def write_text(path: Path, text: str) -> None:
    """Text, atomically."""
    try:
        atomic_write_text(path, text)
    except OSError as err:
        raise _write_error(path, err) from err
