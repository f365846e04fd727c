"""The signal and window parameters of preprocessing, defined once: names, defaults, flags, help texts and checks.

:class:`SignalParams` holds what :func:`physiowave.preprocess.transform.process_recording` reads (``args.<name>``).
The preprocessing scripts add its flags with :meth:`SignalParams.add_arguments` (data sets change defaults with
``parser.set_defaults``); training records the values in every checkpoint, and the ``physiowave`` command reads
them back with :meth:`SignalParams.from_recorded` and takes the same flags as overrides
(``add_arguments(parser, overrides=True)``: every default None, i.e. as recorded).
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .signal import MAX_FS, MIN_FS, NORMALIZATIONS

__all__ = ["SignalParams", "add_arguments", "channel_list", "NORM_SCOPES", "TAILS", "NOTCH_FREQS", "SIGNAL_GROUP",
           "WINDOWS_GROUP", "SIGNAL_KEYS", "Preparation"]

NORM_SCOPES = ("window", "record")
TAILS = ("pad", "drop")
NOTCH_FREQS = (50.0, 60.0)
SIGNAL_GROUP = "signal"
WINDOWS_GROUP = "windows"


def channel_list(text: str) -> list[str]:
    """``"I, II,aVF"`` → ``["I", "II", "aVF"]`` (commas and/or spaces)."""
    return [c for c in text.replace(" ", ",").split(",") if c]


def _flag(group: str, help: str, **kwargs: Any) -> dict[str, Any]:
    return {"group": group, "help": help, "argparse": kwargs}


@dataclass
class SignalParams:
    """Signal and window parameters of one preprocessing run (or of the data a checkpoint was trained on).

    Attribute names are the flag names (``--max_nan_gap`` → ``max_nan_gap``), so an instance stands where
    preprocessing reads ``args.<name>``."""
    channels: list[str] | None = field(default=None, metadata=_flag(
        SIGNAL_GROUP, "channels to keep, in this order: names (case-insensitive) or indices, comma-separated",
        type=channel_list))
    target_fs: float | None = field(default=None, metadata=_flag(
        SIGNAL_GROUP, "resample to this rate in Hz (polyphase)", type=float))
    bandpass: list[float] | None = field(default=None, metadata=_flag(
        SIGNAL_GROUP, "zero-phase Butterworth band-pass in Hz before resampling (HI >= fs/2: high-pass)",
        type=float, nargs=2, metavar=("LO", "HI")))
    notch: float | None = field(default=None, metadata=_flag(
        SIGNAL_GROUP, "mains notch filter in Hz", type=float, choices=list(NOTCH_FREQS)))
    max_nan_gap: float = field(default=0.1, metadata=_flag(
        SIGNAL_GROUP, "interpolate NaN runs up to this many seconds; skip records with longer ones", type=float))
    normalize: str = field(default="zscore", metadata=_flag(
        SIGNAL_GROUP, "per-channel normalisation", choices=NORMALIZATIONS))
    norm_scope: str = field(default="window", metadata=_flag(
        SIGNAL_GROUP, "statistics over each window or over the whole record (real samples only)",
        choices=list(NORM_SCOPES)))
    window: int = field(default=2048, metadata=_flag(
        WINDOWS_GROUP, "window length in samples (at the output rate)", type=int))
    step: int = field(default=1024, metadata=_flag(WINDOWS_GROUP, "hop between window starts", type=int))
    tail: str = field(default="pad", metadata=_flag(
        WINDOWS_GROUP, "zero-pad the windows that run past the end, or drop them", choices=list(TAILS)))
    min_real: float = field(default=0.5, metadata=_flag(
        WINDOWS_GROUP, "a padded window is kept when at least this fraction of it is real signal", type=float))

    # ------------------------------------------------------------------------------------------ construction
    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The parameter (= flag) names, in flag order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """name → default."""
        return asdict(cls())

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, *, overrides: bool = False,
                      group: Any = None, skip: Iterable[str] = ()) -> None:
        """Add the flags: the ``signal`` and ``windows`` argument groups with the defaults (preprocessing), or
        with ``overrides`` every default None (commands that take recorded values unless a flag is given).
        ``group``: add them all to this argument group instead; ``skip``: names to leave out."""
        skip = set(skip)
        groups: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in skip:
                continue
            meta = f.metadata
            if group is not None:
                target = group
            elif meta["group"] not in groups:
                target = groups[meta["group"]] = parser.add_argument_group(meta["group"])
            else:
                target = groups[meta["group"]]
            target.add_argument(f"--{f.name}", default=None if overrides else f.default, help=meta["help"],
                                **meta["argparse"])

    @classmethod
    def from_namespace(cls, args: argparse.Namespace | Any) -> SignalParams:
        """The parameters in parsed flags (attributes absent from ``args`` keep their defaults)."""
        return cls._coerced({k: getattr(args, k) for k in cls.names() if hasattr(args, k)})

    @classmethod
    def from_recorded(cls, recorded: Mapping[str, Any] | None) -> SignalParams:
        """The parameters a preprocessing run recorded (a checkpoint's ``data.preprocessing``, an HDF5 file's
        ``preprocessing`` JSON): other keys are ignored, missing ones keep their defaults."""
        recorded = recorded or {}
        return cls._coerced({k: recorded[k] for k in cls.names() if k in recorded})

    @classmethod
    def _coerced(cls, values: Mapping[str, Any]) -> SignalParams:
        """JSON (or flags) → typed values: lists for ``channels``/``bandpass``, int windows, float rates."""
        out = dict(values)
        if out.get("channels") is not None:
            ch = out["channels"]
            ch = channel_list(ch) if isinstance(ch, str) else [str(c) for c in ch]
            out["channels"] = ch or None  # no names: every channel, as preprocessing reads an empty list
        if out.get("bandpass") is not None:
            out["bandpass"] = [float(v) for v in out["bandpass"]]
        for k in ("target_fs", "notch", "max_nan_gap", "min_real"):
            if out.get(k) is not None and not isinstance(out[k], bool):
                out[k] = float(out[k])
        for k in ("window", "step"):
            if isinstance(out.get(k), float) and float(out[k]).is_integer():
                out[k] = int(out[k])
        return cls(**out)

    def replace(self, **changes: Any) -> SignalParams:
        """A copy with ``changes`` (None values are ignored: "not given")."""
        return self._coerced({**asdict(self), **{k: v for k, v in changes.items() if v is not None}})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    # ------------------------------------------------------------------------------------------ checks
    def check(self) -> SignalParams:
        """Raise ValueError with a one-line message naming the flag when a value cannot work; returns self."""
        def number(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        if self.target_fs is not None and not (number(self.target_fs) and MIN_FS <= self.target_fs <= MAX_FS):
            raise ValueError(f"--target_fs {self.target_fs}: expected a rate in Hz within {MIN_FS:g}..{MAX_FS:g}")
        if self.bandpass is not None:
            bp = list(self.bandpass)
            if len(bp) != 2 or not all(number(v) and math.isfinite(v) for v in bp) or not 0 <= bp[0] < bp[1]:
                raise ValueError(f"--bandpass {' '.join(f'{v:g}' if number(v) else str(v) for v in bp)}: "
                                 "expected 0 <= LO < HI")
        if self.notch is not None and self.notch not in NOTCH_FREQS:
            raise ValueError(f"--notch {self.notch}: expected 50 or 60")
        if not (number(self.max_nan_gap) and 0 <= self.max_nan_gap < math.inf):
            raise ValueError(f"--max_nan_gap {self.max_nan_gap}: expected a finite number of seconds >= 0")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"--normalize {self.normalize}: expected one of {', '.join(NORMALIZATIONS)}")
        if self.norm_scope not in NORM_SCOPES:
            raise ValueError(f"--norm_scope {self.norm_scope}: expected one of {', '.join(NORM_SCOPES)}")
        for name in ("window", "step"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                raise ValueError(f"--{name} {value}: expected a positive integer")
        if self.tail not in TAILS:
            raise ValueError(f"--tail {self.tail}: expected one of {', '.join(TAILS)}")
        if not (number(self.min_real) and 0 < self.min_real <= 1):
            raise ValueError(f"--min_real {self.min_real}: expected a fraction in (0, 1]")
        return self


add_arguments = SignalParams.add_arguments
from_namespace = SignalParams.from_namespace
from_recorded = SignalParams.from_recorded


# the signal parameters a checkpoint records and inference flags override (the model rate is ``fs``, not ``target_fs``)
SIGNAL_KEYS = tuple(k for k in SignalParams.names() if k != "target_fs")
_DEFAULTS = SignalParams()


@dataclass
class Preparation:
    """How a raw recording becomes model input: the preprocessing parameters (:class:`SignalParams`, as the
    training data was made), the model rate ``fs`` (None: keep each record's own rate), the training input
    ``length`` and whether training z-scored each sample (``standardize``). ``input_fs`` is the rate of CSV files,
    which carry none."""
    fs: float | None
    window: int
    step: int
    length: int
    channels: list[str] | None = _DEFAULTS.channels
    normalize: str = _DEFAULTS.normalize
    norm_scope: str = _DEFAULTS.norm_scope
    bandpass: list[float] | None = _DEFAULTS.bandpass
    notch: float | None = _DEFAULTS.notch
    max_nan_gap: float = _DEFAULTS.max_nan_gap
    tail: str = _DEFAULTS.tail
    min_real: float = _DEFAULTS.min_real
    standardize: bool = False
    input_fs: float | None = None

    def signal_args(self) -> SignalParams:
        """The parameters :func:`process_recording` reads (``target_fs`` = the model rate ``fs``)."""
        return SignalParams(**{k: getattr(self, k) for k in SIGNAL_KEYS}, target_fs=self.fs)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
