"""The preprocessing pipeline every data-set script runs: list records → assign splits by group → load,
clean, resample, normalise and window each record in worker processes → stream windows into one HDF5 file per
split → write metadata, ``record_splits.json`` and ``skipped.csv``.

A data set is a :class:`Source` subclass holding only its reader, label rules and defaults."""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import platform
import re
import shutil
import signal
import sys
import threading
import time
import uuid
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from ..contract import (ATTR_CHANNEL_NAMES, ATTR_CLASS_NAMES, ATTR_FS, ATTR_PREPROCESSING, ATTR_RUN_ID, ATTR_RUN_INFO,
                             INFO_FILE)
from ..fileio import FolderBusyError, atomic_write_text, csv_text, folder_lock, to_jsonable, write_json
from .readers import ReadError, Recording
from .signal import SignalError
from .splits import group_strata, split_groups
from .params import SignalParams
from .transform import process_recording
from .writer import ShardError, ShardWriter, compress_windows

__all__ = ["RecordRef", "Item", "Source", "Skip", "Summary", "Terminated", "process_record", "reason_kind", "run"]


@dataclass(slots=True)
class RecordRef:
    """One unit of work, cheap to list: ``id`` (unique, used in ``record_id``), ``group`` (patient/subject;
    splits never separate a group), ``source`` (what :meth:`Source.load` needs), ``label`` when known at
    listing time (int class or multi-hot), ``split`` when the data set fixes it (official folds)."""
    id: str
    group: str
    source: Any
    label: Any = None
    split: str | None = None


@dataclass(slots=True)
class Item:
    """One recording loaded from a :class:`RecordRef` (a file may hold several, e.g. EPN-612 users); an item
    that cannot be used has no recording and a ``reason`` (a sample the reader could not parse)."""
    id: str
    recording: Recording | None
    label: Any = None
    split: str | None = None
    reason: str | None = None


class Skip(Exception):
    """A record (or item) that is not used; the message is its one-line reason in ``skipped.csv``."""


