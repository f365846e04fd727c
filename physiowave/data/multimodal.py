"""Multi-modal HDF5 data for fusion: one dataset per modality, or one ``data`` array split by channel ranges.

A file holds either ``data_<name>`` datasets ``[N, C_m, T_m]`` (lengths and rates may differ) or one ``data``
``[N, C, T]`` whose channels are split among the modalities, plus the shared ``label`` (``[N]`` or ``[N, K]``).
An optional ``present_<name>`` ``[N]`` (0/1) flags samples where that modality was not recorded; they are
returned as all-NaN, as are samples stored as all-NaN: the fusion model reads all-NaN as "absent".
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from ..contract import check_modality_name
from .h5 import DATA_KEYS, Augment, H5Dataset, open_h5, parse_file_paths

__all__ = ["Modality", "parse_modality", "parse_channels", "MultiModalDataset"]

_CHANNELS = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")


@dataclass(frozen=True)
class Modality:
    """One modality of a fusion run: its ``name``, where its samples are (an HDF5 ``key``, or ``channels`` of the
    data array), and the ``checkpoint`` its branch starts from (None: a fresh branch)."""

    name: str
    key: str | None = None
    channels: tuple[int, ...] | None = None
    checkpoint: str | None = None

    @property
    def source(self) -> str:
        """The key, or the channel list as written on the command line."""
        return self.key if self.key is not None else ",".join(map(str, self.channels or ()))


def parse_channels(text: str) -> tuple[int, ...]:
    """``"0-11"`` → channels 0…11 (ranges inclusive); ``"0,2,5-7"`` → (0, 2, 5, 6, 7)."""
    if not _CHANNELS.fullmatch(text):
        raise ValueError(f"channels {text!r}: expected indices and inclusive ranges such as 0-11 or 0,2,5-7")
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        a, b = int(lo), int(hi or lo)
        if b < a:
            raise ValueError(f"channels {text!r}: range {part} runs backwards")
        out += range(a, b + 1)
    if len(set(out)) != len(out):
        raise ValueError(f"channels {text!r}: a channel is listed twice")
    return tuple(out)


def parse_modality(spec: str) -> Modality:
    """``NAME:KEY_OR_CHANNELS[:CHECKPOINT]`` → :class:`Modality`; the source is channels when it looks like ``0-11``."""
    name, sep, rest = spec.partition(":")
    source, _, checkpoint = rest.partition(":")
    if not sep or not source:
        raise ValueError(f"{spec!r}: expected NAME:KEY_OR_CHANNELS[:CHECKPOINT], "
                         "e.g. ecg:data_ecg:ecg.pth or emg:12-19")
    try:
        check_modality_name(name)
    except ValueError as err:
        raise ValueError(f"{spec!r}: {err}") from None
    if source[0].isdigit():
        return Modality(name, channels=parse_channels(source), checkpoint=checkpoint or None)
    return Modality(name, key=source, checkpoint=checkpoint or None)


def _check_file(path: str, modalities: Sequence[Modality], data_key: str | None) -> dict[str, np.ndarray]:
    """Check that each modality's source is in ``path`` and that all agree on N → ``{name: presence bool [N]}``."""
    with open_h5(path) as f:
        counts: dict[str, int] = {}
        present: dict[str, np.ndarray] = {}
        keys = ", ".join(sorted(f.keys())) or "nothing"
        for m in modalities:
            key = m.key or data_key
            if key is None:  # channels of the first present of DATA_KEYS
                key = next((k for k in DATA_KEYS if isinstance(f.get(k), h5py.Dataset)), None)
                if key is None:
                    raise ValueError(f"{path}: no data dataset for modality {m.name!r}: none of "
                                     f"{', '.join(DATA_KEYS)} is present (the file has: {keys})")
            if not isinstance(f.get(key), h5py.Dataset):
                raise ValueError(f"{path}: no dataset {key!r} for modality {m.name!r} (the file has: {keys})")
            shape = f[key].shape
            if len(shape) != 3:
                raise ValueError(f"{path}: {key!r} has shape {shape}; expected 3-D [N, C, T] for modality {m.name!r}")
            if m.channels is not None and max(m.channels) >= shape[1]:
                raise ValueError(f"{path}: modality {m.name!r} asks for channel {max(m.channels)}, but {key!r} has "
                                 f"{shape[1]} channels (0-{shape[1] - 1})")
            counts[key] = shape[0]
            flags = f.get(f"present_{m.name}")
            present[m.name] = np.ones(shape[0], dtype=bool) if flags is None else np.asarray(flags[()]).astype(bool)
            if present[m.name].shape != (shape[0],):
                raise ValueError(f"{path}: 'present_{m.name}' has shape {present[m.name].shape}; expected [{shape[0]}]")
        if len(set(counts.values())) > 1:
            raise ValueError(f"{path}: the modalities' datasets hold different numbers of samples: {counts}")
    return present


