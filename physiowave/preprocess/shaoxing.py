"""Chapman-Shaoxing 12-lead arrhythmia database (``WFDBRecords/**/JS*.hea`` + ``.mat``), 4 merged rhythm classes,
multi-label: SB, AFIB (AF + AFL), GSVT (SVT, AT, AVNRT, AVRT, SAAWR), SR (SR, SI, and ST by default).

Differences from the original script, on purpose:
- ``--st_group``: the original merges sinus tachycardia (ST) into SR (the default here); the database paper's
  grouping puts it in GSVT (``--st_group GSVT``).
- Signals in physical units; NaN runs interpolated or the record skipped (the original had no NaN handling).
- Failing records are listed in skipped.csv (the original swallowed every exception silently).
- Split stratified on the label combination (70/20/10; each record is one patient).
- HDF5 dataset ``data`` (the original wrote ``input``), labels float32 ``(N, 4)`` (the original: int8)."""
from __future__ import annotations

import argparse

from .challenge import ChallengeSource
from .cli import STANDARD_12_LEADS, main_for

__all__ = ["ShaoxingSource", "shaoxing_classes", "main"]


def shaoxing_classes(st_group: str = "SR") -> dict[str, list[str]]:
    """Class -> SNOMED codes and abbreviations; sinus tachycardia (427084000, ST) goes to ``st_group``."""
    classes = {
        "SB": ["426177001", "SB"],
        "AFIB": ["164889003", "164890007", "AFIB", "AF", "AFL"],
        "GSVT": ["426761007", "713422000", "233896004", "233897008", "195101003",
                 "SVT", "AT", "AVNRT", "AVRT", "SAAWR"],
        "SR": ["426783006", "427393009", "SR", "SI"],
    }
    classes[st_group] += ["427084000", "ST"]
    return classes


class ShaoxingSource(ChallengeSource):
    name = "shaoxing"
    description = ("Chapman-Shaoxing -> train/val/test.h5: 12-lead 500 Hz ECG, 4 merged rhythm classes "
                   "(multi-hot), windows of --window samples (2048 by default), z-score per record, "
                   "record-level stratified split.")
    class_names = ["SB", "AFIB", "GSVT", "SR"]
    nominal_fs = 500.0  # records at other rates are resampled to it (or to --target_fs)
    defaults = {"split": [0.7, 0.2, 0.1], "window": 2048, "step": 1024, "normalize": "zscore",
                "norm_scope": "record", "channels": STANDARD_12_LEADS}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--st_group", default="SR", choices=["SR", "GSVT"],
                            help="class of sinus tachycardia (427084000): SR as the original script, or GSVT as "
                                 "in the database paper")

    def __init__(self, args: argparse.Namespace):
        super().__init__(args)
        self.class_codes = shaoxing_classes(args.st_group)


def main(argv: list[str] | None = None) -> int:
    return main_for(ShaoxingSource, argv, prog="ECG/shaoxing_multilabel.py")
