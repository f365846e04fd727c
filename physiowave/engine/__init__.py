"""The training engine shared by ``pretrain.py``, ``finetune.py`` and ``finetune_multilabel.py``."""
from ..threads import sleep_idle_threads_if_busy

sleep_idle_threads_if_busy()  # before torch loads: OpenMP reads its wait policy once

from .main import main, run  # noqa: E402

__all__ = ["main", "run"]
