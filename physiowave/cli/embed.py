"""``physiowave embed CKPT INPUT... -o out.h5|out.npy``: encoder embeddings of every window (or record).

Each window gives the pooled encoder output ``pool(model.encode(x))`` with the checkpoint's pooling:
``[(L+1)·C·D]`` with ``bands`` pooling (new models' default), ``[D]`` with ``mean`` (original checkpoints);
``--tokens`` also keeps every token ``[N, D]`` (.h5 only); ``--per_record`` averages the windows of each record.
``.h5`` output holds ``embedding`` ``[n, F]``, ``record_id`` and ``start`` (window rows) and the preparation as
attributes; ``.npy`` holds the ``embedding`` array alone. A window that holds NaN/inf after preprocessing is never
given to the model: it has no row and is named in the last line.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..contract import RECORD_ID, START
from ..fileio import check_free_space, to_jsonable, write_failure
from ..inference import Skipped, TrainedModel, group_mean, run_inputs
from ..models.heads import pool_tokens
from .common import (INPUTS_HELP, add_model_arguments, add_preparation_arguments, check_preparation, prepare_output,
                     report_skipped, trained_from_args)

__all__ = ["add_parser", "embed", "SUFFIXES"]

SUFFIXES = (".h5", ".hdf5", ".npy")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="encoder embeddings of recordings", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p, INPUTS_HELP)
    p.add_argument("-o", "--output", required=True, help="output file: .h5 (embeddings + ids) or .npy (array only)")
    p.add_argument("--tokens", action="store_true", help="also store per-token embeddings [n, N, D] (.h5 only)")
    p.add_argument("--per_record", action="store_true", help="average the window embeddings of each record")
    add_preparation_arguments(p)
    p.set_defaults(run=run)


def _append(dset: h5py.Dataset, values: np.ndarray) -> None:
    n = dset.shape[0]
    dset.resize(n + len(values), axis=0)
    dset[n:] = values


def check_output(output: Path, tokens: bool, per_record: bool) -> None:
    """One-line ValueError for an output name or flag combination ``embed`` cannot write."""
    suffix = output.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"-o {output}: expected a .h5 or .npy file name")
    if tokens and (suffix == ".npy" or per_record):
        raise ValueError("--tokens needs .h5 output and window rows (not --per_record)")


def embed(trained: TrainedModel, inputs: list[str], output: Path, tokens: bool = False, per_record: bool = False,
          batch_size: int = 64, progress: bool = True) -> dict[str, Any]:
    """Write embeddings of ``inputs`` to ``output`` (.h5 or .npy, written under a temporary name then renamed).
    Returns counts: ``records``, ``windows``, ``skipped`` (records), ``skipped_windows`` and the
    :class:`~physiowave.inference.Skipped` itself (``skipped_reasons``)."""
    check_output(output, tokens, per_record)
    suffix = output.suffix.lower()
    skipped = Skipped()
    pooling = trained.pooling

    def outputs(model, x):
        t = model.encode(x)
        return {"embedding": pool_tokens(t, pooling, model.num_bands), **({"tokens": t} if tokens else {})}

    rows_emb, rows_id, rows_start = [], [], []
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".partial")
    # HDF5 writes go through a Python file: a full disk is then an OSError, where HDF5's own driver can crash on close
    handle = open(tmp, "wb+") if suffix != ".npy" else None
    f = h5py.File(handle, "w") if handle is not None and tokens else None
    writing = False  # an OSError while writing the output is reported as such (a full disk...)
    try:
        for keys, out, _ in run_inputs(trained, inputs, batch_size, outputs, skipped, "embed", progress):
            rows_emb.append(out["embedding"])
            rows_id += [k for k, _ in keys]
            rows_start += [s for _, s in keys]
            if f is not None:
                if "tokens" not in f:
                    f.create_dataset("tokens", shape=(0, *out["tokens"].shape[1:]),
                                     maxshape=(None, *out["tokens"].shape[1:]), dtype="float32",
                                     chunks=(1, *out["tokens"].shape[1:]))
                writing = True
                check_free_space(tmp, out["tokens"].nbytes)
                _append(f["tokens"], out["tokens"])
                writing = False
        emb = np.concatenate(rows_emb).astype(np.float32)
        ids, starts = np.asarray(rows_id), np.asarray(rows_start, dtype=np.int64)
        if per_record:
            order, _, mean = group_mean(ids, emb)
            emb, ids, starts = mean.astype(np.float32), np.asarray(order), None
        writing = True
        check_free_space(tmp, emb.nbytes + sum(len(i) + 8 for i in rows_id))
        if suffix == ".npy":
            with open(tmp, "wb") as fh:
                np.save(fh, emb)
        else:
            f = f if f is not None else h5py.File(handle, "w")
            f.create_dataset("embedding", data=emb)
            f.create_dataset(RECORD_ID, data=ids.astype(object), dtype=h5py.string_dtype())
            if starts is not None:
                f.create_dataset(START, data=starts)
            f.attrs.update({"checkpoint": str(trained.path), "pooling": pooling, "per_record": per_record,
                            "preparation": json.dumps(to_jsonable(trained.preparation.as_dict()))})
            f.close()
            f = None
            handle.close()
        os.replace(tmp, output)
    except OSError as err:  # writing the output failed (a full disk...): one line; the partial file goes below
        if not writing:
            raise
        raise ValueError(write_failure(output, err)) from None
    finally:
        with contextlib.suppress(OSError, RuntimeError):  # closing flushes, which fails again on a full disk
            if f is not None:
                f.close()
        with contextlib.suppress(OSError):
            if handle is not None:
                handle.close()
        tmp.unlink(missing_ok=True)
    return {"records": len(dict.fromkeys(rows_id)), "windows": len(rows_id), "skipped": len(skipped.records),
            "skipped_windows": len(skipped.windows), "skipped_reasons": skipped}


def run(args: argparse.Namespace) -> int:
    check_preparation(args)
    output = Path(args.output)
    check_output(output, args.tokens, args.per_record)
    prepare_output(output, SUFFIXES, "a .h5 or .npy file name", reads=[args.checkpoint, *args.inputs])
    trained = trained_from_args(args)
    counts = embed(trained, args.inputs, output, args.tokens, args.per_record, args.batch_size)
    report_skipped(counts["skipped_reasons"])
    print(f"{counts['windows']} windows of {counts['records']} records embedded "
          f"({counts['skipped_reasons'].summary()}) -> {args.output}")
    return 0
