"""Masked-reconstruction pretraining of PhysioWave.

    torchrun --nproc_per_node=4 pretrain.py --help     (or plain: python pretrain.py ...)
"""
import sys

from physiowave.engine import main

if __name__ == "__main__":
    sys.exit(main("pretrain"))