class Source:
    """A data set on disk. Subclasses set the class attributes and implement :meth:`list_records` and
    :meth:`load`; :func:`run` does the rest."""

    name: str = "folder"
    description: str = ""
    splits: tuple[str, ...] = ("train", "val")
    drawn_splits: bool = True              # False: the data set fixes every split (no --split flag)
    class_names: list[str] | None = None   # None: no labels (pretraining)
    class_codes: dict[str, list[str]] | None = None  # class name -> source codes, for the metadata
    multilabel: bool = False
    defaults: dict[str, Any] = {}
    nominal_fs: float | None = None        # the data set's rate in Hz: the output rate when --target_fs is not given

    def __init__(self, args: argparse.Namespace):
        self.args = args                                   # the run's flags (data-set flags included)
        self.signal = SignalParams.from_namespace(args)    # the typed signal and window parameters

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Data-set specific flags."""

    def default_output(self) -> Path:
        """Output folder when ``--output`` is not given."""
        return Path(self.args.input[0]).resolve().parent

    def output_files(self) -> dict[str, str]:
        """File name per split."""
        return {s: f"{s}.h5" for s in self.splits}

    def list_records(self) -> tuple[list[RecordRef], list[tuple[str, str]]]:
        """All records (cheap: headers or index files only) and (record, reason) for those rejected already."""
        raise NotImplementedError

    def load(self, ref: RecordRef) -> Iterable[Item]:
        """Read one record; raise :class:`~physiowave.preprocess.readers.ReadError` or :class:`Skip`."""
        raise NotImplementedError

    def output_rate(self, refs: list[RecordRef]) -> float | None:
        """The rate in Hz every record is resampled to: ``--target_fs``, else :attr:`nominal_fs`. None: records
        keep their own rates, and one at a rate other than that of the records already written is skipped."""
        return self.signal.target_fs or self.nominal_fs

    def label_shape(self) -> tuple[int, ...] | None:
        if self.class_names is None:
            return None
        return (len(self.class_names),) if self.multilabel else ()


# --------------------------------------------------------------------------------------------------- per record

@dataclass
class Processed:
    """Windows of one item, or the reason it was skipped."""
    id: str
    split: str | None
    chunks: list[bytes] | None = None   # the n windows, compressed for the HDF5 file (in the worker)
    shape: tuple[int, int] = (0, 0)     # one window's (C, T)
    starts: np.ndarray | None = None    # [n] int64
    label: Any = None
    fs: float = 0.0
    reason: str | None = None
    group: str | None = None            # the record's patient / subject (RecordRef.group)




def process_record(source: Source, ref: RecordRef) -> list[Processed]:
    """Load and process one record; every failure becomes a ``Processed`` with a reason."""
    try:
        items = list(source.load(ref))
    except (ReadError, Skip, SignalError, OSError, ValueError) as e:
        return [Processed(ref.id, ref.split, reason=_one_line(e))]
    out = []
    for item in items:
        label = item.label if item.label is not None else ref.label
        split = item.split or ref.split
        if item.reason is not None:
            out.append(Processed(item.id, split, reason=item.reason))
            continue
        if source.class_names is not None and label is None:
            out.append(Processed(item.id, split, reason="no label"))
            continue
        try:
            windows, starts, fs = process_recording(item.recording, source.signal)
        except (SignalError, ValueError) as e:
            out.append(Processed(item.id, split, reason=_one_line(e)))
            continue
        out.append(Processed(item.id, split, compress_windows(windows), windows.shape[1:], starts, label, fs,
                             group=ref.group))
    return out


def _one_line(e: BaseException) -> str:
    text = "".join(ch if ch.isprintable() else "?" for ch in " ".join(str(e).split()))
    return text or type(e).__name__


_WORKER_SOURCE: Source | None = None


def _init_worker(source: Source) -> None:
    global _WORKER_SOURCE
    _WORKER_SOURCE = source
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _die_with_parent()


def _die_with_parent() -> None:
    """Linux: end this worker when the main process dies (kill -9 included), instead of leaving it orphaned."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def _work(ref: RecordRef) -> list[Processed]:
    assert _WORKER_SOURCE is not None
    return process_record(_WORKER_SOURCE, ref)


def _ordered_map(source: Source, refs: list[RecordRef], workers: int) -> Iterator[list[Processed]]:
    """process_record over ``refs`` in order, with at most ``4 * workers`` records in flight (bounded memory)."""
    if workers <= 1:
        for ref in refs:
            yield process_record(source, ref)
        return
    pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(source,))
    try:
        pending: deque = deque()
        it = iter(refs)
        for ref in it:
            pending.append(pool.submit(_work, ref))
            if len(pending) >= 4 * workers:
                break
        while pending:
            result = pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(_work, nxt))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------------------------------- the run

@dataclass
class Summary:
    """What a run produced."""
    output_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    records: Counter = field(default_factory=Counter)
    windows: Counter = field(default_factory=Counter)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _assign_splits(source: Source, refs: list[RecordRef]) -> None:
    todo = [r for r in refs if r.split is None]
    if not todo:
        return
    fractions = dict(zip(source.splits, source.args.split))
    strata = None
    if source.class_names is not None and all(r.label is not None for r in todo):
        by_group: dict[str, list] = {}
        for r in todo:
            by_group.setdefault(r.group, []).append(r.label)
        strata = {g: group_strata(labs) for g, labs in by_group.items()}
    assign = split_groups([r.group for r in todo], fractions, source.args.seed, strata)
    for r in todo:
        r.split = assign[r.group]
    _warn_empty_splits(source, refs, fractions)


