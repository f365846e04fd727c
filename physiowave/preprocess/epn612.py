"""EMG-EPN-612 (Myo armband, 8 channels, 200 Hz) → 6-gesture fine-tuning HDF5:
``python EMG/epn_finetune.py --input /data/EPN612`` (the folder holding ``trainingJSON/`` and ``testingJSON/``).

Each user file ``{trainingJSON,testingJSON}/user*/user*.json`` is one record that yields one item per gesture
sample; every sample becomes exactly one window of ``--window`` samples (truncated, or right zero-padded), raw
values / 128, max-abs normalised per sample and channel, as the original ``epn_finetune.py``.
Classes: noGesture 0, waveIn 1, waveOut 2, pinch 3, open 4, fist 5; other gesture names are skipped with the reason.

``--protocol original`` (default) keeps the original splits: trainingJSON users' trainingSamples → train, their
testingSamples → val; testingJSON users' trainingSamples, per gesture in file order: the first 10 → train, the
rest → test (not subject-independent, see docs/original_pipeline.md §3). ``--protocol cross_subject`` splits users
(groups) with ``--split`` (default 0.7 0.15 0.15), using every labelled sample. testingJSON users'
testingSamples carry no labels and are never used (not listed in skipped.csv).

Deliberate differences from the original:
- ids are ``<trainingJSON|testingJSON>/<user>/<training|testing>/<key>``: the two folders may repeat user names.
- channels are stacked ch1..ch8 in numeric order (the original: JSON key order, the same in the published files).
- the first-10 rule counts the labelled samples of a gesture even when one of them is unreadable, so a broken
  sample never moves a later repetition from test into train (the original has no rule for broken samples).
- with ``--target_fs`` a sample is truncated to the source samples that resample to at most ``--window``.
- the 'cross_subject' protocol, metadata JSON, record_splits.json and skipped.csv are new.
"""
from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path
from typing import Iterable

from .cli import main_for
from .core import Item, RecordRef, Source
from .readers import Recording, read_epn_user

__all__ = ["EPN612Source", "GESTURES", "FS", "main"]

GESTURES = ["noGesture", "waveIn", "waveOut", "pinch", "open", "fist"]
FS = 200.0
SCALE = 128.0  # the original divides the raw Myo values by 128
FIRST_TRAIN = 10  # testingJSON users: repetitions per gesture that go to train (original protocol)
_FOLDERS = ("trainingJSON", "testingJSON")
_DEFAULT_SPLIT = [0.7, 0.15, 0.15]


class EPN612Source(Source):
    """EPN-612 user JSON files → one window per gesture sample, split by the original protocol or by user."""

    name = "epn612"
    description = ("Convert EMG-EPN-612 (trainingJSON/ and testingJSON/ user files) into 6-gesture fine-tuning "
                   "HDF5 (epn612_{train,val,test}_set.h5), one max-abs normalised 8 x 1024 window per sample.")
    splits = ("train", "val", "test")
    class_names = GESTURES
    class_codes = {g: [g] for g in GESTURES}
    nominal_fs = FS  # every sample is read at FS (the JSON files carry no rate)
    defaults = {"window": 1024, "step": 1024, "tail": "pad", "min_real": 1e-6, "normalize": "maxabs",
                "norm_scope": "window", "split": None}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("EPN-612")
        g.add_argument("--protocol", default="original", choices=["original", "cross_subject"],
                       help="original: the original fixed splits (train/val from trainingJSON users, first 10 "
                            "repetitions per gesture of testingJSON users to train, the rest to test); "
                            "cross_subject: users split by --split (default "
                            f"{' '.join(map(str, _DEFAULT_SPLIT))})")

    def __init__(self, args: argparse.Namespace):
        super().__init__(args)
        if args.protocol == "original" and args.split is not None:
            raise SystemExit("error: --split applies to --protocol cross_subject only; --protocol original has "
                             "fixed splits")
        if args.protocol == "cross_subject" and args.split is None:
            args.split = list(_DEFAULT_SPLIT)
        if len(args.input) != 1:
            raise SystemExit(f"error: --input takes one EPN-612 folder (holding trainingJSON/ and testingJSON/), "
                             f"got {len(args.input)}")
        root = Path(args.input[0])
        if not any((root / f).is_dir() for f in _FOLDERS):
            raise SystemExit(f"error: --input {root}: expected the EPN-612 folder holding trainingJSON/ and/or "
                             "testingJSON/, found neither")

    def default_output(self) -> Path:
        return Path("EPN612_processed")

    def output_files(self) -> dict[str, str]:
        return {s: f"epn612_{s}_set.h5" for s in self.splits}

    def list_records(self) -> tuple[list[RecordRef], list[tuple[str, str]]]:
        root = Path(self.args.input[0])
        refs = []
        for folder in _FOLDERS:
            for path in sorted((root / folder).glob("user*/user*.json"), key=_natural):
                user = f"{folder}/{path.parent.name}"
                # original protocol: items carry their split; the ref's split only marks it as fixed
                split = "train" if self.args.protocol == "original" else None
                refs.append(RecordRef(user, user, (str(path), folder), split=split))
        return refs, []

    def load(self, ref: RecordRef) -> Iterable[Item]:
        path, folder = ref.source
        user = read_epn_user(path)
        parts = ("training", "testing") if folder == "trainingJSON" else ("training",)
        seen = {g: 0 for g in GESTURES}
        limit = self._source_limit()
        for part in parts:
            for sample in user[part]:
                item_id = f"{ref.id}/{part}/{sample['id']}"
                label, reason = _label(sample["gesture"])
                split = None
                if self.args.protocol == "original" and label is not None:
                    if folder == "trainingJSON":
                        split = "train" if part == "training" else "val"
                    else:
                        split = "train" if seen[GESTURES[label]] < FIRST_TRAIN else "test"
                        seen[GESTURES[label]] += 1
                reason = reason or sample.get("error")
                if reason is not None:
                    yield Item(item_id, None, label, split, reason)
                    continue
                emg = sample["emg"][:, :limit] / SCALE  # [8, T'] with T' <= limit
                yield Item(item_id, Recording(emg, FS, [f"ch{i}" for i in range(1, 9)]), label, split)

    def _source_limit(self) -> int:
        """Source samples kept per gesture sample: those that become at most ``--window`` at the output rate."""
        target = self.args.target_fs
        if not target or target == FS:
            return self.args.window
        ratio = Fraction(target / FS).limit_denominator(1000)  # the ratio signal.resample uses
        return self.args.window * ratio.denominator // ratio.numerator


def _label(gesture: str | None) -> tuple[int | None, str | None]:
    """(class index, None) or (None, reason) for a gestureName."""
    if gesture is None:
        return None, "no gestureName"
    if gesture in GESTURES:
        return GESTURES.index(gesture), None
    if gesture == "notProvided":
        return None, "gestureName 'notProvided': no label"
    return None, f"unknown gestureName '{gesture}'; expected one of {', '.join(GESTURES)}"


def _natural(path: Path) -> tuple:
    """user2 before user10."""
    digits = "".join(c for c in path.parent.name if c.isdigit())
    return (int(digits) if digits else -1, path.parent.name)


def main(argv: list[str] | None = None) -> int:
    return main_for(EPN612Source, argv, prog="EMG/epn_finetune.py")
