"""MIMIC-IV-ECG → processed_pretrain/mimic_pretrain_{train,val}.h5, e.g.
``python ECG/mimic_pretrain.py --input /data/mimic-iv-ecg --workers 8`` (all flags: ``--help``)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing
from physiowave.preprocess.mimic_ecg import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
