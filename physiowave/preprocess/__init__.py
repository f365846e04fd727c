"""Preprocessing: public databases and any folder of recordings → the HDF5 files the training scripts read.

One streaming core (:mod:`.core`), shared flags (:mod:`.cli`), and one small module per data set holding only
its reader, label rules and defaults."""
from __future__ import annotations

import importlib

from .core import Item, RecordRef, Skip, Source, run
from .readers import ReadError, Recording

__all__ = ["SOURCES", "source_class", "Source", "RecordRef", "Item", "Skip", "Recording", "ReadError", "run"]

# name -> "module:Class", imported on demand
SOURCES = {
    "ptbxl": "ptbxl:PTBXLSource",
    "cpsc2018": "cpsc2018:CPSC2018Source",
    "shaoxing": "shaoxing:ShaoxingSource",
    "mimic": "mimic_ecg:MIMICSource",
    "epn612": "epn612:EPN612Source",
    "db6": "ninapro_db6:DB6Source",
    "folder": "folder:FolderSource",
}


def source_class(name: str) -> type[Source]:
    """The :class:`Source` subclass registered under ``name``."""
    module, cls = SOURCES[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)
