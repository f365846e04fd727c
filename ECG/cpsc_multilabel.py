"""Preprocess cpsc2018 into the HDF5 files the training scripts read.

    python ECG/cpsc_multilabel.py --input PATH [--output DIR] [--workers 4] [--help for every flag]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing
from physiowave.preprocess.cpsc2018 import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
