"""ONNX export of a PhysioWave model, checked against PyTorch in ONNX Runtime (what ``physiowave export`` runs).

The graph takes the same windows as the model's ``forward``: float32 ``x [batch, C, T]`` with a dynamic batch
size and the length ``T`` fixed (the training window). It returns ``logits [batch, K]`` (the classification head)
or ``features [batch, D]`` (``model.features``: the encoder output under the model's pooling; ``[batch, F·D]``
for ``bands``). With ``with_norm`` (the default) the model's input normalisation (``input_norm="rms"``) is inside
the graph, so it takes raw windows exactly as ``model(x)`` does; without it the graph expects windows already
divided by their RMS scale (:func:`physiowave.models.input_norm.normalize_input`). Original checkpoints have
``input_norm="none"``: their graph takes raw windows either way.

Exporter: ``torch.onnx.export(dynamo=True)`` (torch.export → onnxscript), the default of torch ≥ 2.9; the
TorchScript exporter (``exporter="torchscript"``) exports the model as well and is kept as a fallback.

The check: max over windows of ``max |onnx − torch| / max(max |torch|, 1e-6)`` (per window: the largest error
relative to the window's largest output), which must be ≤ ``rtol`` (1e-4 for fp32).
"""
from __future__ import annotations

import copy
import json
import os
import time
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .models import FusionModel, PhysioWave
from .models.input_norm import normalize_input

__all__ = ["EXTRA_HINT", "MissingExtraError", "ExportCheckError", "ExportReport", "require_export_extra",
           "recorded_length", "ExportWrapper", "export_onnx", "run_onnx", "max_rel_diff", "WHATS", "EXPORTERS"]

EXTRA_HINT = "pip install physiowave[export]"
WHATS = ("logits", "features")
EXPORTERS = ("dynamo", "torchscript")
RTOL = 1e-4
_FLOOR = 1e-6


class MissingExtraError(RuntimeError):
    """An optional package of the ``export`` extra is not installed."""


class ExportCheckError(ValueError):
    """ONNX Runtime's output differs from PyTorch's beyond the tolerance (nothing was written)."""


def require_export_extra(exporter: str = "dynamo") -> None:
    """Import onnx, onnxruntime (and onnxscript for the dynamo exporter) or raise one line naming the extra."""
    needed = ["onnx", "onnxruntime"] + (["onnxscript"] if exporter == "dynamo" else [])
    missing = []
    for name in needed:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingExtraError(f"ONNX export needs {', '.join(needed)}; missing: {', '.join(missing)}: {EXTRA_HINT}")


def recorded_length(checkpoint: dict[str, Any], args: dict[str, Any] | None = None) -> int | None:
    """The training input length a checkpoint records: ``data.length`` (ours), else the ``max_length`` flag."""
    data = checkpoint.get("data") or {}
    length = data.get("length")
    if isinstance(length, (int, np.integer)) and length > 0:
        return int(length)
    max_length = (args or {}).get("max_length")
    return int(max_length) if isinstance(max_length, (int, np.integer)) and max_length > 0 else None


class ExportWrapper(nn.Module):
    """``x [B, C, T]`` → ``logits`` (``model(x)``) or ``features`` (``model.features(x)``); with ``with_norm=False``
    the model's ``input_norm`` is left out (the wrapped model is a shallow copy sharing the weights)."""

    def __init__(self, model: PhysioWave, what: str = "logits", with_norm: bool = True):
        super().__init__()
        if what not in WHATS:
            raise ValueError(f"what must be one of {WHATS}, got {what!r}")
        if not with_norm and model.config.get("input_norm", "none") != "none":
            model = copy.copy(model)  # same parameters and submodules; only the config differs
            model.config = {**model.config, "input_norm": "none"}
        self.model = model
        self.what = what

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) if self.what == "logits" else self.model.features(x)


def max_rel_diff(actual: np.ndarray, expected: np.ndarray) -> float:
    """Max over rows (windows) of ``max |actual − expected| / max(max |expected|, 1e-6)``."""
    a = np.asarray(actual, np.float64).reshape(len(actual), -1)
    b = np.asarray(expected, np.float64).reshape(len(expected), -1)
    if a.shape != b.shape:
        raise ExportCheckError(f"ONNX output shape {a.shape} differs from PyTorch's {b.shape}")
    if not np.isfinite(a).all():
        return float("inf")
    err = np.abs(a - b).max(axis=1)
    scale = np.maximum(np.abs(b).max(axis=1), _FLOOR)
    return float((err / scale).max())


def run_onnx(path: str | Path, x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Run an exported file in ONNX Runtime (CPUExecutionProvider) on ``x [B, C, T]`` float32."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x, np.float32)})[0]


@dataclass
class ExportReport:
    path: str
    what: str
    with_norm: bool            # the graph takes raw windows (input_norm inside, or none to apply)
    input_norm: str            # the model's input_norm
    input_shape: list          # ["batch", C, T]
    output_shape: list         # ["batch", K or D]
    exporter: str
    opset: int
    windows: int               # windows the check ran on
    check_source: str          # where they came from
    max_rel_diff: float        # see max_rel_diff
    rtol: float
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _caches(model: nn.Module) -> list[tuple[nn.Module, str, dict]]:
    """Per-shape tensor caches of the model's modules (positional tables, rotary tables)."""
    return [(m, k, dict(v)) for m in model.modules() for k, v in vars(m).items()
            if k.endswith("cache") and isinstance(v, dict)]


def _export_graph(wrapper: nn.Module, example: torch.Tensor, path: Path, exporter: str, opset: int | None,
                  output_name: str) -> None:
    kwargs: dict[str, Any] = dict(input_names=["x"], output_names=[output_name])
    if opset is not None:
        kwargs["opset_version"] = opset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            import logging
            quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
            levels = [lg.level for lg in quiet]
            for lg in quiet:
                lg.setLevel(logging.ERROR)
            try:
                torch.onnx.export(wrapper, (example,), str(path), dynamo=True, external_data=False, verbose=False,
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},), **kwargs)
            finally:
                for lg, level in zip(quiet, levels):
                    lg.setLevel(level)
        elif exporter == "torchscript":
            torch.onnx.export(wrapper, (example,), str(path), dynamo=False, do_constant_folding=True,
                              dynamic_axes={"x": {0: "batch"}, output_name: {0: "batch"}}, **kwargs)
        else:
            raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")


