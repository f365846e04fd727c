"""Single-label fine-tuning / linear probing of PhysioWave.

    torchrun --nproc_per_node=4 finetune.py --help     (or plain: python finetune.py ...)
"""
import sys

from physiowave.engine import main

if __name__ == "__main__":
    sys.exit(main("finetune"))