def _warn_empty_splits(source: Source, refs: list[RecordRef], fractions: dict[str, float]) -> None:
    """One stderr line per split that asked for a share of the groups (fraction > 0) and got no group: its file
    is not written. Said before any record is read."""
    got = {r.split for r in refs}
    n = len({r.group for r in refs})
    regex = getattr(source.args, "group_regex", None)
    if regex:
        unit = f"groups (subjects by --group_regex '{regex}')"
    elif source.name == "folder":
        unit = "records (each is its own group without --group_regex)"
    else:
        unit = "groups (patients or subjects)"
    given = " ".join(f"{f:g}" for f in source.args.split)
    for split, frac in fractions.items():
        if frac > 0 and split not in got:
            print(f"warning: --split {given}: no {source.output_files()[split]} is written: the {split} split gets "
                  f"none of the {n} {unit}: too few for these fractions; give more groups or a larger "
                  f"{split} fraction", file=sys.stderr)


def _label_array(source: Source, label: Any, n: int) -> np.ndarray | None:
    if source.class_names is None:
        return None
    if source.multilabel:
        return np.repeat(np.asarray(label, dtype=np.float32)[None], n, axis=0)
    return np.full(n, int(label), dtype=np.int64)


def _distribution(source: Source, counts: np.ndarray | None) -> dict[str, int] | None:
    if counts is None or source.class_names is None:
        return None
    return {name: int(c) for name, c in zip(source.class_names, counts)}


def _versions() -> dict[str, str]:
    import h5py
    import scipy
    import wfdb

    from .. import __version__
    return {"physiowave": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "h5py": h5py.__version__, "wfdb": wfdb.__version__}


