"""CPSC 2018 (China Physiological Signal Challenge), 9-class multi-label, read from the PhysioNet/CinC Challenge
2020/2021 layout (``cpsc_2018/``, ``cpsc_2018_extra/``: ``.hea`` + ``.mat``, SNOMED codes on ``# Dx:``).

Differences from the original script, on purpose:
- PAC also maps 63593006 (SVPB, the Challenge 2021 code), which the original missed.
- Signals in physical units (gain/baseline from the header); z-score makes the scale moot.
- Records with no class or the wrong leads are rejected *before* the split; the split is stratified (70/20/10).
- Z-score statistics over real samples only: zero padding of the tail window stays zero.
- HDF5 dataset ``data`` (the original wrote ``input``), labels float32 ``(N, 9)``."""
from __future__ import annotations

from .challenge import ChallengeSource
from .cli import STANDARD_12_LEADS, main_for

__all__ = ["CPSC2018Source", "CPSC_CLASSES", "main"]

CPSC_CLASSES = {
    "SNR": ["426783006"],
    "AF": ["164889003"],
    "IAVB": ["270492004"],
    "LBBB": ["733534002", "164909002"],
    "RBBB": ["713427006", "59118001"],
    "PAC": ["284470004", "63593006"],
    "PVC": ["427172004", "164884008", "17338001"],
    "STD": ["429622005"],
    "STE": ["164931005"],
}


class CPSC2018Source(ChallengeSource):
    name = "cpsc2018"
    description = ("CPSC 2018 -> cpsc_9class_{train,val,test}.h5: 12-lead 500 Hz ECG, 9-class multi-hot labels "
                   "from SNOMED codes, windows of --window samples (2048 by default), z-score per window, "
                   "record-level stratified split.")
    class_names = list(CPSC_CLASSES)
    class_codes = CPSC_CLASSES
    nominal_fs = 500.0  # records at other rates are resampled to it (or to --target_fs)
    defaults = {"split": [0.7, 0.2, 0.1], "window": 2048, "step": 1024, "normalize": "zscore",
                "norm_scope": "window", "channels": STANDARD_12_LEADS}

    def output_files(self) -> dict[str, str]:
        return {s: f"cpsc_9class_{s}.h5" for s in self.splits}


def main(argv: list[str] | None = None) -> int:
    return main_for(CPSC2018Source, argv, prog="ECG/cpsc_multilabel.py")
