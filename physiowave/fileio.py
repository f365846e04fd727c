"""Small file helpers shared by training and preprocessing (no torch): atomic text/JSON writes, folder locks."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FolderBusyError", "atomic_write_text", "check_free_space", "csv_text", "file_stamp", "folder_lock",
           "nearest_existing", "scalars_of", "to_jsonable", "write_failure", "write_json"]

SPACE_MARGIN = 16 << 20  # bytes left free beyond what a write needs (HDF5 metadata, the file system's own)


class FolderBusyError(RuntimeError):
    """Another process holds the folder's lock."""


@contextlib.contextmanager
def folder_lock(folder: str | Path, flag: str = "--output_dir") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if missing) while the block runs.

    The lock is ``flock`` on the folder itself: the kernel releases it when the process ends in any way (an
    exception, Ctrl-C, kill -9), so a lock left by a killed run is simply free and the next run takes it. A second
    process asking while it is held gets :class:`FolderBusyError` at once. A folder this call created is removed
    again when the block fails and left it empty. ``flag`` names the folder in messages.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{flag} {folder}: is a file, not a folder")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusyError(f"{flag} {folder}: another run is writing to this folder now; wait for it to end "
                                  "or pass another folder") from None
        try:
            yield folder
        except BaseException:
            if created and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
            raise
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary name and a rename, so readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written file behind
        raise


def to_jsonable(obj: Any) -> Any:
    """Plain Python values (NumPy scalars/arrays and tuples converted) so JSON and ``weights_only`` loads accept
    them."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (temporary name, then rename). NaN is written as NaN (Python's json convention)."""
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2) + "\n")


def file_stamp(path: str | Path, block: int = 1 << 20) -> dict[str, Any]:
    """What identifies a file's content cheaply: its size and a SHA-256 of its first and last ``block`` bytes.
    A copy keeps its stamp (path and mtime are not part of it); a file rewritten in place almost never does."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(block))
        if size > block:
            f.seek(max(block, size - block))
            digest.update(f.read(block))
    return {"name": path.name, "size": size, "sha256_ends": digest.hexdigest()}


def nearest_existing(path: str | Path) -> Path:
    """``path`` (absolute) or its nearest ancestor that exists."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return path


def write_failure(path: str | Path, err: BaseException) -> str:
    """A failed write of ``path`` as one line; a full disk named as such (torch reports it as 'unexpected pos',
    HDF5 as a long 'file write failed' text with errno 28)."""
    path, text = Path(path), str(err)
    free = shutil.disk_usage(nearest_existing(path.parent)).free / 2**20
    if getattr(err, "errno", None) == errno.ENOSPC or "unexpected pos" in text or "No space left" in text \
            or "errno = 28" in text or free < 1:
        return (f"cannot write {path}: the disk is full ({free:.1f} MiB free); "
                "the previous file of that name, if any, is intact")
    reason = getattr(err, "strerror", None) or (text.strip().splitlines() or [type(err).__name__])[0]
    return f"cannot write {path}: {reason}"


def check_free_space(path: str | Path, nbytes: int) -> None:
    """OSError(ENOSPC) naming ``path`` unless its file system has ``nbytes`` plus a margin free: for writers (HDF5)
    that cannot be trusted to fail cleanly once the disk is full."""
    free = shutil.disk_usage(Path(path).parent).free
    if free < nbytes + SPACE_MARGIN:
        raise OSError(errno.ENOSPC, f"No space left on device: {nbytes / 2**20:.1f} MiB to write, "
                                    f"{free / 2**20:.1f} MiB free", str(path))


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: Any) -> Any:
    """A CSV cell that spreadsheets show as text: a string starting like a formula (``=``, ``+``, ``-``, ``@``, tab,
    carriage return) gets a leading ``'``; numbers pass unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        try:
            float(value)
            return value
        except ValueError:
            return "'" + value
    return value

def scalars_of(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar entries of a metrics dict (drops confusion matrices, per-class tables, thresholds)."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float, np.generic)) and not isinstance(v, bool)}
