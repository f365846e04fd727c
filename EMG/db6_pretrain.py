"""NinaPro DB6 → train.h5 / val.h5 (pretraining): python EMG/db6_pretrain.py --input /data/DB6 [--output DIR]"""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing
from physiowave.preprocess.ninapro_db6 import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
