"""One recording → model-ready windows: the pure signal path of preprocessing and inference (no files, no runs).

:func:`process_recording` cleans, filters, resamples, normalises and windows a recording with the
:class:`~physiowave.preprocess.params.SignalParams` the data set was made with; preprocessing (``core``) runs it
over a database, inference (``physiowave predict/embed``) over a user's records. :func:`windows_around_gaps` is
inference's variant for a record with NaN runs too long to interpolate: the windows that overlap one get a reason.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .params import SignalParams
from .readers import Recording
from .signal import (SignalError, bandpass, check_fs, cut_windows, normalize, notch, repair_nan, resample,
                     select_channels, window_starts)

__all__ = ["process_recording", "windows_around_gaps", "nonfinite_reason"]


def process_recording(rec: Recording, params: SignalParams) -> tuple[np.ndarray, np.ndarray, float]:
    """Clean, filter, resample, normalise and window one recording. Returns windows ``[n, C, window]``, their
    starts ``[n]`` (in samples at the output rate) and that rate. Raises SignalError with the reason."""
    x = np.asarray(rec.signal, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] == 0:
        raise SignalError(f"expected a [channels, samples] signal, got shape {x.shape}")
    fs = check_fs(rec.fs)
    idx = select_channels(rec.channel_names, params.channels)
    x = repair_nan(x[idx], fs, params.max_nan_gap)
    if params.bandpass:
        x = bandpass(x, fs, *params.bandpass)
    if params.notch:
        x = notch(x, fs, params.notch)
    if params.target_fs and params.target_fs != fs:
        x = resample(x, fs, params.target_fs)
        fs = params.target_fs
    starts = window_starts(x.shape[1], params.window, params.step, params.tail, params.min_real)
    if not starts:
        padded = f" with --min_real {params.min_real:g}" if params.tail == "pad" else ""
        raise SignalError(f"{x.shape[1]} samples ({x.shape[1] / fs:.3g} s) is shorter than one window "
                          f"({params.window}{padded})")
    if params.norm_scope == "record":
        x = normalize(x, params.normalize)
        windows = cut_windows(x, starts, params.window)
    else:
        windows = cut_windows(x, starts, params.window, params.normalize)
    return windows, np.array([s for s, _ in starts], dtype=np.int64), float(fs)


def nonfinite_reason(x: np.ndarray) -> str | None:
    """Why a window cannot be used (``"has NaN"``, ``"has inf"``, ``"has NaN and inf"``), or None when finite."""
    if np.isfinite(x).all():
        return None
    nan, inf = bool(np.isnan(x).any()), bool(np.isinf(x).any())
    return "has NaN and inf" if nan and inf else "has NaN" if nan else "has inf"


def _long_runs(bad: np.ndarray, max_gap: int) -> np.ndarray:
    """``bad`` [T] → the samples in runs longer than ``max_gap`` (those preprocessing does not interpolate)."""
    edges = np.diff(np.concatenate([[0], bad.astype(np.int8), [0]]))
    out = np.zeros_like(bad)
    for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        if b - a > max_gap:
            out[a:b] = True
    return out


def windows_around_gaps(rec: Recording, params: SignalParams
                        ) -> tuple[np.ndarray, np.ndarray, float, list[str | None]]:
    """:func:`process_recording` of a record whose NaN/inf runs are too long to interpolate (preprocessing skips
    such a record): every run is interpolated so that filters and resampling see a finite signal, the record is
    processed, and each window that overlaps a long run gets a reason (the others are used). Returns (windows,
    starts, output rate, reason or None per window)."""
    idx = select_channels(rec.channel_names, params.channels)
    x = np.asarray(rec.signal, dtype=np.float32)[idx]
    bad = ~np.isfinite(x)
    max_gap = int(round(params.max_nan_gap * rec.fs))
    broken = np.zeros(x.shape[1], bool)   # samples in a long run, in any channel
    has_nan = np.zeros(x.shape[1], bool)
    filled = x.copy()
    t = np.arange(x.shape[1])
    for c in np.flatnonzero(bad.any(axis=1)):
        b = bad[c]
        broken |= b if b.all() else _long_runs(b, max_gap)
        has_nan |= np.isnan(x[c])
        filled[c, b] = 0.0 if b.all() else np.interp(t[b], t[~b], x[c, ~b])
    names = [rec.channel_names[i] for i in idx]
    windows, starts, fs = process_recording(replace(rec, signal=filled, channel_names=names),
                                            replace(params, channels=None))
    ratio = rec.fs / fs                   # input samples per output sample
    n_broken = np.concatenate([[0], np.cumsum(broken)])
    n_nan = np.concatenate([[0], np.cumsum(broken & has_nan)])
    reasons: list[str | None] = []
    for s in starts.tolist():
        lo = min(x.shape[1], int(np.floor(s * ratio)))
        hi = min(x.shape[1], int(np.ceil((s + params.window) * ratio)))
        if n_broken[hi] - n_broken[lo] == 0:
            reasons.append(None)
            continue
        nan = n_nan[hi] - n_nan[lo] > 0
        inf = n_nan[hi] - n_nan[lo] < n_broken[hi] - n_broken[lo]
        reasons.append("has NaN and inf" if nan and inf else "has NaN" if nan else "has inf")
    return windows, starts, fs, reasons
