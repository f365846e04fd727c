"""EMG-EPN-612 → epn612_{train,val,test}_set.h5: python EMG/epn_finetune.py --input /data/EPN612 [--output DIR]"""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing
from physiowave.preprocess.epn612 import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