class MultiModalDataset(Dataset):
    """Samples of several modalities from one or more HDF5 files, read lazily.

    ``ds[i]`` → ``{name: float32 [C_m, T_m]}`` (labels "none") or ``(that dict, y)``, y as in :class:`H5Dataset`.
    Each source key is read through one :class:`H5Dataset` (full stored length; ``normalize`` and ``augment``
    as there); channel modalities slice the ``data_key`` array (None: the first present of :data:`DATA_KEYS`,
    per file). Keys are exact: a modality's own key, an explicit ``data_key`` (when a channel modality uses it) and
    an explicit ``label_key`` must exist. Absent samples come back all-NaN.
    """

    def __init__(self, paths: str | Sequence[str], modalities: Sequence[Modality], *, data_key: str | None = None,
                 label_key: str | None = None, labels: str = "auto", seed: int = 0, normalize: bool = False,
                 augment: Augment | None = None) -> None:
        names = [m.name for m in modalities]
        if not modalities or len(set(names)) != len(names):
            raise ValueError(f"MultiModalDataset: expected distinct modality names, got {names}")
        self._paths = parse_file_paths(paths)
        if not self._paths:
            raise ValueError(f"MultiModalDataset: no HDF5 files given (paths={paths!r})")
        self.modalities = list(modalities)
        per_file = [_check_file(p, modalities, data_key) for p in self._paths]
        self._present = {n: np.concatenate([present[n] for present in per_file]) for n in names}
        self._key = {m.name: m.key or data_key for m in modalities}
        keys = list(dict.fromkeys(self._key.values()))
        self._sources = {k: H5Dataset(self._paths, data_key=k, label_key=label_key, labels=labels if i == 0 else "none",
                                      seed=seed, normalize=normalize, augment=augment) for i, k in enumerate(keys)}
        self._first = self._sources[keys[0]]

    # ------------------------------------------------------------------ properties
    @property
    def file_paths(self) -> list[str]:
        return list(self._paths)

    @property
    def sources(self) -> list[tuple[str, str]]:
        """``(file, key)`` of every dataset the modalities read, each once, file by file (for data checks)."""
        pairs = [pair for ds in self._sources.values() for pair in ds.sources]
        order = {path: i for i, path in enumerate(self._paths)}
        return sorted(dict.fromkeys(pairs), key=lambda pair: order[pair[0]])

    def channel_groups(self, path: str, key: str) -> list[tuple[int, ...]] | None:
        """How an absent modality looks in dataset ``key`` of ``path`` (a pair of :attr:`sources`): None when a
        whole sample is one modality (absent = the sample all NaN), else the channels of each modality that slices
        it (absent = those channels all NaN); pass it to ``find_nonfinite(..., channel_groups=...)``."""
        users = [m for m in self.modalities if (path, key) in self._sources[self._key[m.name]].sources]
        if not users:
            raise KeyError(f"{path}: {key!r} is not a source of this data set")
        if any(m.channels is None for m in users):
            return None
        return [tuple(m.channels) for m in users]

    @property
    def shapes(self) -> dict[str, tuple[int, int]]:
        """``{name: (C_m, T_m)}`` of the returned samples."""
        return {m.name: (len(m.channels) if m.channels else self._sources[self._key[m.name]].num_channels,
                         self._sources[self._key[m.name]].length) for m in self.modalities}

    @property
    def absent_counts(self) -> dict[str, int]:
        """Samples flagged absent per modality (``present_<name>`` = 0; all-NaN samples are found only when read)."""
        return {n: int((~p).sum()) for n, p in self._present.items()}

    @property
    def label_kind(self) -> str:
        return self._first.label_kind

    @property
    def labels_array(self) -> np.ndarray | None:
        return self._first.labels_array

    @property
    def num_classes(self) -> int | None:
        return self._first.num_classes

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch that seeds augmentation (as :meth:`H5Dataset.set_epoch`)."""
        for source in self._sources.values():
            source.set_epoch(epoch)

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self._first)

    def __getitem__(self, index: int) -> Any:
        arrays, y = {}, None
        for key, ds in self._sources.items():
            item = ds[index]
            if ds is self._first and self.label_kind != "none":
                item, y = item
            arrays[key] = item
        sample: dict[str, torch.Tensor] = {}
        for m in self.modalities:
            x = arrays[self._key[m.name]]
            x = x[list(m.channels)] if m.channels is not None else x
            if not self._present[m.name][index]:
                x = torch.full_like(x, float("nan"))
            sample[m.name] = x
        return sample if y is None else (sample, y)

    def close(self) -> None:
        for source in self._sources.values():
            source.close()

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}={c}×{t}" for n, (c, t) in self.shapes.items())
        return f"MultiModalDataset({len(self._paths)} file(s), N={len(self)}, {shapes}, labels={self.label_kind!r})"
