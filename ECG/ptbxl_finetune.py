"""PTB-XL → train.h5 / val.h5 / test.h5, e.g. ``python ECG/ptbxl_finetune.py --input /data/PTBXL --task multilabel``
(all flags: ``--help``; see physiowave/preprocess/ptbxl.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing
from physiowave.preprocess.ptbxl import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
