"""Lazy HDF5 datasets: the file contract shared by preprocessing and training.

A file holds ``data`` ``[N, C, T]`` (any numeric dtype, returned as float32) and optionally labels: ``[N]``
class indices (single-label) or ``[N, K]`` multi-hot (float or int). Keys: an explicit ``data_key`` /
``label_key`` must be in the file (no fallback: a typo is a one-line error naming the file and its keys); None
takes the first present of :data:`DATA_KEYS` (``data``, ``input``, ``X``) / :data:`LABEL_KEYS` (``label``,
``labels``, ``y``, ``Y``), as the original release did.

Only shapes and the (small) label arrays are read up front; every ``ds[i]`` reads one sample through an h5py
handle that each process opens for itself, so DataLoader workers never share one and memory does not grow with
the data set. Crop offsets and augmentation draw from ``np.random.default_rng([seed, epoch, index])``: the same
sample gets the same crop in any worker, with any worker count, and after a resume.

Chunk cache: uncompressed data is read with no chunk cache, so HDF5 reads just the requested sample straight
from disk (a cache that holds a whole chunk would read e.g. 49 MB per randomly drawn sample of a PTB-XL file).
Compressed data gets a cache of at least one chunk (64 MiB by default), so reading in order decompresses each
chunk once; at most ``_MAX_OPEN_FILES`` files stay open per process, which bounds that memory.
"""
from __future__ import annotations

import json
import operator
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from ..contract import ATTR_RUN_ID, ATTR_RUN_INFO, DATA_KEYS, LABEL_KEYS

__all__ = ["parse_file_paths", "open_h5", "H5Dataset", "check_complete_set", "DATA_KEYS", "LABEL_KEYS", "crop_bounds",
           "standardize", "pad_right", "fit_length"]

_LABEL_MODES = ("auto", "none", "single", "multi")
_CACHE_BYTES = 64 * 2**20
_CACHE_SLOTS = 10007  # prime, as HDF5 recommends for the hash table of cached chunks
_MAX_OPEN_FILES = 4
_STD_FLOOR = 1e-8

Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def parse_file_paths(spec: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None) -> list[str]:
    """File list from a flag value: a string is split on commas if it has one, else on whitespace; a list
    (argparse ``nargs``) has each element parsed and the results flattened; None or "" gives []."""
    if spec is None:
        return []
    if isinstance(spec, os.PathLike):
        return [os.fspath(spec)]
    if isinstance(spec, str):
        parts = spec.split(",") if "," in spec else spec.split()
        return [p.strip() for p in parts if p.strip()]
    return [path for item in spec for path in parse_file_paths(item)]


def crop_bounds(T: int, L: int, rng: np.random.Generator | None = None) -> tuple[int, int]:
    """Samples ``[start, stop)`` of a length-T signal kept for length L: a random crop with ``rng``, else the centre."""
    start = 0
    if T > L:
        start = int(rng.integers(T - L + 1)) if rng is not None else (T - L) // 2
    return start, min(T, start + L)


def standardize(x: np.ndarray) -> np.ndarray:
    """Z-score each channel of ``[..., C, T]`` over time (std floored at 1e-8). NaN gaps stay NaN and do not enter
    the statistics (an all-NaN channel stays all-NaN: fusion reads that as a missing modality)."""
    mean = x.mean(axis=-1, keepdims=True)
    std = x.std(axis=-1, keepdims=True)
    if np.isnan(mean).any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice" for all-NaN channels
            mean = np.nanmean(x, axis=-1, keepdims=True)
            std = np.nanstd(x, axis=-1, keepdims=True)
    return (x - mean) / np.maximum(std, _STD_FLOOR)


def pad_right(x: np.ndarray, L: int) -> np.ndarray:
    """Right zero-pad the last axis to L samples (no-op when already L long)."""
    if x.shape[-1] >= L:
        return x
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, L - x.shape[-1])])


def fit_length(x: np.ndarray, L: int, normalize: bool) -> np.ndarray:
    """What evaluation does to a stored sample: ``[..., C, T]`` → centre crop, optional z-score, right pad →
    ``[..., C, L]``."""
    start, stop = crop_bounds(x.shape[-1], L)
    x = np.asarray(x[..., start:stop], dtype=np.float32)
    return pad_right(standardize(x) if normalize else x, L)


@dataclass(frozen=True)
class _FileInfo:
    path: str
    data_key: str
    num_samples: int
    cache_bytes: int


