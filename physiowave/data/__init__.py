"""Data loading: lazy HDF5 datasets ([N, C, T] files, and multi-modal files for fusion), fine-tuning augmentation,
label-fraction sampling, and a streaming non-finite scan of stored data."""
from __future__ import annotations

from .augment import Augmentation, time_stretch
from .fractions import label_fraction_indices
from .h5 import DATA_KEYS, LABEL_KEYS, H5Dataset, parse_file_paths
from .multimodal import Modality, MultiModalDataset, parse_modality
from .scan import NonFinite, find_nonfinite

__all__ = ["H5Dataset", "MultiModalDataset", "Modality", "parse_modality", "parse_file_paths", "Augmentation",
           "time_stretch", "DATA_KEYS", "LABEL_KEYS", "label_fraction_indices", "NonFinite", "find_nonfinite"]
