"""physiowave.figures: PNG size and atomic writes, drawn content checked against independent references."""
from __future__ import annotations

import re
import subprocess
import sys
import struct
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, roc_auc_score

from physiowave import figures as F

RNG = np.random.default_rng(0)


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG IHDR chunk."""
    head = Path(path).read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def curves(ax) -> list:
    """Lines that carry a legend label (not helper lines such as baselines)."""
    return [ln for ln in ax.lines if not ln.get_label().startswith("_") and ln.get_label() != "chance"]


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def runs(flags) -> list[tuple[int, int]]:
    out, start = [], None
    for i, f in enumerate(list(flags) + [False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            out.append((start, i))
            start = None
    return out


# --------------------------------------------------------------------------------------------------- inputs


def bands_inputs(L=3, T=400):
    return RNG.standard_normal(T), RNG.standard_normal((L + 1, T))


def filter_inputs(W=3, C=4, K=8):
    initial = RNG.standard_normal((W, 2, K))
    learned = initial[:, :, None, :] + 0.1 * RNG.standard_normal((W, 2, C, K))
    return [f"w{i}" for i in range(W)], learned, initial


def class_inputs(N=300, K=3):
    y = RNG.integers(0, K, N)
    scores = RNG.random((N, K)) + np.eye(K)[y] * RNG.random((N, 1))
    return scores / scores.sum(1, keepdims=True), y


def history(E=6):
    return {"epoch": list(range(1, E + 1)), "train_loss": list(np.linspace(2, 1, E)),
            "val_loss": [2.1, None, 1.7, float("nan"), 1.4, 1.3][:E], "train_acc": list(np.linspace(0.3, 0.8, E)),
            "val_acc": list(np.linspace(0.3, 0.7, E)), "val_auroc": list(np.linspace(0.6, 0.9, E)),
            "learning_rates": list(np.geomspace(1e-3, 1e-5, E)), "epoch_time": [3.0] * E}


FIGURES = {
    "wavelet_bands": lambda: F.wavelet_bands(*bands_inputs(), fs=100.0, channel_name="ch"),
    "wavelet_filters": lambda: F.wavelet_filters(*filter_inputs()),
    "selector_weights": lambda: F.selector_weights(RNG.dirichlet([1, 1, 1], size=(8, 4)), ["a", "b", "c"]),
    "masked_reconstruction": lambda: F.masked_reconstruction(np.ones((3, 200)), np.zeros((3, 200)),
                                                             RNG.random((3, 10)) < 0.5, 20),
    "confusion_matrix": lambda: F.confusion_matrix(RNG.integers(0, 20, (4, 4)), ["a", "b", "c", "d"]),
    "roc_pr_curves": lambda: F.roc_pr_curves(*class_inputs(), ["x", "y", "z"]),
    "training_curves": lambda: F.training_curves(history()),
}


# ---------------------------------------------------------------------------------------------------- saving


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_every_figure_saves_png_of_expected_size(name, tmp_path):
    fig = FIGURES[name]()
    assert isinstance(fig, Figure)
    path = F.save_figure(fig, tmp_path / "sub" / "dir" / f"{name}.png", dpi=40)
    assert path.is_file() and path.stat().st_size > 1000
    w_in, h_in = fig.get_size_inches()
    assert png_size(path) == F.figure_size_px(fig, 40) == (int(w_in * 40 + 1e-8), int(h_in * 40 + 1e-8))
    assert sorted(p.name for p in path.parent.iterdir()) == [f"{name}.png"]  # no temp file left


def test_size_is_exact_for_fractional_inches_and_ignores_tight_rc(tmp_path):
    fig = Figure(figsize=(3.337, 2.019), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1])
    ax.set_title("a long title that tight bbox would crop around")
    with matplotlib.rc_context({"savefig.bbox": "tight"}):
        path = F.save_figure(fig, tmp_path / "f.png", dpi=100)
    assert png_size(path) == F.figure_size_px(fig, 100) == (333, 201)
    assert matplotlib.image.imread(path).shape[:2] == (201, 333)


def test_failed_save_keeps_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "plot.png"
    target.write_bytes(b"previous")
    fig = FIGURES["selector_weights"]()

    def broken(fh, **kwargs):
        fh.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        F.save_figure(fig, target)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_save_to_unwritable_location_raises_and_writes_nothing(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")  # a file where a folder is needed: fails even for root
    with pytest.raises(OSError):
        F.save_figure(FIGURES["selector_weights"](), blocker / "plot.png")
    assert [p.name for p in tmp_path.iterdir()] == ["not_a_dir"]


# -------------------------------------------------------------------------------------------------- wavelets


def test_wavelet_bands_rows_data_and_time_axis():
    signal, bands = bands_inputs(L=3, T=400)
    fig = F.wavelet_bands(signal, bands, fs=200.0)
    axes = fig.axes
    assert len(axes) == 5
    np.testing.assert_array_equal(axes[0].lines[0].get_ydata(), signal)
    for ax, band in zip(axes[1:], bands):
        np.testing.assert_array_equal(ax.lines[0].get_ydata(), band)
    np.testing.assert_allclose(axes[-1].lines[0].get_xdata(), np.arange(400) / 200.0)
    assert [ax.get_ylabel() for ax in axes] == ["input", "detail 1", "detail 2", "detail 3", "approximation 3"]
    assert axes[-1].get_xlabel() == "time (s)"
    assert F.wavelet_bands(signal, bands).axes[-1].get_xlabel() == "time (samples)"


def test_wavelet_bands_bad_shapes():
    signal, bands = bands_inputs(L=3, T=500)
    with pytest.raises(ValueError, match=r"bands: expected \[L\+1, T\] .*T = len\(signal\) = 500, got \(4, 499\)"):
        F.wavelet_bands(signal, bands[:, :499])
    with pytest.raises(ValueError, match="signal"):
        F.wavelet_bands(bands, bands)
    with pytest.raises(ValueError, match="band_names: expected 4 names, got 2"):
        F.wavelet_bands(signal, bands, band_names=["a", "b"])
    with pytest.raises(ValueError, match="fs"):
        F.wavelet_bands(signal, bands, fs=0.0)


def test_wavelet_filters_layout_taps_and_response():
    names, learned, initial = filter_inputs(W=3, C=4, K=8)
    fig = F.wavelet_filters(names, learned, initial)
    assert len(fig.axes) == 6
    taps_axes, resp_axes = fig.axes[0::2], fig.axes[1::2]
    for r, (ax_t, ax_f) in enumerate(zip(taps_axes, resp_axes)):
        assert len(ax_t.lines) == 2 * 4 + 4 + 1  # channels, initial+mean per band, zero line
        assert len(ax_f.lines) == 4
        ydata = [ln.get_ydata() for ln in ax_t.lines]
        for b in (0, 1):
            assert any(np.allclose(y, initial[r, b]) for y in ydata)
            assert any(np.allclose(y, learned[r, b].mean(0)) for y in ydata)
        # independent reference: DTFT of the channel-mean low-pass filter at the plotted frequencies
        mean_low = learned[r, 0].mean(0)
        line = next(ln for ln in ax_f.lines if ln.get_linestyle() == "-")
        f = line.get_xdata()
        h = np.exp(-2j * np.pi * f[:, None] * np.arange(8)[None, :]) @ mean_low
        np.testing.assert_allclose(line.get_ydata(), 20 * np.log10(np.maximum(np.abs(h), 1e-6)), atol=1e-6)
        assert len(f) == 512 and f.min() == 0 and f.max() < 0.5
    assert resp_axes[-1].get_xlabel() == "frequency (cycles/sample)"
    hz = F.wavelet_filters(names, learned, initial, fs=100.0)
    assert hz.axes[-1].get_xlabel() == "frequency (Hz)"
    assert hz.axes[-1].lines[0].get_xdata().max() == pytest.approx(50, abs=0.2)


def test_wavelet_filters_bad_shapes():
    names, learned, initial = filter_inputs(W=3, C=2, K=8)
    with pytest.raises(ValueError, match=r"learned: expected \[W, 2, C, K\] with W = len\(names\) = 2"):
        F.wavelet_filters(names[:2], learned, initial)
    with pytest.raises(ValueError, match=r"initial: expected \[W, 2, K\] = \(3, 2, 8\), got \(3, 2, 7\)"):
        F.wavelet_filters(names, learned, initial[..., :7])


def test_selector_weights_bars_are_sample_means():
    weights = RNG.dirichlet([1, 2, 3], size=(10, 4))  # [S, L, W]
    fig = F.selector_weights(weights, ["db4", "sym4", "coif3"])
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    errors = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 3 and len(ax.patches) == 4 * 3
    for j, (container, err) in enumerate(zip(bars, errors)):
        np.testing.assert_allclose([p.get_height() for p in container], weights[:, :, j].mean(0))
        assert container.get_label() == ["db4", "sym4", "coif3"][j]
        segments = err.lines[2][0].get_segments()  # one vertical segment per level: mean ± std
        np.testing.assert_allclose([seg[1, 1] - seg[0, 1] for seg in segments], 2 * weights[:, :, j].std(0))
    uniform = [ln for ln in ax.lines if ln.get_linestyle() == ":"]
    assert len(uniform) == 1 and np.allclose(uniform[0].get_ydata(), 1 / 3)
    assert ax.get_ylim() == (0.0, 1.0)
    with pytest.raises(ValueError, match=r"weights: expected \[S, L, W\] .*W = len\(names\) = 2, got \(10, 4, 3\)"):
        F.selector_weights(weights, ["a", "b"])


# ----------------------------------------------------------------------------------------------- pretraining


def test_masked_reconstruction_spans_and_prediction():
    R, T, P, fs = 3, 240, 20, 60.0
    target, prediction = RNG.standard_normal((R, T)), RNG.standard_normal((R, T))
    mask = np.array([[1, 1, 0, 0, 1, 0, 0, 0, 0, 1, 1, 1], [0] * 12, [1] * 12], dtype=bool)
    fig = F.masked_reconstruction(target, prediction, mask, P, fs=fs)
    assert len(fig.axes) == R
    for r, ax in enumerate(fig.axes):
        spans = sorted((p.get_x(), p.get_x() + p.get_width()) for p in ax.patches)
        expected = [(a * P / fs, b * P / fs) for a, b in runs(mask[r])]
        np.testing.assert_allclose(np.array(spans).reshape(-1, 2), np.array(expected).reshape(-1, 2))
        target_line, pred_line = ax.lines
        np.testing.assert_array_equal(target_line.get_ydata(), target[r])
        shown = np.repeat(mask[r], P)
        y = np.asarray(pred_line.get_ydata())
        np.testing.assert_array_equal(np.isfinite(y), shown)
        np.testing.assert_array_equal(y[shown], prediction[r][shown])
    frac = mask.mean()
    assert f"{frac:.0%}" in fig.get_suptitle()


def test_masked_reconstruction_bad_shapes():
    target = np.zeros((2, 100))
    with pytest.raises(ValueError, match=r"mask: expected \[R, T // patch_size\] = \(2, 10\), got \(2, 9\)"):
        F.masked_reconstruction(target, target, np.zeros((2, 9), bool), 10)
    with pytest.raises(ValueError, match="prediction"):
        F.masked_reconstruction(target, target[:, :50], np.zeros((2, 10), bool), 10)
    with pytest.raises(ValueError, match="patch_size"):
        F.masked_reconstruction(target, target, np.zeros((2, 10), bool), 0)


# -------------------------------------------------------------------------------------------- classification


def cell_texts(ax) -> dict[tuple[int, int], str]:
    return {(int(round(t.get_position()[1])), int(round(t.get_position()[0]))): t.get_text() for t in ax.texts}


def test_confusion_matrix_annotations_are_row_normalised():
    m = np.array([[50, 3, 0], [4, 20, 6], [0, 0, 0]])
    names = ["normal", "atrial fib", "other"]
    fig = F.confusion_matrix(m, names)
    ax = fig.axes[0]
    cells = cell_texts(ax)
    assert len(cells) == 9
    for i in range(3):
        for j in range(3):
            pct, count = re.fullmatch(r"([\d.]+)%\n\((\d+)\)", cells[i, j]).groups()
            expected = 100 * m[i, j] / m[i].sum() if m[i].sum() else 0.0
            assert float(pct) == pytest.approx(expected, abs=0.05) and int(count) == m[i, j]
    colours = {t.get_text(): t.get_color() for t in ax.texts}
    assert colours[cells[0, 0]] == "white" and colours[cells[0, 1]] != "white"  # contrast on dark/light cells
    assert [t.get_text() for t in ax.get_xticklabels()] == names and ax.get_xticklabels()[1].get_rotation() == 45
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "true")
    raw = cell_texts(F.confusion_matrix(m, names, normalize=False).axes[0])
    assert raw[1, 2] == "6"
    with pytest.raises(ValueError, match=r"matrix: expected \[K, K\] with K = len\(class_names\) = 2, got \(3, 3\)"):
        F.confusion_matrix(m, names[:2])


def test_roc_pr_legends_match_sklearn():
    scores, y = class_inputs(N=300, K=3)
    fig = F.roc_pr_curves(scores, y, ["x", "y", "z"])
    ax_roc, ax_pr = fig.axes
    assert len(curves(ax_roc)) == 3 and len(curves(ax_pr)) == 3
    for k, name in enumerate("xyz"):
        auc_ = roc_auc_score(y == k, scores[:, k])
        ap = average_precision_score(y == k, scores[:, k])
        assert f"{name} (AUC {auc_:.2f})" in legend_texts(ax_roc)
        assert f"{name} (AP {ap:.2f})" in legend_texts(ax_pr)
    prevalence = sorted(ln.get_ydata()[0] for ln in ax_pr.lines if ln.get_label().startswith("_"))
    np.testing.assert_allclose(prevalence, sorted(np.bincount(y, minlength=3) / 300))


def test_roc_pr_class_without_positives_is_na_without_warning():
    scores, y = class_inputs(N=120, K=3)
    y[y == 2] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = F.roc_pr_curves(scores, y, ["x", "y", "z"])
    ax_roc, ax_pr = fig.axes
    assert len(curves(ax_roc)) == 2 and len(curves(ax_pr)) == 2
    assert "z (n/a)" in legend_texts(ax_roc) and "z (n/a)" in legend_texts(ax_pr)


def test_roc_pr_multilabel_all_positive_class():
    N = 80
    multi = (RNG.random((N, 3)) < 0.4).astype(int)
    multi[:, 1] = 1  # no negatives: no ROC, but a defined PR curve
    scores = RNG.random((N, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = F.roc_pr_curves(scores, multi, ["a", "b", "c"])
    ax_roc, ax_pr = fig.axes
    assert "b (n/a)" in legend_texts(ax_roc) and len(curves(ax_roc)) == 2
    assert len(curves(ax_pr)) == 3
    assert f"a (AUC {roc_auc_score(multi[:, 0], scores[:, 0]):.2f})" in legend_texts(ax_roc)
    with pytest.raises(ValueError, match="labels"):
        F.roc_pr_curves(scores, np.full(N, 3), ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"scores: expected \[N, K\]"):
        F.roc_pr_curves(scores[:, :2], multi, ["a", "b", "c"])


# -------------------------------------------------------------------------------------------------- training


def test_training_curves_panels_and_missing_values():
    h = history()
    fig = F.training_curves(h)
    ax_loss, ax_metric, ax_lr = fig.axes
    lines = {ln.get_label(): ln for ln in ax_loss.lines}
    assert set(lines) == {"train_loss", "val_loss"}
    val = lines["val_loss"]
    np.testing.assert_array_equal(val.get_xdata(), [1, 3, 5, 6])  # None and NaN epochs skipped
    np.testing.assert_array_equal(val.get_ydata(), [2.1, 1.7, 1.4, 1.3])
    assert val.get_color() == lines["train_loss"].get_color()
    assert (lines["train_loss"].get_linestyle(), val.get_linestyle()) == ("-", "--")
    assert {ln.get_label() for ln in ax_metric.lines} == {"train_acc", "val_acc", "val_auroc"}
    assert ax_lr.get_yscale() == "log" and ax_lr.get_xlabel() == "epoch"
    np.testing.assert_allclose(ax_lr.lines[0].get_ydata(), h["learning_rates"])


def test_training_curves_pretraining_history_and_empty():
    h = {"epoch": [1, 2, 3], "train_loss": [1.0, 0.8, 0.7], "val_loss": [1.1, 0.9, 0.85],
         "val_rmse": [1.0, 0.95, 0.9], "learning_rates": [1e-4, 1e-4, 5e-5]}
    fig = F.training_curves(h)
    assert len(fig.axes) == 3
    assert [ln.get_label() for ln in fig.axes[1].lines] == ["val_rmse"]
    assert fig.axes[2].get_yscale() == "linear"
    only_loss = F.training_curves({"train_loss": [None, 2.0, 1.0]})
    assert len(only_loss.axes) == 1
    np.testing.assert_array_equal(only_loss.axes[0].lines[0].get_xdata(), [2, 3])
    for empty in ({}, {"train_loss": []}):
        with pytest.raises(ValueError, match="training history is empty"):
            F.training_curves(empty)


def test_module_does_not_import_torch_or_pyplot():
    code = "import sys, physiowave.figures; print('torch' in sys.modules, 'matplotlib.pyplot' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