def open_h5(path: str, cache_bytes: int = 0) -> h5py.File:
    """Open read-only; FileNotFoundError / ValueError (one line, naming the file) when that is impossible."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: HDF5 file not found")
    if not h5py.is_hdf5(path):
        raise ValueError(f"{path}: not an HDF5 file")
    try:
        return h5py.File(path, "r", rdcc_nbytes=cache_bytes, rdcc_nslots=_CACHE_SLOTS)
    except OSError as err:
        raise ValueError(f"{path}: cannot be opened as HDF5 ({err})") from err


def _file_keys(f: h5py.File) -> str:
    return ", ".join(sorted(f.keys())) or "nothing"


def _find_key(f: h5py.File, path: str, key: str | None, fallbacks: Sequence[str]) -> str | None:
    """An explicit ``key`` if it is a dataset of ``f`` (else a one-line ValueError naming the file and its keys);
    for None the first of ``fallbacks`` present, or None."""
    if key is not None:
        if not isinstance(f.get(key), h5py.Dataset):
            raise ValueError(f"{path}: no dataset '{key}' (the file has: {_file_keys(f)})")
        return key
    return next((k for k in fallbacks if isinstance(f.get(k), h5py.Dataset)), None)


def _cache_bytes(dset: h5py.Dataset) -> int:
    """0 for contiguous or unfiltered data (direct reads); at least one chunk for compressed data."""
    if dset.chunks is None or dset.id.get_create_plist().get_nfilters() == 0:
        return 0
    return max(_CACHE_BYTES, int(np.prod(dset.chunks)) * dset.dtype.itemsize)


def _check_single(path: str, key: str, labels: np.ndarray) -> np.ndarray:
    """Class indices ``[N]`` → int64, or a one-line ValueError."""
    if labels.dtype.kind not in "biuf":
        raise ValueError(f"{path}: '{key}' has dtype {labels.dtype}; expected integer class indices")
    if labels.dtype.kind == "f" and not (np.isfinite(labels).all() and (labels == np.round(labels)).all()):
        bad = labels[~(np.isfinite(labels) & (labels == np.round(labels)))][0]
        raise ValueError(f"{path}: '{key}' has non-integer values (e.g. {bad}); expected class indices")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{path}: '{key}' has negative values (min {labels.min()}); expected class indices >= 0")
    return labels.astype(np.int64)


def _check_multi(path: str, key: str, labels: np.ndarray) -> np.ndarray:
    """Multi-hot ``[N, K]`` → float32, or a one-line ValueError."""
    if labels.dtype.kind not in "biuf":
        raise ValueError(f"{path}: '{key}' has dtype {labels.dtype}; expected multi-hot 0/1 values")
    bad = ~np.isin(labels, (0, 1))
    if bad.any():
        raise ValueError(f"{path}: multi-hot '{key}' has values outside {{0, 1}} (e.g. {labels[bad][0]})")
    return labels.astype(np.float32)


def _read_labels(f: h5py.File, path: str, label_key: str | None, mode: str, n: int, data_key: str
                 ) -> tuple[str, np.ndarray | None]:
    """(label kind, labels) of one file; kind is "none", "single" or "multi". An explicit ``label_key`` must be
    present (in "auto" mode too); without one, "auto" reads a file with none of LABEL_KEYS as unlabelled."""
    key = _find_key(f, path, label_key, LABEL_KEYS)
    if key is None:
        if mode in ("single", "multi"):
            raise ValueError(f"{path}: labels={mode!r} needs a label dataset, but none of {', '.join(LABEL_KEYS)} "
                             f"is present (the file has: {_file_keys(f)})")
        return "none", None
    labels = f[key][()]
    if labels.ndim not in (1, 2):
        raise ValueError(f"{path}: '{key}' has shape {labels.shape}; expected [N] class indices or [N, K] multi-hot")
    kind = "single" if labels.ndim == 1 else "multi"
    if mode in ("single", "multi") and kind != mode:
        expected = "[N] class indices" if mode == "single" else "[N, K] multi-hot"
        raise ValueError(f"{path}: labels={mode!r} expects {expected}, but '{key}' has shape {labels.shape}")
    if labels.shape[0] != n:
        raise ValueError(f"{path}: '{key}' has {labels.shape[0]} entries but '{data_key}' has {n}")
    return kind, (_check_single if kind == "single" else _check_multi)(path, key, labels)


def check_complete_set(f: h5py.File, path: str) -> None:
    """A file written by ``physiowave.preprocess`` belongs to a complete output folder: its folder's completion
    marker exists and names the same run. Else a one-line ValueError (a run that did not finish, or a folder
    holding files of two runs). Files from other tools carry no ``run_id`` and are not checked."""
    run_id = f.attrs.get(ATTR_RUN_ID)
    if run_id is None:
        return
    marker = os.path.join(os.path.dirname(os.path.abspath(path)), str(f.attrs.get(ATTR_RUN_INFO)))
    if not os.path.isfile(marker):
        raise ValueError(f"{path}: no {os.path.basename(marker)} beside it: "
                         "the preprocessing run that wrote it did not finish (rerun that preprocessing, "
                         "with --resume to continue it), or the file was copied without it (copy "
                         f"{os.path.basename(marker)} too)")
    try:
        with open(marker) as m:
            marked = json.load(m).get("run_id")
    except (OSError, ValueError) as err:
        raise ValueError(f"{marker}: unreadable completion marker ({err})") from err
    if marked != str(run_id):
        raise ValueError(f"{path}: written by another preprocessing run than {marker} describes: the folder mixes the "
                         "files of two runs; rerun the preprocessing")


def _scan_file(path: str, data_key: str | None, label_key: str | None, mode: str
               ) -> tuple[_FileInfo, tuple[int, int], str, np.ndarray | None]:
    """Check one file without reading its data → (file info, (C, T), label kind, labels or None)."""
    with open_h5(path) as f:
        check_complete_set(f, path)
        key = _find_key(f, path, data_key, DATA_KEYS)
        if key is None:
            raise ValueError(f"{path}: no data dataset: none of {', '.join(DATA_KEYS)} is present "
                             f"(the file has: {_file_keys(f)})")
        dset = f[key]
        if dset.ndim != 3:
            raise ValueError(f"{path}: '{key}' has shape {dset.shape}; expected 3-D [N, C, T]")
        if dset.dtype.kind not in "biuf":
            raise ValueError(f"{path}: '{key}' has dtype {dset.dtype}; expected a numeric array")
        n, c, t = dset.shape
        if t < 1:
            raise ValueError(f"{path}: '{key}' has shape {dset.shape}; expected T >= 1 samples")
        info = _FileInfo(path, key, n, _cache_bytes(dset))
        kind, labels = ("none", None) if mode == "none" else _read_labels(f, path, label_key, mode, n, key)
    return info, (c, t), kind, labels


class H5Dataset(Dataset):
    """Samples of one or more HDF5 files, concatenated in order, read lazily.

    ``ds[i]`` → ``x`` float32 ``[C, L]`` (labels "none"), or ``(x, y)`` with y an int64 0-d tensor (single) or
    float32 ``[K]`` (multi). ``L = max_length`` (crop: random when ``random_crop`` else centre; shorter signals
    are right zero-padded) or the stored ``T``. ``normalize`` z-scores each channel over the real samples before
    padding; ``augment(x [C, t], rng)`` runs after that, also before padding. ``labels="auto"`` picks "single"
    for ``[N]`` labels, "multi" for ``[N, K]``, "none" when the files have no label dataset (with no explicit
    ``label_key``). ``data_key`` / ``label_key``: the dataset names, which must exist; None (default) takes the
    first present of :data:`DATA_KEYS` / :data:`LABEL_KEYS`. ``labels="none"`` reads no labels (nor checks
    ``label_key``).
    """

    def __init__(self, paths: str | Sequence[str], *, data_key: str | None = None, label_key: str | None = None,
                 labels: str = "auto", max_length: int | None = None, random_crop: bool = False, seed: int = 0,
                 normalize: bool = False, augment: Augment | None = None) -> None:
        if labels not in _LABEL_MODES:
            raise ValueError(f"H5Dataset: labels must be one of {_LABEL_MODES}, got {labels!r}")
        if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer))
                                       or max_length < 1):
            raise ValueError(f"H5Dataset: max_length must be a positive int or None, got {max_length!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"H5Dataset: seed must be a non-negative int, got {seed!r}")
        self._paths = parse_file_paths(paths)
        if not self._paths:
            raise ValueError(f"H5Dataset: no HDF5 files given (paths={paths!r})")
        self.max_length = None if max_length is None else int(max_length)
        self.random_crop = bool(random_crop)
        self.seed = int(seed)
        self.normalize = bool(normalize)
        self.augment = augment
        self._epoch = 0
        self._handles: dict[int, OrderedDict[int, tuple[h5py.File, h5py.Dataset]]] = {}
        self._files: list[_FileInfo] = []
        shape: tuple[int, int] | None = None
        kinds: list[str] = []
        label_parts: list[np.ndarray] = []
        for path in self._paths:
            info, (c, t), kind, part = _scan_file(path, data_key, label_key, labels)
            if shape is None:
                shape = (c, t)
            elif (c, t) != shape:
                first = self._files[0]
                raise ValueError(f"{path}: '{info.data_key}' has shape {(info.num_samples, c, t)} but {first.path} "
                                 f"has {(first.num_samples, *shape)}; all files must share [C, T]")
            self._files.append(info)
            if kinds and kind != kinds[0]:
                raise ValueError(f"{path}: has {kind!r} labels but {self._paths[0]} has {kinds[0]!r} labels; "
                                 "all files must have the same label kind")
            if part is not None and label_parts and part.shape[1:] != label_parts[0].shape[1:]:
                raise ValueError(f"{path}: has {part.shape[1]} labels per sample but {self._paths[0]} has "
                                 f"{label_parts[0].shape[1]}")
            kinds.append(kind)
            if part is not None:
                label_parts.append(part)
        assert shape is not None
        self._channels, self._length = shape
        self._kind = kinds[0]
        self._labels = np.concatenate(label_parts) if label_parts else None
        if self._labels is not None:
            self._labels.flags.writeable = False
        self._ends = np.cumsum([info.num_samples for info in self._files])

    # ------------------------------------------------------------------ properties
    @property
    def file_paths(self) -> list[str]:
        """The files, in concatenation order."""
        return list(self._paths)

    @property
    def sources(self) -> list[tuple[str, str]]:
        """``(file, data key)`` of each file, in order, with the key each file resolved to (for data checks)."""
        return [(info.path, info.data_key) for info in self._files]

    @property
    def num_channels(self) -> int:
        """C."""
        return self._channels

    @property
    def length(self) -> int:
        """T stored on disk."""
        return self._length

    @property
    def output_length(self) -> int:
        """Length L of the returned samples: max_length, or T."""
        return self.max_length if self.max_length is not None else self._length

    @property
    def label_kind(self) -> str:
        """"none", "single" or "multi"."""
        return self._kind

    @property
    def labels_array(self) -> np.ndarray | None:
        """Read-only labels of all samples: int64 ``[N]``, float32 ``[N, K]``, or None."""
        return self._labels

    @property
    def num_classes(self) -> int | None:
        """Single: max label + 1 (0 for no samples); multi: K; none: None."""
        if self._labels is None:
            return None
        if self._kind == "multi":
            return int(self._labels.shape[1])
        return int(self._labels.max()) + 1 if self._labels.size else 0

    @property
    def class_counts(self) -> np.ndarray | None:
        """int64 ``[K]``: samples per class (single) or positives per label (multi); None without labels."""
        if self._labels is None:
            return None
        if self._kind == "multi":
            return self._labels.sum(axis=0).astype(np.int64)
        return np.bincount(self._labels, minlength=self.num_classes).astype(np.int64)

    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch that seeds crop offsets and augmentation (call before building each epoch's loader)."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"H5Dataset.set_epoch: epoch must be a non-negative int, got {epoch!r}")
        self._epoch = int(epoch)

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return int(self._ends[-1])

    def _dataset(self, file_index: int) -> h5py.Dataset:
        """This process's handle on file ``file_index`` (opened on first use; least recently used closed)."""
        handles = self._handles.setdefault(os.getpid(), OrderedDict())
        if file_index in handles:
            handles.move_to_end(file_index)
        else:
            if len(handles) >= _MAX_OPEN_FILES:
                handles.popitem(last=False)[1][0].close()
            info = self._files[file_index]
            f = open_h5(info.path, info.cache_bytes)
            handles[file_index] = (f, f[info.data_key])
        return handles[file_index][1]

    def _locate(self, index: int) -> tuple[int, int]:
        """Global index → (file index, index inside that file)."""
        file_index = int(np.searchsorted(self._ends, index, side="right"))
        start = int(self._ends[file_index - 1]) if file_index else 0
        return file_index, index - start

    def __getitem__(self, index: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        n = len(self)
        i = operator.index(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"H5Dataset: index {index} out of range for {n} samples")
        file_index, local = self._locate(i)
        rng = (np.random.default_rng([self.seed, self._epoch, i])
               if self.random_crop or self.augment is not None else None)
        start, stop = crop_bounds(self._length, self.output_length, rng if self.random_crop else None)
        x = np.asarray(self._dataset(file_index)[local, :, start:stop], dtype=np.float32)  # [C, min(T, L)]
        if self.normalize:
            x = standardize(x)
        if self.augment is not None:
            real = x.shape
            x = np.asarray(self.augment(x, rng), dtype=np.float32)
            if x.shape != real:
                raise ValueError(f"H5Dataset: augment returned shape {x.shape} for input {real}; expected the same")
        x = pad_right(x, self.output_length)
        sample = torch.from_numpy(np.ascontiguousarray(x))
        if self._kind == "none":
            return sample
        if self._kind == "single":
            return sample, torch.tensor(self._labels[i], dtype=torch.int64)
        return sample, torch.from_numpy(self._labels[i].copy())

    def close(self) -> None:
        """Close this process's file handles (they reopen on the next access)."""
        for f, _ in self._handles.pop(os.getpid(), {}).values():
            f.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}  # h5py handles cannot be pickled; each process opens its own
        return state

    def __repr__(self) -> str:
        return (f"H5Dataset({len(self._paths)} file(s), N={len(self)}, C={self._channels}, T={self._length}, "
                f"L={self.output_length}, labels={self._kind!r})")
