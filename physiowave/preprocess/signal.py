"""Signal operations on one recording ``[C, T]``: NaN repair, filters, resampling, channel selection,
normalisation on real samples only, and window placement. Pure numpy/scipy; no I/O."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from scipy import signal as sps

__all__ = ["SignalError", "NORMALIZATIONS", "MIN_FS", "MAX_FS", "check_fs", "repair_nan", "bandpass", "notch",
           "resample", "select_channels", "normalize", "window_starts", "cut_windows"]

NORMALIZATIONS = ("zscore", "minmax", "maxabs", "none")
EPS = 1e-8
MIN_FS, MAX_FS = 1.0, 100_000.0  # the sampling rates, in Hz, a recording may have (ECG, EMG, PPG, EEG ...)


class SignalError(ValueError):
    """A recording that cannot be used after reading (NaN runs, missing channels, too short)."""


def check_fs(fs: object) -> float:
    """``fs`` as a float when it is a finite rate within ``MIN_FS..MAX_FS`` Hz; else SignalError naming it."""
    try:
        value = float(fs)  # type: ignore[arg-type]
        shown = f"{value:g}"
    except (TypeError, ValueError):
        value, shown = math.nan, repr(fs)
    if not (math.isfinite(value) and MIN_FS <= value <= MAX_FS):
        raise SignalError(f"sampling rate {shown} Hz: expected a finite rate within {MIN_FS:g}..{MAX_FS:g} Hz")
    return value


def repair_nan(x: np.ndarray, fs: float, max_gap_s: float) -> np.ndarray:
    """Linearly interpolate NaN/inf runs of at most ``max_gap_s`` seconds in each channel of ``x`` [C, T].

    Raises SignalError for an all-NaN channel or a longer run (the original set them to 0 silently)."""
    bad = ~np.isfinite(x)
    if not bad.any():
        return x
    x = x.copy()
    max_gap = int(round(max_gap_s * fs))
    t = np.arange(x.shape[1])
    for c in np.flatnonzero(bad.any(axis=1)):
        b = bad[c]
        if b.all():
            raise SignalError(f"channel {c} is entirely NaN")
        edges = np.diff(np.concatenate([[0], b.astype(np.int8), [0]]))
        runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
        if runs.max() > max_gap:
            raise SignalError(f"channel {c} has a NaN run of {runs.max() / fs:.3g} s (limit --max_nan_gap "
                              f"{max_gap_s:g} s)")
        x[c, b] = np.interp(t[b], t[~b], x[c, ~b])
    return x


def bandpass(x: np.ndarray, fs: float, low: float, high: float, order: int = 4) -> np.ndarray:
    """Zero-phase Butterworth band-pass of ``x`` [C, T] (``high`` ≥ fs/2 makes it a high-pass)."""
    nyq = fs / 2
    if not 0 <= low < high:
        raise SignalError(f"--bandpass {low:g} {high:g}: expected 0 <= LO < HI")
    if low >= nyq:
        raise SignalError(f"--bandpass low edge {low:g} Hz is not below Nyquist ({nyq:g} Hz)")
    if high >= nyq:
        sos = sps.butter(order, low, btype="highpass", fs=fs, output="sos")
    elif low == 0:
        sos = sps.butter(order, high, btype="lowpass", fs=fs, output="sos")
    else:
        sos = sps.butter(order, [low, high], btype="bandpass", fs=fs, output="sos")
    return sps.sosfiltfilt(sos, x, axis=-1).astype(np.float32)


def notch(x: np.ndarray, fs: float, freq: float, quality: float = 30.0) -> np.ndarray:
    """Zero-phase IIR notch at ``freq`` Hz (mains: 50 or 60) on ``x`` [C, T]; a no-op above Nyquist."""
    if freq >= fs / 2:
        return x
    b, a = sps.iirnotch(freq, quality, fs=fs)
    return sps.filtfilt(b, a, x, axis=-1).astype(np.float32)


def resample(x: np.ndarray, fs: float, target_fs: float) -> np.ndarray:
    """Polyphase resampling of ``x`` [C, T] from ``fs`` to ``target_fs`` (anti-aliased, scipy.resample_poly)."""
    if fs == target_fs:
        return x
    ratio = Fraction(target_fs / fs).limit_denominator(1000)
    if abs(float(ratio) - target_fs / fs) > 1e-9 * target_fs / fs:
        raise SignalError(f"cannot resample {fs:g} Hz to {target_fs:g} Hz with a rational ratio of "
                          "denominator <= 1000")
    return sps.resample_poly(x, ratio.numerator, ratio.denominator, axis=-1).astype(np.float32)


def _key(name: str) -> str:
    return name.strip().lower()


def select_channels(names: list[str], wanted: list[str] | None) -> list[int]:
    """Indices into ``names`` for ``wanted`` channels, in ``wanted`` order (by name, case-insensitive, or by
    integer index given as a string). ``None`` keeps all. Raises SignalError naming the missing channels."""
    if not wanted:
        return list(range(len(names)))
    lookup = {}
    for i, n in enumerate(names):
        lookup.setdefault(_key(n), i)
    idx, missing = [], []
    for w in wanted:
        if _key(w) in lookup:
            idx.append(lookup[_key(w)])
        elif w.strip().lstrip("-").isdigit() and -len(names) <= int(w) < len(names):
            idx.append(int(w) % len(names))
        else:
            missing.append(w)
    if missing:
        raise SignalError(f"missing channel(s) {','.join(missing)}; the record has {len(names)}: "
                          f"{','.join(names)}")
    return idx


def normalize(x: np.ndarray, method: str, real: int | None = None) -> np.ndarray:
    """Per-channel normalisation of ``x`` [C, T] using only the first ``real`` samples (default: all).

    Samples past ``real`` (zero padding) are left at 0 and take no part in the statistics.
    zscore: (x-mean)/(std+eps); minmax: to [-1, 1] (a constant channel becomes 0); maxabs: x/max|x| (an
    all-zero channel stays 0); none: unchanged."""
    if method not in NORMALIZATIONS:
        raise ValueError(f"--normalize {method!r}: expected one of {', '.join(NORMALIZATIONS)}")
    real = x.shape[-1] if real is None else real
    out = np.zeros_like(x, dtype=np.float32)
    v = x[:, :real].astype(np.float64)
    if method == "none":
        out[:, :real] = v
    elif method == "zscore":
        out[:, :real] = (v - v.mean(1, keepdims=True)) / (v.std(1, keepdims=True) + EPS)
    elif method == "minmax":
        lo, hi = v.min(1, keepdims=True), v.max(1, keepdims=True)
        span = hi - lo
        out[:, :real] = np.where(span > 0, 2 * (v - lo) / np.where(span > 0, span, 1) - 1, 0)
    else:
        m = np.abs(v).max(1, keepdims=True)
        out[:, :real] = v / np.where(m > 0, m, 1)
    return out


def window_starts(length: int, window: int, step: int, tail: str = "pad",
                  min_real: float = 0.5) -> list[tuple[int, int]]:
    """(start, real samples) of each window over a record of ``length`` samples.

    Full windows start at 0, step, ... while they fit. With ``tail="pad"``, the windows at the following
    multiples of ``step`` that run past the end are kept, zero-padded, while at least ``min_real`` of them is
    real signal (a record shorter than ``window`` gives one padded window on the same rule). ``tail="drop"``
    keeps full windows only."""
    if window <= 0 or step <= 0:
        raise ValueError(f"--window {window} / --step {step}: expected positive integers")
    if tail not in ("pad", "drop"):
        raise ValueError(f"--tail {tail!r}: expected pad or drop")
    out = [(s, window) for s in range(0, length - window + 1, step)]
    if tail == "pad":
        s = out[-1][0] + step if out else 0
        while s < length and (length - s) >= min_real * window:
            out.append((s, length - s))
            s += step
    return out


def cut_windows(x: np.ndarray, starts: list[tuple[int, int]], window: int,
                method: str | None = None) -> np.ndarray:
    """Cut ``x`` [C, T] into ``[N, C, window]`` at ``starts``; zero-pad short tails and, when ``method`` is
    given, normalise each window on its real samples (per-window scope)."""
    out = np.zeros((len(starts), x.shape[0], window), dtype=np.float32)
    for i, (s, real) in enumerate(starts):
        seg = x[:, s:s + real]
        out[i, :, :real] = seg if method is None else normalize(seg, method)
    return out
