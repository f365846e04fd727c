"""Multi-label fine-tuning of PhysioWave.

    torchrun --nproc_per_node=4 finetune_multilabel.py --help     (or plain: python finetune_multilabel.py ...)
"""
import sys

from physiowave.engine import main

if __name__ == "__main__":
    sys.exit(main("multilabel"))
