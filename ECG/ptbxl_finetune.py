"""PTB-XL → train.h5 / val.h5 / test.h5 on the official strat_fold split (1-8 / 9 / 10), e.g.
``python ECG/ptbxl_finetune.py --input /data/PTBXL --task multilabel``.

``--task``: ``single`` (default, the original: one of the 5 superclasses by priority, likelihood >= 80),
``multilabel`` (multi-hot superclasses, columns NORM MI STTC CD HYP), or a multi-label statement task of the
PTB-XL benchmark (Wagner et al. 2020): ``all`` | ``diagnostic`` | ``subdiagnostic`` | ``superdiagnostic`` |
``form`` | ``rhythm`` (71 / 44 / 23 / 5 / 19 / 12 classes on the full database, sorted), e.g.
``--task form --rate 100 --window 1000 --step 1000`` for the 100 Hz records, one window each.
All flags: ``--help``; the rules: physiowave/preprocess/ptbxl.py."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing
from physiowave.preprocess.ptbxl import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
