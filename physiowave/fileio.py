"""Small file helpers shared by training and preprocessing (no torch): atomic text/JSON writes."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_write_text", "to_jsonable", "write_json"]


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary name and a rename, so readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def to_jsonable(obj: Any) -> Any:
    """Plain Python values (NumPy scalars/arrays and tuples converted) so JSON and ``weights_only`` loads accept them."""
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