def _skipped_csv(skipped: list[tuple[str, str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["record", "reason"])
    w.writerows([csv_text(record), reason] for record, reason in skipped)  # record names come from files
    return buf.getvalue()


STAGING = ".preprocess.partial"   # the staging folder of a run, inside its output folder
_FAILED_SKIPPED = "skipped.failed.csv"


class _Run:
    """The state of one run: shard writers in the staging folder, counts, skipped records; checkpointed there
    (``state.json``) for ``--resume``. The output folder itself is only written by :meth:`publish`."""

    def __init__(self, source: Source, out_dir: Path, skipped: list[tuple[str, str]]):
        self.source, self.args, self.out_dir = source, source.args, out_dir
        self.staging = out_dir / STAGING
        self.state_path = self.staging / "state.json"
        self.files = source.output_files()
        self.writers: dict[str, ShardWriter] = {}
        self.skipped = skipped
        self.done = 0                      # refs fully written (or skipped)
        self.shape: tuple[int, int] | None = None
        self.fs: float | None = None
        self.k = len(source.class_names or [])
        self.windows = {s: 0 for s in source.splits}
        self.rec_split: dict[str, list[str]] = {s: [] for s in source.splits}
        self.rec_counts = {s: np.zeros(self.k, np.int64) for s in source.splits}
        self.win_counts = {s: np.zeros(self.k, np.int64) for s in source.splits}
        self.run_id = uuid.uuid4().hex
        self.stale: list[str] = []
        self.published = False
        self.saved_done = 0                # records the checkpoint on disk holds
        self.last_checkpoint = time.time()
        self.checkpointed = False

    def attrs(self) -> dict[str, Any]:
        """Root attributes of every split file (:mod:`physiowave.contract`)."""
        sig = self.source.signal
        attrs: dict[str, Any] = {"window": sig.window, "step": sig.step, "normalize": sig.normalize,
                                 "norm_scope": sig.norm_scope, "source": self.source.name,
                                 ATTR_PREPROCESSING: json.dumps(self.parameters()), ATTR_FS: self.fs,
                                 ATTR_RUN_ID: self.run_id, ATTR_RUN_INFO: INFO_FILE}
        if self.source.class_names is not None:
            attrs[ATTR_CLASS_NAMES] = list(self.source.class_names)
        if sig.channels:
            attrs[ATTR_CHANNEL_NAMES] = list(sig.channels)
        return attrs

    def parameters(self) -> dict[str, Any]:
        """The flags that shape the windows (stored in every output file, and from there in checkpoints, so that
        ``physiowave predict`` can prepare raw recordings the same way)."""
        skip = {"input", "output", "workers", "resume", "checkpoint_s", "limit", "split", "seed"}
        return to_jsonable({k: v for k, v in sorted(vars(self.args).items()) if k not in skip}
                           | {"source": self.source.name})

    def fingerprint(self) -> dict[str, Any]:
        skip = {"workers", "resume", "output", "checkpoint_s"}
        return json.loads(json.dumps(to_jsonable({k: v for k, v in sorted(vars(self.args).items()) if k not in skip} | {
            "input": [str(Path(p).resolve()) for p in self.args.input]})))

    # ---- start and resume
    def start(self) -> None:
        """A new run: any staging folder of an interrupted one is discarded."""
        if self.state_path.exists():
            print(f"note: discarding the interrupted run in {self.staging} (pass --resume to continue it instead)",
                  file=sys.stderr)
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)

    def resume(self) -> str:
        """Restore the last checkpoint of an interrupted run with the same parameters → its phase
        ("process" or "publish"); files written after that checkpoint are deleted."""
        if not self.state_path.exists():
            done = (self.out_dir / INFO_FILE).exists()
            shutil.rmtree(self.staging, ignore_errors=True)  # what a run killed while cleaning up left
            raise SystemExit(f"error: --resume: nothing to resume in {self.out_dir} ("
                             + ("its run is complete" if done else f"no checkpoint {self.state_path}")
                             + "): rerun without --resume")
        state = json.loads(self.state_path.read_text())
        now = self.fingerprint()
        changed = sorted(k for k in set(state["fingerprint"]) | set(now) if state["fingerprint"].get(k) != now.get(k))
        if changed:
            raise SystemExit(f"error: --resume: the interrupted run in {self.staging} used other values of "
                             f"{', '.join('--' + k for k in changed)}: give the same flags, or rerun without --resume "
                             "to start over")
        self.run_id, self.done, self.skipped = state["run_id"], state["done"], [tuple(x) for x in state["skipped"]]
        self.saved_done = self.done
        self.shape = tuple(state["shape"]) if state["shape"] else None
        self.fs, self.rec_split = state["fs"], state["rec_split"]
        for s in self.source.splits:
            self.windows[s] = state["windows"][s]
            self.rec_counts[s] = np.array(state["rec_counts"][s], np.int64)
            self.win_counts[s] = np.array(state["win_counts"][s], np.int64)
        phase = state.get("phase", "process")
        keep = {"state.json", *(n for names in state["shards"].values() for n in names), *state.get("published", [])}
        if phase == "publish":
            keep.add("info.json")
            self.stale = state.get("stale", [])
        published = set(state.get("published", [])) | {"state.json"}
        if phase == "publish" and (self.out_dir / INFO_FILE).exists() and not (self.staging / "info.json").exists():
            published.add("info.json")  # killed after the marker was written: only the staging folder was left
        missing = [n for n in keep if n not in published and not (self.staging / n).exists()]
        if missing:
            shutil.rmtree(self.staging)
            raise SystemExit(f"error: --resume: {self.staging} lacks {missing[0]}, which its checkpoint lists; "
                             "rerun without --resume")
        for path in self.staging.iterdir():
            if path.name not in keep:  # written after the checkpoint: the open shards, a half-merged file
                path.unlink()
        for s, names in state["shards"].items():
            self.writers[s] = ShardWriter(self.staging, s, *self.shape, self.source.label_shape(), shards=names)
            try:
                self.writers[s].verify()
            except ShardError as err:
                shutil.rmtree(self.staging)
                raise SystemExit(f"error: --resume: {err}: the interrupted run cannot be resumed; rerun without "
                                 "--resume") from err
        self.checkpointed = True
        return phase

    def _state(self, **extra: Any) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint(), "run_id": self.run_id, "done": self.done, "skipped": self.skipped,
                "shape": self.shape, "fs": self.fs, "windows": self.windows, "rec_split": self.rec_split,
                "rec_counts": {s: c.tolist() for s, c in self.rec_counts.items()},
                "win_counts": {s: c.tolist() for s, c in self.win_counts.items()},
                "shards": {s: w.shards for s, w in self.writers.items()}, **extra}

    def checkpoint(self) -> None:
        """Close every open shard and record where the run stands (atomically, after the shards)."""
        for w in self.writers.values():
            w.checkpoint()
        write_json(self.state_path, self._state(phase="process"))
        self.saved_done = self.done
        self.last_checkpoint = time.time()
        self.checkpointed = True

    # ---- processing
    def add(self, results: list[Processed]) -> None:
        """Write the windows of one record (or note why it is skipped)."""
        source = self.source
        for p in results:
            if p.reason is None and self.shape is not None and p.shape != self.shape:
                p.reason = f"has {p.shape[0]} channels, expected {self.shape[0]} (as the first record)"
            if p.reason is None and self.fs is not None and p.fs != self.fs:  # a source without an output rate
                p.reason = (f"sampled at {p.fs:g} Hz, the records written so far at {self.fs:g} Hz: pass "
                            "--target_fs to resample every record")
            if p.reason is None and p.split not in self.files:
                p.reason = f"split {p.split!r} is not one of {', '.join(self.files)}"
            if p.reason is not None:
                self.skipped.append((p.id, p.reason))
                continue
            self.shape, self.fs = p.shape, p.fs
            if p.split not in self.writers:
                self.writers[p.split] = ShardWriter(self.staging, p.split, *self.shape, source.label_shape())
            n = len(p.chunks)
            labels = _label_array(source, p.label, n)
            self.writers[p.split].append_compressed(p.chunks, p.shape, labels, p.id, p.starts, p.group)
            self.rec_split[p.split].append(p.id)
            self.windows[p.split] += n
            if labels is not None:
                onehot = labels[0] if source.multilabel else np.eye(self.k, dtype=np.int64)[labels[0]]
                self.rec_counts[p.split] += (onehot > 0.5)
                self.win_counts[p.split] += n * (onehot > 0.5)
        self.done += 1
        if time.time() - self.last_checkpoint >= self.args.checkpoint_s:
            self.checkpoint()

    # ---- the end
    def merge(self, info: dict[str, Any]) -> None:
        """Every split file, ``record_splits.json`` and ``skipped.csv`` complete in the staging folder; then the
        checkpoint moves to the publish phase (a resumed run only publishes)."""
        for s, w in self.writers.items():
            w.merge(self.staging / self.files[s], self.attrs())
        write_json(self.staging / "record_splits.json", self.rec_split)
        atomic_write_text(self.staging / "skipped.csv", _skipped_csv(self.skipped))
        write_json(self.staging / "info.json", info)
        self.stale = self._stale()
        write_json(self.state_path, self._state(phase="publish", published=self.published_names(), stale=self.stale))
        self.saved_done = self.done

    def _stale(self) -> list[str]:
        """Files in the output folder that belong to an earlier run and that this one does not write."""
        stale = set(self.files.values()) | {_FAILED_SKIPPED}
        marker = self.out_dir / INFO_FILE
        if marker.exists():
            try:
                stale |= set((json.loads(marker.read_text()).get("files") or {}).values())
            except ValueError:
                pass
        return sorted(stale - set(self.published_names()))

    def published_names(self) -> list[str]:
        return [self.files[s] for s in self.writers] + ["record_splits.json", "skipped.csv"]

    def publish(self) -> dict[str, Path]:
        """Make the output folder this run's set: the completion marker goes first, files of an earlier run that
        this one does not write (e.g. a test split) are deleted, the new files are moved in, and the marker is
        written last. Safe to repeat after a kill (``--resume``)."""
        if (self.staging / "info.json").exists():  # else a killed run had published all but its staging folder
            (self.out_dir / INFO_FILE).unlink(missing_ok=True)  # from here to the end the folder reads as incomplete
            for name in self.stale:
                (self.out_dir / name).unlink(missing_ok=True)
            for name in self.published_names():
                if (self.staging / name).exists():
                    os.replace(self.staging / name, self.out_dir / name)
            os.replace(self.staging / "info.json", self.out_dir / INFO_FILE)
        self.published = True  # the folder is complete: what is left is cleaning up
        shutil.rmtree(self.staging)
        return {s: self.out_dir / self.files[s] for s in self.writers}

    def suspend(self) -> bool:
        """After an interruption: keep the staging folder when a checkpoint can resume it, else delete it.
        Returns whether the run can be resumed."""
        for w in self.writers.values():
            try:
                w.discard_open()
            except Exception:  # noqa: BLE001 - already broken; resume deletes it anyway
                pass
        if not (self.checkpointed and self.state_path.exists()):
            self.abort()
            return False
        return True

    def abort(self) -> None:
        for w in self.writers.values():
            try:
                w.discard_open()
            except Exception:  # noqa: BLE001
                pass
        shutil.rmtree(self.staging, ignore_errors=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM (what cluster schedulers send): handled as Ctrl-C, exit status 143."""


_SIGTERM = threading.Event()


def _note_sigterm(signum: int, frame: Any) -> None:
    """Only note it: an exception raised here could land in a weakref or __del__ callback, where Python prints
    and drops it. :func:`_stop_if_terminated` raises at the next safe point (after each record, between phases)."""
    _SIGTERM.set()


def _stop_if_terminated() -> None:
    if _SIGTERM.is_set():
        raise Terminated()


def _info(source: Source, state: _Run, refs: list[RecordRef], t0: float) -> dict[str, Any]:
    """The completion marker's contents: source, parameters, files, per-split counts, skipped reasons."""
    args = source.args
    records = {s: len(ids) for s, ids in state.rec_split.items()}
    return {
        "dataset": source.name, "description": source.description, "run_id": state.run_id,
        "source": [str(Path(p).resolve()) for p in args.input],
        "parameters": to_jsonable(dict(vars(args))),
        "task": ("multilabel" if source.multilabel else "classification") if source.class_names else "pretrain",
        "num_channels": int(state.shape[0]), "window": source.signal.window, "step": source.signal.step,
        "sampling_rate": state.fs,
        "class_names": source.class_names, "class_codes": source.class_codes,
        "files": {s: state.files[s] for s in state.writers},
        "splits": {s: {"records": records[s], "windows": state.windows[s],
                       "record_label_distribution": _distribution(source, state.rec_counts[s]),
                       "window_label_distribution": _distribution(source, state.win_counts[s])}
                   for s in source.splits},
        "skipped": {"records": len(state.skipped),
                    "reasons": dict(Counter(reason_kind(r) for _, r in state.skipped).most_common())},
        "software": _versions(), "command": " ".join(sys.argv),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(time.time() - t0, 2),
    }


def _process(source: Source, state: _Run, refs: list[RecordRef], progress: bool) -> None:
    """Every record not yet done, in order, into the shard writers."""
    bar = tqdm(total=len(refs), initial=state.done, desc=source.name, unit="rec", disable=not progress,
               dynamic_ncols=True)
    for results in _ordered_map(source, refs[state.done:], source.args.workers):
        _stop_if_terminated()
        state.add(results)
        bar.update(1)
        bar.set_postfix(windows=sum(state.windows.values()), skipped=len(state.skipped), refresh=False)
    bar.close()
    if not state.writers:
        atomic_write_text(state.out_dir / _FAILED_SKIPPED, _skipped_csv(state.skipped))
        kinds = Counter(reason_kind(r) for _, r in state.skipped).most_common(1)
        example = next((f"{rid}: {r}" for rid, r in state.skipped if kinds and reason_kind(r) == kinds[0][0]), "")
        hint = "; pass a smaller --window (and --step)" if "shorter than one window" in example else ""
        raise SystemExit(f"error: no usable record among {len(refs)} under {', '.join(map(str, source.args.input))}"
                         + (f" (the most common reason, {kinds[0][1]} of {len(state.skipped)}: {example}{hint})"
                            if kinds else "")
                         + f"; every reason is in {state.out_dir / _FAILED_SKIPPED}")


def run(source: Source, progress: bool = True) -> Summary:
    """Run the whole pipeline for ``source`` (its ``args`` hold every parameter) → a Summary. The output folder
    receives the split files, ``record_splits.json``, ``skipped.csv`` and, last, the completion marker
    :data:`~physiowave.contract.INFO_FILE`.

    Everything is written in the staging folder first (:class:`_Run`). Every ``--checkpoint_s`` seconds the open
    shards are closed and the position saved, so a run interrupted in any way (Ctrl-C, SIGTERM, kill -9)
    continues with ``--resume`` and ends with the same arrays. Raises SystemExit with a one-line message when no
    usable record was found (the output folder is left as it was, but for ``skipped.failed.csv``)."""
    out_dir = Path(source.args.output) if source.args.output else source.default_output()
    with contextlib.ExitStack() as stack:  # one run per output folder: a second one started into it is refused
        try:
            stack.enter_context(folder_lock(out_dir, "--output"))
        except FolderBusyError as err:
            raise SystemExit(f"error: {err}") from None
        return _run_locked(source, out_dir, progress)


def _run_locked(source: Source, out_dir: Path, progress: bool) -> Summary:
    """:func:`run` once the output folder's lock is held."""
    args = source.args
    t0 = time.time()
    refs, skipped = source.list_records()
    if args.limit:
        refs = refs[:args.limit]
    if not refs:
        raise SystemExit(f"error: no records found under {', '.join(map(str, args.input))}"
                         + (f" ({len(skipped)} rejected, e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""))
    rate = source.output_rate(refs)
    if rate is not None:  # every record is resampled to it (a no-op at that rate); workers get it with the source
        source.signal.target_fs = float(rate)
    _assign_splits(source, refs)
    state = _Run(source, out_dir, skipped)
    phase = state.resume() if args.resume else (state.start() or "process")
    _SIGTERM.clear()
    previous = signal.signal(signal.SIGTERM,
                             _note_sigterm) if threading.current_thread() is threading.main_thread() else None
    try:
        if phase == "process":
            _process(source, state, refs, progress)
            _stop_if_terminated()
            state.merge(_info(source, state, refs, t0))
            state.checkpointed = True
        _stop_if_terminated()
        files = state.publish()
    except SystemExit:
        state.abort()
        raise
    except ShardError as err:
        state.abort()
        raise SystemExit(f"error: {err}: the interrupted run cannot be resumed; rerun without --resume") from err
    except BaseException:
        if state.published:  # interrupted while deleting the staging folder: the output is complete
            shutil.rmtree(state.staging, ignore_errors=True)
            raise
        if state.suspend():
            print(f"\ninterrupted: {state.saved_done} of {len(refs)} records are checkpointed in {state.staging}; "
                  "run the same command with --resume to continue", file=sys.stderr)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    records = {s: len(ids) for s, ids in state.rec_split.items()}
    return Summary(out_dir, files, Counter(records), Counter(state.windows), state.skipped)


def reason_kind(reason: str) -> str:
    """A reason with its counts and measurements masked, to count reasons of one kind together; numbers that are
    part of a name (lead ``V1``, record ``A0001``) are kept."""
    masked = re.sub(r"(?<![A-Za-z_])\d+(\.\d+)?(?![A-Za-z_\d])", "#", reason)
    return re.sub(r"#([,;\s]+#)+", "#...", masked)[:100]
