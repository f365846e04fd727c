"""Streaming scan of an HDF5 data set for non-finite values (NaN, ±inf), for the checks before training.

:func:`find_nonfinite` reads ``[N, ...]`` in blocks of whole samples (axis 0), never the whole file: blocks of
whole chunks along axis 0 for chunked data, about ``block_bytes`` (32 MiB) for contiguous data, read into two
reused buffers by a thread that reads the next block while this one is checked. Per block, one sum per sample
flags candidates (a finite sum means every term is finite; an overflow only adds candidates); only flagged samples
are looked at value by value, so a clean file costs about one read of its bytes.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import h5py
import numpy as np
from tqdm import tqdm

from .h5 import open_h5

__all__ = ["NonFinite", "find_nonfinite"]

_BLOCK_BYTES = 32 * 2**20
_MAX_CACHE_BYTES = 1024 * 2**20


@dataclass(frozen=True)
class NonFinite:
    """Non-finite values in dataset ``key`` of ``path``: ``samples`` samples (axis 0) have some; the first is
    sample ``first`` and holds NaN, inf or both (``first_kind``: "NaN", "inf" or "NaN and inf").
    :meth:`describe` states the facts without file and key, for a message that names them itself."""

    path: str
    key: str
    samples: int
    first: int
    first_kind: str
    allow_missing: bool = False

    def describe(self) -> str:
        """One line, e.g. ``sample 17 has NaN (3 samples with non-finite values)``."""
        noun = "sample" if self.samples == 1 else "samples"
        note = ", all-NaN samples not counted" if self.allow_missing else ""
        return f"sample {self.first} has {self.first_kind} ({self.samples} {noun} with non-finite values{note})"

    def __str__(self) -> str:
        """``describe()`` after the file and key: ``a.h5: 'data' sample 17 has NaN (…)``."""
        return f"{self.path}: '{self.key}' {self.describe()}"


def _rows_per_block(dset: h5py.Dataset, block_bytes: int) -> int:
    """Samples per block: a multiple of the chunk rows (chunked) or ~block_bytes (contiguous); at least 1."""
    row_bytes = max(1, int(np.prod(dset.shape[1:], dtype=np.int64)) * dset.dtype.itemsize)
    if dset.chunks is None:
        return max(1, block_bytes // row_bytes)
    step = dset.chunks[0]
    if step * row_bytes > block_bytes:  # one row of chunks exceeds the block: partial reads, cached chunks
        return max(1, block_bytes // row_bytes)
    return step * max(1, block_bytes // (step * row_bytes))


def _cache_bytes(dset: h5py.Dataset) -> int:
    """Chunk cache for a chunked dataset: one row of chunks along axis 0 (blocks smaller than a chunk row then
    decompress each chunk once; blocks of whole chunk rows need no more), capped at 1 GiB; 0 for contiguous data."""
    if dset.chunks is None:
        return 0
    row = int(np.prod(dset.chunks, dtype=np.int64)) * dset.dtype.itemsize
    for size, c in zip(dset.shape[1:], dset.chunks[1:]):
        row *= -(-size // c)
    return int(min(_MAX_CACHE_BYTES, row + 2**20))


def _bad_samples(x: np.ndarray, groups: list[np.ndarray] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block ``[b, C, ...]`` → (indices into the block of the counted samples, has NaN, has inf) for those samples.
    With ``groups``, a group of channels that is all NaN in a sample is excused (a missing modality)."""
    flat = x.reshape(len(x), -1)
    with np.errstate(over="ignore", invalid="ignore"):
        sums = np.add.reduce(flat, axis=1, dtype=np.float32 if x.dtype == np.float16 else None)
    cand = np.flatnonzero(~np.isfinite(sums))  # a finite sum ⇒ every value finite; overflow only adds candidates
    if cand.size == 0:
        return cand, np.zeros(0, bool), np.zeros(0, bool)
    sub = x[cand].reshape(len(cand), x.shape[1], -1)  # [k, C, rest]
    chan_nan = np.isnan(sub)
    chan_inf = np.isinf(sub)
    if groups is not None:
        all_nan = chan_nan.all(axis=2)  # [k, C]
    chan_nan, chan_inf = chan_nan.any(axis=2), chan_inf.any(axis=2)  # [k, C]
    if groups is not None:
        excused = np.zeros_like(all_nan)
        for g in groups:
            excused[:, g] |= all_nan[:, g].all(axis=1, keepdims=True)
        chan_nan &= ~excused
    has_nan, has_inf = chan_nan.any(axis=1), chan_inf.any(axis=1)
    keep = np.flatnonzero(has_nan | has_inf)
    return cand[keep], has_nan[keep], has_inf[keep]


