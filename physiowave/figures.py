"""Matplotlib figures for PhysioWave: NumPy arrays in, :class:`~matplotlib.figure.Figure` out.

Pure drawing functions used by ``physiowave plot``, the demo and the training engine (TensorBoard ``add_figure``).
Callers compute the arrays (model outputs, metrics, history); nothing here imports torch or reads files. Only the
object-oriented API is used (``Figure``, never ``pyplot``), so no backend or global state is involved.
:func:`save_figure` writes a PNG (or any format matplotlib writes, by suffix) atomically with exactly
``figsize · dpi`` pixels.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import Bbox

__all__ = ["save_figure", "save_formats", "figure_size_px", "figure_to_array", "wavelet_bands", "wavelet_filters",
           "selector_weights", "masked_reconstruction", "confusion_matrix", "roc_pr_curves", "training_curves",
           "PALETTE"]

# Okabe-Ito colour-blind-safe palette (black left out: it is used for signals/targets).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#999999")
_INK = "#222222"        # raw signal / target traces
_SHADE = "#D9D9D9"      # masked patches
_EXTRA = ("#8C564B", "#17BECF", "#BCBD22", "#7F7F7F", "#1F77B4", "#FF7F0E", "#2CA02C", "#9467BD")


def _colour(i: int) -> str:
    """The i-th colour of the scheme (Okabe-Ito first, then a few distinct extras, then cycling)."""
    colours = PALETTE + _EXTRA
    return colours[i % len(colours)]


# ----------------------------------------------------------------------------------------------------- saving


def figure_size_px(fig: Figure, dpi: int = 100) -> tuple[int, int]:
    """(width, height) in pixels of the PNG that :func:`save_figure` writes at ``dpi`` (matplotlib's truncation)."""
    w, h = fig.get_size_inches() * dpi
    return int(w + 1e-8), int(h + 1e-8)


def save_formats() -> tuple[str, ...]:
    """The file suffixes :func:`save_figure` writes in their own format (``.png``, ``.pdf``, ``.svg``, ...)."""
    return tuple(sorted(f".{ext}" for ext in FigureCanvasBase.get_supported_filetypes()))


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` in the format its suffix names (one of :func:`save_formats`, else PNG), a raster image of
    exactly :func:`figure_size_px` pixels, atomically; returns ``path``.

    The image goes to a temporary ``.<name>.<pid>.tmp.<format>`` in the same folder and is renamed over ``path``,
    so a reader never sees half a file and a failed save leaves any previous file untouched. Parent folders are
    created.
    """
    path = Path(path)
    if dpi <= 0:
        raise ValueError(f"dpi: expected a positive number, got {dpi}")
    fmt = path.suffix[1:].lower()
    fmt = fmt if f".{fmt}" in save_formats() else "png"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.{fmt}")  # same folder: os.replace stays a rename
    try:
        with open(tmp, "wb") as fh:
            # An explicit full-figure box overrides a user's rc "savefig.bbox: tight", which would change the size.
            full = Bbox.from_bounds(0, 0, *fig.get_size_inches())
            fig.savefig(fh, format=fmt, dpi=dpi, facecolor="white", bbox_inches=full)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def figure_to_array(fig: Figure, dpi: int = 100) -> np.ndarray:
    """Render ``fig`` → uint8 RGB image ``[3, H, W]`` (for TensorBoard), without pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig.set_dpi(dpi)
    fig.set_facecolor("white")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].transpose(2, 0, 1).copy()


# ------------------------------------------------------------------------------------------------- validation


def _array(x: np.ndarray, name: str, expected: str, ndim: int) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected {expected}, got shape {a.shape}")
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected a numeric array, got dtype {a.dtype}")
    return a


def _names(names: Sequence[str] | None, count: int, arg: str, default: Sequence[str]) -> list[str]:
    if names is None:
        return list(default)
    names = [str(n) for n in names]
    if len(names) != count:
        raise ValueError(f"{arg}: expected {count} names, got {len(names)}")
    return names


def _check_fs(fs: float | None) -> None:
    if fs is not None and not (math.isfinite(fs) and fs > 0):
        raise ValueError(f"fs: expected a positive sampling rate in Hz or None, got {fs}")


def _time(n: int, fs: float | None) -> tuple[np.ndarray, str, float]:
    """Sample positions on the x axis, its label, and the x length of one sample."""
    if fs is None:
        return np.arange(n, dtype=np.float64), "time (samples)", 1.0
    return np.arange(n) / fs, "time (s)", 1.0 / fs


def _row_label(ax, text: str) -> None:
    ax.set_ylabel(text, rotation=0, ha="right", va="center", labelpad=8)


# ---------------------------------------------------------------------------------------------------- wavelets


def wavelet_bands(signal: np.ndarray, bands: np.ndarray, fs: float | None = None, channel_name: str = "",
                  band_names: Sequence[str] | None = None) -> Figure:
    """One channel ``signal [T]`` above its learned wavelet bands ``bands [L+1, T]``, one row per trace.

    Bands are in the model's order: details of levels 1..L, then the approximation of level L.
    """
    signal = _array(signal, "signal", "[T] (one channel)", 1)
    bands = np.asarray(bands)
    T = len(signal)
    if bands.ndim != 2 or bands.shape[0] < 2 or bands.shape[1] != T or bands.dtype.kind not in "biuf":
        raise ValueError(f"bands: expected [L+1, T] with L >= 1 and T = len(signal) = {T}, got {bands.shape}")
    _check_fs(fs)
    L = bands.shape[0] - 1
    names = _names(band_names, L + 1, "band_names", [f"detail {i}" for i in range(1, L + 1)] + [f"approximation {L}"])

    fig = Figure(figsize=(10, 1.0 + 1.05 * (L + 2)), layout="constrained")
    axes = fig.subplots(L + 2, 1, sharex=True)
    t, xlabel, _ = _time(T, fs)
    axes[0].plot(t, signal, color=_INK, lw=0.9)
    _row_label(axes[0], "input")
    for i, (ax, band) in enumerate(zip(axes[1:], bands)):
        ax.plot(t, band, color=_colour(i), lw=0.9)
        _row_label(ax, names[i])
    for ax in axes:
        ax.grid(alpha=0.3, lw=0.5)
        ax.tick_params(labelsize="small")
        ax.margins(x=0)
    axes[-1].set_xlabel(xlabel)
    fig.suptitle("Learned wavelet decomposition" + (f": {channel_name}" if channel_name else "")
                 + "  (amplitude, a.u.)", fontsize="large")
    return fig


def _response_db(taps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """freqz magnitude in dB on 512 points of [0, π) rad/sample; returns (cycles/sample, dB)."""
    from scipy.signal import freqz

    w, h = freqz(taps, worN=512)
    return w / (2 * np.pi), 20 * np.log10(np.maximum(np.abs(h), 1e-6))


def wavelet_filters(names: Sequence[str], learned: np.ndarray, initial: np.ndarray, fs: float | None = None) -> Figure:
    """Learned vs initial wavelet filters: one row per wavelet, (a) taps and (b) magnitude response in dB.

    ``learned [W, 2, C, K]``: low/high-pass taps of each of the C channels; ``initial [W, 2, K]``: the PyWavelets
    initialisation. Initial filters are dashed, the learned channel mean solid, single channels thin and faint.
    """
    names = [str(n) for n in names]
    W = len(names)
    learned = np.asarray(learned, dtype=np.float64)
    if learned.ndim != 4 or learned.shape[0] != W or learned.shape[1] != 2 or learned.shape[3] < 1:
        raise ValueError(f"learned: expected [W, 2, C, K] with W = len(names) = {W}, got {learned.shape}")
    initial = np.asarray(initial, dtype=np.float64)
    K = learned.shape[3]
    if initial.shape != (W, 2, K):
        raise ValueError(f"initial: expected [W, 2, K] = {(W, 2, K)}, got {initial.shape}")
    if W == 0:
        raise ValueError("names: expected at least one wavelet name, got none")
    _check_fs(fs)

    fig = Figure(figsize=(11, 0.6 + 2.7 * W), layout="constrained")
    axes = fig.subplots(W, 2, squeeze=False)
    colours = {0: PALETTE[0], 1: PALETTE[1]}
    kinds = {0: "low-pass", 1: "high-pass"}
    taps_x = np.arange(K)
    scale = 1.0 if fs is None else fs
    floor = 0.0
    for r, name in enumerate(names):
        ax_t, ax_f = axes[r]
        for b in (0, 1):
            c = colours[b]
            for ch in learned[r, b]:
                ax_t.plot(taps_x, ch, color=c, lw=0.6, alpha=0.25)
            mean = learned[r, b].mean(axis=0)
            ax_t.plot(taps_x, initial[r, b], color=c, ls="--", lw=1.2)
            ax_t.plot(taps_x, mean, color=c, lw=1.8, marker="o", ms=3)
            f, db0 = _response_db(initial[r, b])
            _, db1 = _response_db(mean)
            ax_f.plot(f * scale, db0, color=c, ls="--", lw=1.2)
            ax_f.plot(f * scale, db1, color=c, lw=1.8)
            floor = min(floor, float(np.min(db0)), float(np.min(db1)))
        ax_t.axhline(0, color="grey", lw=0.5)
        ax_t.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_t.set_title(f"{name}: filter taps", fontsize="medium", loc="left")
        ax_t.set_ylabel("tap value")
        ax_f.set_title(f"{name}: magnitude response", fontsize="medium", loc="left")
        ax_f.set_ylabel("gain (dB)")
        ax_f.set_xlim(0, 0.5 * scale)
        for ax in (ax_t, ax_f):
            ax.grid(alpha=0.3, lw=0.5)
    for ax in axes[:, 1]:
        ax.set_ylim(bottom=max(floor, -60.0) - 3)
    axes[-1, 0].set_xlabel("tap index")
    axes[-1, 1].set_xlabel("frequency (Hz)" if fs is not None else "frequency (cycles/sample)")
    handles = [Line2D([], [], color=colours[b], ls=ls, lw=lw, label=f"{kinds[b]} {what}")
               for b in (0, 1) for ls, lw, what in (("--", 1.2, "initial"), ("-", 1.8, "learned (channel mean)"))]
    handles.append(Line2D([], [], color="grey", lw=0.6, alpha=0.5, label="learned (single channels)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=5, fontsize="small", frameon=False)
    fig.suptitle("Wavelet filters: PyWavelets initialisation vs learned", fontsize="large")
    return fig


def selector_weights(weights: np.ndarray, names: Sequence[str]) -> Figure:
    """Wavelet-selection weights ``[S, L, W]`` (softmax over W wavelets, S samples, L levels) as grouped bars.

    Each bar is the mean over samples, the error bar one standard deviation; the dotted line is uniform 1/W.
    """
    names = [str(n) for n in names]
    w = np.asarray(weights, dtype=np.float64)
    W = len(names)
    if w.ndim != 3 or w.shape[0] < 1 or w.shape[1] < 1 or w.shape[2] != W or W == 0:
        raise ValueError(f"weights: expected [S, L, W] with S, L >= 1 and W = len(names) = {W}, got {w.shape}")
    S, L, _ = w.shape
    mean, std = w.mean(axis=0), w.std(axis=0)  # [L, W]

    fig = Figure(figsize=(max(5.5, 1.2 + L * (0.35 * W + 0.5)), 4.2), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / W
    levels = np.arange(L)
    for j, name in enumerate(names):
        ax.bar(levels + (j - (W - 1) / 2) * width, mean[:, j], width * 0.92, yerr=std[:, j], color=_colour(j),
               label=name, capsize=3, error_kw={"elinewidth": 0.9, "ecolor": _INK})
    ax.axhline(1.0 / W, color=_INK, ls=":", lw=1.2, label=f"uniform (1/{W})")
    ax.set_xticks(levels, [f"level {i + 1}" for i in levels])
    ax.set_ylim(0, 1)
    ax.set_ylabel("selection weight (softmax)")
    ax.set_xlabel("decomposition level")
    ax.grid(axis="y", alpha=0.3, lw=0.5)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    ax.set_title(f"Adaptive wavelet selection (mean ± std over {S} sample{'s' if S != 1 else ''})")
    return fig


# --------------------------------------------------------------------------------------------------- pretraining


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index pairs of the runs of True in a 1-D bool array."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def masked_reconstruction(target: np.ndarray, prediction: np.ndarray, mask: np.ndarray, patch_size: int,
                          band_names: Sequence[str] | None = None, fs: float | None = None) -> Figure:
    """Masked-reconstruction pretraining for one channel: target bands, masked patches and the prediction.

    ``target [R, T]`` and ``prediction [R, T]`` are the R wavelet-band rows; ``mask [R, T // patch_size]`` is True
    for a masked patch. The prediction is drawn only over masked patches (shaded), where the loss is computed.
    """
    target = _array(target, "target", "[R, T] (wavelet-band rows of one channel)", 2)
    R, T = target.shape
    prediction = np.asarray(prediction)
    if prediction.shape != (R, T):
        raise ValueError(f"prediction: expected [R, T] = {(R, T)} (the shape of target), got {prediction.shape}")
    if int(patch_size) != patch_size or patch_size < 1 or patch_size > T:
        raise ValueError(f"patch_size: expected an integer in [1, T = {T}], got {patch_size}")
    patch_size = int(patch_size)
    n_patches = T // patch_size
    mask = np.asarray(mask)
    if mask.shape != (R, n_patches):
        raise ValueError(f"mask: expected [R, T // patch_size] = {(R, n_patches)}, got {mask.shape}")
    if mask.dtype != bool and not np.isin(mask, (0, 1)).all():
        raise ValueError("mask: expected booleans (True = masked patch) or 0/1 values")
    mask = mask.astype(bool)
    _check_fs(fs)
    names = _names(band_names, R, "band_names", [f"band {i + 1}" for i in range(R)])

    fig = Figure(figsize=(10, 1.0 + 1.25 * R), layout="constrained")
    axes = fig.subplots(R, 1, sharex=True, squeeze=False)[:, 0]
    t, xlabel, dt = _time(T, fs)
    for r, ax in enumerate(axes):
        for start, stop in _runs(mask[r]):
            ax.axvspan(start * patch_size * dt, stop * patch_size * dt, color=_SHADE, lw=0, zorder=0)
        ax.plot(t, target[r], color=_INK, lw=0.9, zorder=2)
        shown = np.repeat(mask[r], patch_size)
        shown = np.concatenate([shown, np.zeros(T - len(shown), dtype=bool)])
        ax.plot(t, np.where(shown, prediction[r], np.nan), color=PALETTE[1], lw=1.3, zorder=3,
                marker="." if patch_size == 1 else None)
        _row_label(ax, names[r])
        ax.grid(alpha=0.3, lw=0.5)
        ax.tick_params(labelsize="small")
        ax.margins(x=0)
    axes[-1].set_xlabel(xlabel)
    handles = [Line2D([], [], color=_INK, lw=0.9, label="target"),
               Line2D([], [], color=PALETTE[1], lw=1.3, label="prediction (masked patches)"),
               Patch(color=_SHADE, label=f"masked patch ({patch_size} samples)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize="small", frameon=False)
    frac = float(mask.mean()) if mask.size else 0.0
    fig.suptitle(f"Masked reconstruction: {frac:.0%} of patches masked ({int(mask.sum())}/{mask.size})",
                 fontsize="large")
    return fig


# ---------------------------------------------------------------------------------------------- classification


def confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], normalize: bool = True,
                     title: str = "Confusion matrix") -> Figure:
    """Confusion matrix ``[K, K]`` of counts (rows = true class) as a heat map with per-cell annotations.

    ``normalize``: colours are row fractions and cells read ``"pct\\n(count)"``; otherwise colours and cells are counts.
    """
    names = [str(n) for n in class_names]
    K = len(names)
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (K, K) or K == 0:
        raise ValueError(f"matrix: expected [K, K] with K = len(class_names) = {K}, got {m.shape}")
    if not np.isfinite(m).all() or (m < 0).any():
        raise ValueError("matrix: expected finite non-negative counts")
    rows = m.sum(axis=1, keepdims=True)
    frac = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    values = frac if normalize else m
    vmax = 1.0 if normalize else max(float(m.max()), 1.0)

    side = max(4.8, 1.8 + 0.62 * K)
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    cbar = fig.colorbar(im, ax=ax, shrink=0.85)
    cbar.set_label("fraction of true class" if normalize else "count")
    if K <= 25:
        size = "medium" if K <= 6 else ("small" if K <= 12 else "x-small")
        integral = np.allclose(m, np.round(m))
        for i in range(K):
            for j in range(K):
                count = f"{int(round(m[i, j]))}" if integral else f"{m[i, j]:.3g}"
                text = f"{100 * frac[i, j]:.1f}%\n({count})" if normalize else count
                colour = "white" if values[i, j] > 0.55 * vmax else _INK
                ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=size)
    long = max(len(n) for n in names) > 4 or K > 8
    ax.set_xticks(np.arange(K), names, rotation=45 if long else 0, ha="right" if long else "center",
                  rotation_mode="anchor")
    ax.set_yticks(np.arange(K), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} (n = {int(round(m.sum()))}{', row-normalised' if normalize else ''})")
    return fig


def _one_hot_labels(labels: np.ndarray, n: int, k: int) -> tuple[np.ndarray, bool]:
    """[N] class indices or [N, K] multi-hot → bool [N, K], and whether the input was multi-label."""
    y = np.asarray(labels)
    if y.shape == (n,):
        if y.dtype.kind not in "biu" and not (y.dtype.kind == "f" and np.all(y == np.round(y))):
            raise ValueError(f"labels: expected integer class indices of shape ({n},), got dtype {y.dtype}")
        if n and (y.min() < 0 or y.max() >= k):
            raise ValueError(f"labels: expected class indices in [0, {k}), got range [{y.min()}, {y.max()}]")
        return y.astype(np.int64)[:, None] == np.arange(k)[None, :], False
    if y.shape == (n, k):
        if not np.isin(y, (0, 1)).all():
            raise ValueError("labels: expected a multi-hot [N, K] array of 0/1 values")
        return y.astype(bool), True
    raise ValueError(f"labels: expected [N] = ({n},) class indices or [N, K] = ({n}, {k}) multi-hot, got {y.shape}")


def roc_pr_curves(scores: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> Figure:
    """ROC and precision-recall curves per class (one-vs-rest), with AUC / AP in the legend.

    ``scores [N, K]`` class probabilities; ``labels [N]`` class indices (single-label) or ``[N, K]`` multi-hot.
    A class without positives (PR panel) or without positives or negatives (ROC panel) is not drawn there and is
    listed as "name (n/a)" in that legend.
    """
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

    names = [str(n) for n in class_names]
    K = len(names)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != K or K == 0 or s.shape[0] == 0:
        raise ValueError(f"scores: expected [N, K] with N >= 1 and K = len(class_names) = {K}, got {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores: expected finite values")
    N = s.shape[0]
    y, multilabel = _one_hot_labels(labels, N, K)

    fig = Figure(figsize=(11, 5.2), layout="constrained")
    ax_roc, ax_pr = fig.subplots(1, 2)
    ax_roc.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="chance")
    roc_handles, pr_handles = [], []
    for k, name in enumerate(names):
        c = _colour(k)
        pos = int(y[:, k].sum())
        if 0 < pos < N:
            fpr, tpr, _ = roc_curve(y[:, k], s[:, k])
            (line,) = ax_roc.plot(fpr, tpr, color=c, lw=1.6, label=f"{name} (AUC {auc(fpr, tpr):.2f})")
            roc_handles.append(line)
        else:
            roc_handles.append(Line2D([], [], color=c, lw=1.6, alpha=0.35, label=f"{name} (n/a)"))
        if pos > 0:
            precision, recall, _ = precision_recall_curve(y[:, k], s[:, k])
            ap = average_precision_score(y[:, k], s[:, k])
            (line,) = ax_pr.plot(recall, precision, color=c, lw=1.6, drawstyle="steps-post",
                                 label=f"{name} (AP {ap:.2f})")
            pr_handles.append(line)
            ax_pr.axhline(pos / N, color=c, ls=":", lw=1, label="_prevalence")
        else:
            pr_handles.append(Line2D([], [], color=c, lw=1.6, alpha=0.35, label=f"{name} (n/a)"))
    kind = "multi-label" if multilabel else "one-vs-rest"
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC ({kind})")
    ax_pr.set(xlabel="recall", ylabel="precision", title="Precision-recall (dotted: class prevalence)")
    ncol = 1 if K <= 8 else 2
    fontsize = "small" if K <= 8 else "x-small"
    chance = ax_roc.lines[0]
    ax_roc.legend(handles=roc_handles + [chance], loc="lower right", fontsize=fontsize, ncol=ncol)
    ax_pr.legend(handles=pr_handles, loc="best", fontsize=fontsize, ncol=ncol)
    for ax in (ax_roc, ax_pr):
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.02)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3, lw=0.5)
    fig.suptitle(f"ROC and precision-recall curves (n = {N})", fontsize="large")
    return fig


# ---------------------------------------------------------------------------------------------------- training

_LR_KEYS = ("learning_rates", "learning_rate", "lr")
_SKIP_KEYS = {"epoch", "epochs", "epoch_time", "time", "step", "global_step"}
_SKIP_PARTS = ("samples_per_sec", "_time", "memory", "throughput")  # speed and resources: not model quality
_PREFIX_STYLE = {"train": "-", "val": "--", "test": ":"}


def _series(values: object, n: int) -> np.ndarray | None:
    """A list of numbers/None → float array (None → NaN); None for anything not plottable."""
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Sequence):
        return None
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
            return None
        out[i] = float(v)
    return out if len(out) <= n else None


def _split(key: str) -> tuple[str, str]:
    """"val_loss" → ("val", "loss"); "loss" → ("", "loss")."""
    head, _, tail = key.partition("_")
    return (head, tail) if head in _PREFIX_STYLE and tail else ("", key)


def _plot_group(ax, x: np.ndarray, series: dict[str, np.ndarray]) -> None:
    """Lines for a set of keys: one colour per base name, line style by train/val/test prefix, NaN/None skipped."""
    bases: list[str] = []
    for key in series:
        base = _split(key)[1]
        if base not in bases:
            bases.append(base)
    for key, y in series.items():
        prefix, base = _split(key)
        ok = np.isfinite(y)
        ax.plot(x[: len(y)][ok], y[ok], color=_colour(bases.index(base)), ls=_PREFIX_STYLE.get(prefix, "-."),
                marker="o", ms=3, lw=1.5, label=key)


def training_curves(history: Mapping[str, Sequence[float | None]]) -> Figure:
    """Training history (the engine's ``training_history.json``) as stacked panels sharing the epoch axis.

    Panels: (1) every ``*loss`` key (train solid, val dashed, same colour per pair); (2) the other metrics, e.g.
    ``val_acc``, ``val_f1_macro``, ``val_auroc`` (if any); (3) the learning rate (log scale when it spans > 10x).
    None and NaN entries are skipped. An empty history raises ``ValueError``.
    """
    if not isinstance(history, Mapping):
        raise ValueError(f"history: expected a mapping of name → list of values, got {type(history).__name__}")
    lengths = [len(v) for v in history.values() if isinstance(v, Sequence) and not isinstance(v, str)]
    n = max(lengths, default=0)
    if n == 0:
        raise ValueError("training history is empty")
    epoch = _series(history.get("epoch"), n) if "epoch" in history else None
    x = epoch if epoch is not None and len(epoch) == n and np.isfinite(epoch).all() else np.arange(1.0, n + 1)

    losses, metrics, lr = {}, {}, None
    for key, values in history.items():
        y = _series(values, n)
        if y is None or key in _SKIP_KEYS or any(p in key for p in _SKIP_PARTS) or not np.isfinite(y).any():
            continue
        if key in _LR_KEYS:
            lr = lr if lr is not None else y
        elif key.endswith("loss"):
            losses[key] = y
        else:
            metrics[key] = y
    groups = (("loss", losses), ("metrics", metrics), ("learning rate", lr))
    panels = [(title, data) for title, data in groups if data is not None and len(data)]
    if not panels:
        raise ValueError("training history: no loss, metric or learning-rate values to plot")

    fig = Figure(figsize=(9, 0.6 + 2.6 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (title, data) in zip(axes, panels):
        if title == "learning rate":
            ok = np.isfinite(data)
            ax.plot(x[: len(data)][ok], data[ok], color=_INK, marker="o", ms=3, lw=1.5)
            positive = data[ok & (data > 0)]
            if len(positive) and positive.max() > 10 * positive.min():
                ax.set_yscale("log")
            else:
                ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3), useOffset=False)
            ax.set_ylabel("learning rate")
        else:
            _plot_group(ax, x, data)
            ax.set_ylabel(title)
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
        ax.grid(alpha=0.3, lw=0.5)
    axes[-1].set_xlabel("epoch")
    if n <= 20:
        axes[-1].set_xticks(x)
    fig.suptitle(f"Training history ({n} epoch{'s' if n != 1 else ''})", fontsize="large")
    return fig
