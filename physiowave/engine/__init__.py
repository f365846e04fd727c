"""The training engine shared by ``pretrain.py``, ``finetune.py`` and ``finetune_multilabel.py``."""
from .main import main, run

__all__ = ["main", "run"]
