"""NinaPro DB6 (16-channel Delsys EMG, 2000 Hz) → unlabelled EMG pretraining HDF5:
``python EMG/db6_pretrain.py --input /data/DB6`` (``S<subject>_D<day>_T<time>.mat`` files at any depth).

As the original ``db6_pretrain.py``: channels 0-7 of ``emg`` (``--channels``), z-scored per channel over the
whole file (``--norm_scope record``), windows of 1024 samples with step 512, incomplete tails dropped, 2000 Hz
(no resampling unless ``--target_fs``); train.h5 / val.h5 in ./DB6_processed_8ch.
The original also "deleted bad channels 8 and 9", after which it kept columns 0-7, so the deletion never
changed its output: the default ``--channels 0,1,...,7`` gives the same channels.
Subject, day and time come from the file name, else from the file's ``subject``/``daytesting``/``time`` values.

Deliberate differences from the original:
- split over subjects (``--split_by``) or sessions; the original split overlapping windows at random (leak).
- z-score with ddof 0 and eps 1e-8 (the original: ddof 1, eps 1e-12), a factor sqrt(n/(n-1)) apart.
- files with long NaN runs, other than 16 channels or shorter than a window are skipped and listed.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Iterable

from .cli import main_for
from .core import Item, RecordRef, Skip, Source
from .readers import ReadError, Recording, read_ninapro

__all__ = ["DB6Source", "FS", "CHANNELS", "parse_name", "main"]

FS = 2000.0
CHANNELS = 16
_NAME_RE = re.compile(r"S(\d+)_D(\d+)_T(\d+)", re.IGNORECASE)


def parse_name(stem: str) -> tuple[int, int, int] | None:
    """(subject, day, time) from a file stem ``S<subject>_D<day>_T<time>``, or None."""
    m = _NAME_RE.fullmatch(stem)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


class DB6Source(Source):
    """Every ``.mat`` file under ``--input`` is one session; groups are subjects or sessions."""

    name = "db6"
    description = ("Convert NinaPro DB6 .mat files (S<subject>_D<day>_T<time>.mat) into unlabelled EMG pretraining "
                   "HDF5 (train.h5 / val.h5): channels 0-7 (as the original, whose deletion of 'bad channels' 8 and 9 "
                   "never changed them), z-score per file, windows of --window samples (1024 by default, step 512).")
    splits = ("train", "val")
    nominal_fs = FS  # every file is read at FS (the .mat files carry no rate)
    defaults = {"channels": [str(i) for i in range(8)], "window": 1024, "step": 512, "tail": "drop",
                "normalize": "zscore", "norm_scope": "record", "split": [0.8, 0.2]}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("NinaPro DB6")
        g.add_argument("--split_by", default="subject", choices=["subject", "session"],
                       help="keep each subject's files in one split, or each session's (S_D_T) only")

    def default_output(self) -> Path:
        return Path("DB6_processed_8ch")

    def output_files(self) -> dict[str, str]:
        return {"train": "train.h5", "val": "val.h5"}

    def list_records(self) -> tuple[list[RecordRef], list[tuple[str, str]]]:
        refs, skipped = [], []
        for root in map(Path, self.args.input):
            base = root.parent if root.is_file() else root
            files = [root] if root.is_file() else sorted(root.rglob("*.mat"))
            for path in files:
                rel = path.relative_to(base).with_suffix("").as_posix()
                try:
                    subject, session = _identity(path)
                except (ReadError, Skip) as e:
                    skipped.append((rel, str(e)))
                    continue
                refs.append(RecordRef(rel, subject if self.args.split_by == "subject" else session, str(path)))
        return refs, skipped

    def load(self, ref: RecordRef) -> Iterable[Item]:
        signal, _ = read_ninapro(ref.source)  # [C, T]
        if signal.shape[0] != CHANNELS:
            raise Skip(f"{ref.source}: 'emg' has {signal.shape[0]} channels ([samples, channels] "
                       f"{signal.shape[::-1]}); DB6 has {CHANNELS}")
        yield Item(ref.id, Recording(signal, FS, [str(i) for i in range(CHANNELS)]))


def _identity(path: Path) -> tuple[str, str]:
    """("S<subject>", "S<subject>_D<day>_T<time>") from the file name, else from the file's ``subject``,
    ``daytesting`` and ``time`` values (this reads the file, so only renamed files pay for it)."""
    parsed = parse_name(path.stem)
    if parsed is None:
        _, meta = read_ninapro(path)
        if "subject" not in meta:
            raise Skip(f"{path}: file name is not S<subject>_D<day>_T<time>.mat and the file has no 'subject' value")
        if "daytesting" not in meta or "time" not in meta:  # session unknown: the file is its own session
            return f"S{meta['subject']}", f"S{meta['subject']}_{path.stem}"
        parsed = (meta["subject"], meta["daytesting"], meta["time"])
    subject, day, time = parsed
    return f"S{subject}", f"S{subject}_D{day}_T{time}"


def main(argv: list[str] | None = None) -> int:
    return main_for(DB6Source, argv, prog="EMG/db6_pretrain.py")