def export_onnx(model: PhysioWave, output: str | Path, length: int, what: str = "logits", with_norm: bool = True,
                opset: int | None = None, windows: np.ndarray | None = None, check_source: str = "",
                rtol: float = RTOL, exporter: str = "dynamo", metadata: dict[str, Any] | None = None,
                seed: int = 0) -> ExportReport:
    """Export ``model`` (eval mode, CPU, float32) to ``output`` (.onnx), check it, and only then move it into place.

    ``windows [n, C, length]`` are the check's input (raw, as ``model(x)`` takes them); None: 8 seeded normal
    windows. ONNX Runtime runs window 0 alone (batch 1) and then all of them (batch n); both are compared with
    PyTorch's output for the raw windows (the normalisation applied outside the graph when ``with_norm`` is off).
    Raises :class:`ExportCheckError` when the max relative difference exceeds ``rtol`` (nothing is written),
    :class:`MissingExtraError` without the ``export`` extra. ``metadata`` is stored in the file's
    ``metadata_props`` (JSON values)."""
    require_export_extra(exporter)
    import onnx

    if isinstance(model, FusionModel):
        raise ValueError("a multi-modal fusion model takes several inputs: export supports single-modality models")
    if what == "logits" and "classification" not in model.task_heads:
        raise ValueError("this model has no classification head (a pretraining checkpoint): export --what features")
    output = Path(output)
    if output.suffix.lower() != ".onnx":
        raise ValueError(f"-o {output}: expected an .onnx file name")
    model = model.float().cpu().eval()
    C, P = model.in_channels, model.patch_size
    if length < P or length % P:
        raise ValueError(f"--length {length}: must be a positive multiple of the model's patch_size {P}")
    source = check_source
    if windows is None:
        windows = torch.randn(8, C, length, generator=torch.Generator().manual_seed(seed)).numpy()
        source = source or "8 random normal windows (seeded)"
    windows = np.ascontiguousarray(windows, np.float32)
    if windows.ndim != 3 or windows.shape[1:] != (C, length):
        raise ValueError(f"check windows have shape {windows.shape}, the model takes [n, {C}, {length}]")
    norm = model.config.get("input_norm", "none")
    wrapper = ExportWrapper(model, what, with_norm).eval()
    x = torch.from_numpy(windows)
    start = time.perf_counter()
    saved = _caches(model)
    with torch.inference_mode():
        expected = (model(x) if what == "logits" else model.features(x)).float().numpy()  # also fills the caches
        graph_in = x if with_norm else normalize_input(x, norm)
    example = torch.from_numpy(windows[:2].copy()) if len(windows) >= 2 else x.repeat(2, 1, 1)
    tmp = output.with_name(f".{output.name}.partial")
    try:
        with torch.no_grad():
            _export_graph(wrapper, example, tmp, exporter, opset, what)
        graph_np = graph_in.numpy()
        got1 = run_onnx(tmp, graph_np[:1])
        gotn = run_onnx(tmp, graph_np)
        diff = max(max_rel_diff(got1, expected[:1]), max_rel_diff(gotn, expected))
        if not diff <= rtol:
            raise ExportCheckError(f"the exported graph differs from PyTorch: max relative difference {diff:.3g} > "
                                   f"{rtol:g} on {len(windows)} windows ({source}); nothing written to {output}")
        proto = onnx.load(str(tmp))
        used_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
        meta = {"physiowave.what": what, "physiowave.with_norm": with_norm, "physiowave.input_norm": norm,
                "physiowave.input": f"x [batch, {C}, {length}] float32: "
                + ("raw windows, as model(x) takes them" if with_norm or norm == "none"
                   else f"windows already divided by their {norm} scale (input_norm outside the graph)"),
                "physiowave.pooling": model.config.get("pooling"), **(metadata or {})}
        onnx.helper.set_model_props(proto, {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()})
        onnx.save(proto, str(tmp))
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
        for module, name, cache in saved:  # drop whatever export put in the per-shape caches
            setattr(module, name, cache)
    return ExportReport(str(output), what, with_norm or norm == "none", norm, ["batch", C, length],
                        ["batch", int(expected.shape[1])], exporter, int(used_opset), len(windows), source,
                        diff, rtol, round(time.perf_counter() - start, 2))


def collect_windows(batches: Iterable[np.ndarray], limit: int) -> np.ndarray | None:
    """Concatenate window arrays ``[n, C, T]`` up to ``limit`` windows (None when there are none)."""
    out, n = [], 0
    for w in batches:
        take = w[: limit - n]
        out.append(take)
        n += len(take)
        if n >= limit:
            break
    return np.concatenate(out) if out else None