def _blocks(dset: h5py.Dataset, rows: int, bufs: list[np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
    """(start, block) over axis 0, ``rows`` samples per block; one thread reads the next block into the other
    buffer while the caller checks this one (HDF5 reads release the GIL). A block is valid until the next one."""
    n = dset.shape[0]

    def read(i: int, start: int) -> np.ndarray:
        stop = min(n, start + rows)
        block = bufs[i][: stop - start]
        dset.read_direct(block, np.s_[start:stop], np.s_[0:stop - start])
        return block

    starts = range(0, n, rows)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(read, 0, starts[0])
        for k, start in enumerate(starts):
            block = pending.result()
            if k + 1 < len(starts):
                pending = pool.submit(read, (k + 1) % 2, starts[k + 1])
            yield start, block


def find_nonfinite(path: str | os.PathLike[str], key: str, *, allow_missing_samples: bool = False,
                   channel_groups: Sequence[Sequence[int]] | None = None, progress: bool = False,
                   block_bytes: int = _BLOCK_BYTES) -> NonFinite | None:
    """Scan dataset ``key`` of HDF5 file ``path`` (``[N, C, T]``, any numeric dtype) → None when every value is
    finite, else a :class:`NonFinite` (how many samples, the first one, NaN or inf). Integer and bool data are
    finite by construction and are not read.

    ``allow_missing_samples`` (fusion data, where an absent modality is stored as an all-NaN sample): samples
    whose values are all NaN are not counted; partly non-finite samples and any inf still are.
    ``channel_groups`` (with ``allow_missing_samples``; for data split by channels among modalities): each
    group of channels of a sample may be all NaN on its own (e.g. ``[[0, 1, 2], [3, 4]]``); channels outside
    every group must be finite. ``progress`` shows a tqdm bar in bytes. ``block_bytes`` bounds one read
    (rounded to whole chunk rows; at least one sample). One-line FileNotFoundError / ValueError naming the file
    and key when the dataset is missing or not numeric.
    """
    path = os.fspath(path)
    if block_bytes < 1:
        raise ValueError(f"find_nonfinite: block_bytes must be positive, got {block_bytes}")
    if channel_groups is not None and not allow_missing_samples:
        raise ValueError("find_nonfinite: channel_groups needs allow_missing_samples=True")
    with open_h5(path) as f:
        dset = f.get(key)
        if not isinstance(dset, h5py.Dataset):
            raise ValueError(f"{path}: no dataset '{key}' (the file has: {', '.join(sorted(f.keys())) or 'nothing'})")
        kind = dset.dtype.kind
        if kind not in "biufc":
            raise ValueError(f"{path}: '{key}' has dtype {dset.dtype}; expected a numeric array")
        if dset.ndim < 1:
            raise ValueError(f"{path}: '{key}' is a scalar; expected [N, C, T]")
        if kind in "biu" or dset.size == 0:
            return None
        channels = dset.shape[1] if dset.ndim > 1 else 1  # 1-D data: one value per sample
        groups = None
        if allow_missing_samples:
            groups = [np.arange(channels)] if channel_groups is None else [
                np.asarray(list(g), dtype=np.int64) for g in channel_groups]
            for g in groups:
                if g.size == 0 or g.min() < 0 or g.max() >= channels:
                    raise ValueError(f"{path}: '{key}' has {channels} channels; bad channel group {g.tolist()}")
        rows = _rows_per_block(dset, block_bytes)
        n = dset.shape[0]
        cache = _cache_bytes(dset)
        if cache:  # reopen the dataset with a chunk cache that holds what one block touches
            dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
            dapl.set_chunk_cache(10007, cache, 1.0)
            dset = h5py.Dataset(h5py.h5d.open(f.id, key.encode(), dapl=dapl))
        bufs = [np.empty((min(rows, n), *dset.shape[1:]), dtype=dset.dtype) for _ in range(2)]
        bar = None
        if progress:
            bar = tqdm(total=n * bufs[0][:1].nbytes, unit="B", unit_scale=True, unit_divisor=1024,
                       desc=f"{os.path.basename(path)}:{key}", leave=False, file=sys.stderr)
        count, first, first_kind = 0, -1, ""
        blocks = _blocks(dset, rows, bufs)
        try:
            for start, block in blocks:
                bad, has_nan, has_inf = _bad_samples(block if block.ndim > 1 else block[:, None], groups)
                if bad.size:
                    if first < 0:
                        first = start + int(bad[0])
                        first_kind = " and ".join(k for k, v in (("NaN", has_nan[0]), ("inf", has_inf[0])) if v)
                    count += int(bad.size)
                if bar is not None:
                    bar.update(block.nbytes)
        finally:
            blocks.close()  # waits for a pending read before the file closes
            if bar is not None:
                bar.close()
    if count == 0:
        return None
    return NonFinite(path, key, count, first, first_kind, allow_missing_samples)
