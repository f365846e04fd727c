"""Readers: one file on disk → arrays, or a :class:`ReadError` whose one-line text names the file and the reason.

Formats: WFDB records (format 16 with numpy, the rest via ``wfdb``), PhysioNet/CinC Challenge 2020/2021 records
(``.hea`` + MATLAB v4 ``.mat`` holding ``val`` ``[C, T]`` int16, used for CPSC 2018 and Chapman-Shaoxing), MATLAB
``.mat`` v4/v5 (``scipy``) and v7.3 (HDF5, ``h5py``), numeric CSV/TSV, EPN-612 user JSON and NinaPro ``.mat``.
Signals come back as ``[C, T]``.

Readers only read: they never write, fix or move files. The reasons they raise end up verbatim in ``skipped.csv``.
References: WFDB header format, https://physionet.org/physiotools/wag/header-5.htm (fields, defaults: gain 0 or
missing → 200, baseline → ADC zero, fs → 250 Hz, units → mV); MATLAB v4 matrix header (5 int32: type, rows,
cols, imagf, name length).
"""
from __future__ import annotations

import datetime
import io
import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np
import scipy.io
from scipy.io.matlab import matfile_version

with warnings.catch_warnings():  # wfdb 4.3's import calls pandas APIs that pandas 3 deprecates
    warnings.filterwarnings("ignore", message="The inplace keyword in DataFrame")
    import wfdb

__all__ = ["ReadError", "Recording", "Header", "SignalSpec", "read_text", "header_codes", "parse_header",
           "read_header_fs", "read_wfdb", "read_challenge", "read_mat_array", "read_csv", "read_epn_user",
           "read_ninapro", "read_recording"]

PathLike = str | os.PathLike
_ENCODINGS = ("utf-8-sig", "gbk", "cp1252", "latin-1")  # utf-8-sig reads plain utf-8 too and drops a BOM
_MAT_KEYS = ("val", "data", "ecg", "ECG", "signal", "emg")
_WFDB_DEFAULT_GAIN = 200.0
_WFDB_DEFAULT_FS = 250.0
_FMT16_INVALID = -32768  # WFDB's "no sample" value for format 16; wfdb turns it into NaN, so does the fallback
_EPN_CHANNELS = 8
_NUMERIC_CLASSES = {"double", "single", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
                    "logical"}
_V4_DTYPES = {0: "f8", 1: "f4", 2: "i4", 3: "i2", 4: "u2", 5: "u1"}  # MATLAB v4 type digit P → numpy


class ReadError(ValueError):
    """A file that cannot be used; ``str(e)`` is a one-line reason that names the file."""


def _fail(path: PathLike | str, reason: object) -> ReadError:
    """``ReadError("<path>: <reason>")`` with the reason folded onto one line."""
    return ReadError(f"{path}: {' '.join(str(reason).split())}")


@dataclass
class Recording:
    """One record: ``signal`` ``[C, T]`` float32 in physical units (mV for ECG) where the format has gains."""

    signal: np.ndarray
    fs: float
    channel_names: list[str]
    comments: list[str] = field(default_factory=list)  # header comment lines without '#', stripped


class SignalSpec(NamedTuple):
    """One WFDB signal line. ``fmt`` is the storage format ("16"), ``byte_offset`` the ``+N`` of the format field."""

    file: str
    fmt: str
    gain: float
    baseline: int
    units: str
    name: str
    byte_offset: int = 0


@dataclass
class Header:
    """A parsed WFDB header (single-segment records only)."""

    record_name: str
    n_signals: int
    fs: float
    n_samples: int | None
    signals: list[SignalSpec]
    comments: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------- text


def _existing_file(path: PathLike) -> Path:
    p = Path(path)
    if not p.is_file():
        raise _fail(p, "file not found" if not p.exists() else "not a regular file")
    return p


def read_text(path: PathLike) -> str:
    """Decode a text file trying utf-8 (BOM or not), gbk, cp1252, then latin-1 (which always succeeds)."""
    raw = _existing_file(path).read_bytes()
    for enc in _ENCODINGS:
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes any bytes")  # pragma: no cover


def header_codes(comments: list[str], key: str = "Dx") -> list[str]:
    """Tokens of the first comment ``<key>: a,b`` / ``<key> a; b`` (key case-insensitive); ``[]`` if none.

    Tokens are split on commas, semicolons and whitespace; SNOMED codes and abbreviations are both kept, as str.
    """
    pattern = re.compile(rf"{re.escape(key)}\s*[:\s](.*)", re.IGNORECASE | re.DOTALL)
    for line in comments:
        m = pattern.match(line.strip().lstrip("#").strip())
        if m:
            return [t for t in re.split(r"[,;\s]+", m.group(1)) if t]
    return []


# ---------------------------------------------------------------------------------------------------- WFDB header

_FMT_RE = re.compile(r"^(\d+)(?:x\d+)?(?::-?\d+)?(?:\+(\d+))?$")
_GAIN_RE = re.compile(r"^([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)?(?:\(([-+]?\d+)\))?(?:/(\S*))?$")
_INT_RE = re.compile(r"^[-+]?\d+$")
_FS_RE = re.compile(r"^(?P<fs>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"  # fs[/counter_freq[(base_counter)]]
                    r"(?:/(?:\d+\.?\d*|\.\d+)(?:\([-+]?(?:\d+\.?\d*|\.\d+)\))?)?$")


def _number(text: str) -> float | None:
    m = re.match(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", text)
    return float(m.group(0)) if m else None


def _parse_fs(token: str, source: str) -> float:
    """The sampling frequency field of a record line (``500``, ``500.0``, ``360/1000(0)``) in Hz. The whole field
    must be a number: ``5OO`` is a ReadError here, where ``wfdb`` reads its leading digit as 5 Hz."""
    m = _FS_RE.match(token)
    fs = float(m.group("fs")) if m else math.nan
    if not (math.isfinite(fs) and fs > 0):
        raise _fail(source, f"record line has sampling frequency '{token}'; expected a positive number in Hz "
                            "(e.g. 500 or 360/1000)")
    return fs


def _parse_record_line(tokens: list[str], source: str) -> tuple[str, int, float, int | None]:
    name = tokens[0]
    if "/" in name:
        raise _fail(source, f"multi-segment record '{name}' is not supported")
    if len(tokens) < 2 or not _INT_RE.match(tokens[1]):
        raise _fail(source, f"record line '{' '.join(tokens)}' has no integer signal count")
    n_signals = int(tokens[1])
    fs = _parse_fs(tokens[2], source) if len(tokens) > 2 else _WFDB_DEFAULT_FS  # "500", "500/1000(0)", "500.0"
    n_samples = None
    if len(tokens) > 3:
        value = _number(tokens[3])
        n_samples = int(value) if value is not None and value == int(value) and value > 0 else None
    return name, n_signals, float(fs), n_samples


def _parse_signal_line(tokens: list[str], line_no: int, source: str) -> SignalSpec:
    if len(tokens) < 2:
        raise _fail(source, f"signal line {line_no} has {len(tokens)} field(s); expected at least file and format")
    fmt = _FMT_RE.match(tokens[1])
    if not fmt:
        raise _fail(source, f"signal line {line_no} has format '{tokens[1]}'; expected e.g. 16 or 16x1+24")
    gain, baseline, units = _WFDB_DEFAULT_GAIN, None, "mV"
    rest = tokens[2:]
    if rest:
        g = _GAIN_RE.match(rest[0])
        if not g:
            raise _fail(source, f"signal line {line_no} has gain '{rest[0]}'; expected gain[(baseline)][/units]")
        if g.group(1) is not None and float(g.group(1)) != 0:
            gain = float(g.group(1))
        baseline = int(g.group(2)) if g.group(2) is not None else None
        units = g.group(3) or units
        rest = rest[1:]
    ints: list[int] = []  # adcres adczero initval checksum blocksize: any trailing ones may be missing
    while rest and len(ints) < 5 and _INT_RE.match(rest[0]):
        ints.append(int(rest.pop(0)))
    if baseline is None:
        baseline = ints[1] if len(ints) > 1 else 0
    return SignalSpec(tokens[0], fmt.group(1), gain, baseline, units, " ".join(rest), int(fmt.group(2) or 0))


def parse_header(text: str, source: str = "<header>") -> Header:
    """Parse WFDB header text; missing trailing fields get WFDB's defaults. ``source`` names the file in errors."""
    comments, lines = [], []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comments.append(stripped[1:].strip())
        elif stripped:
            lines.append(stripped.split())
    if not lines:
        raise _fail(source, "empty header: no record line")
    name, n_signals, fs, n_samples = _parse_record_line(lines[0], source)
    if len(lines) - 1 != n_signals:
        raise _fail(source, f"header declares {n_signals} signals but has {len(lines) - 1} signal lines")
    signals = [_parse_signal_line(tokens, i + 1, source) for i, tokens in enumerate(lines[1:])]
    return Header(name, n_signals, fs, n_samples, signals, comments)


def read_header_fs(path: PathLike) -> float:
    """The sampling rate in Hz on the record line of a WFDB header (``path`` with or without ``.hea``; single- or
    multi-segment), WFDB's 250 Hz when the field is absent; a ReadError naming the file when it is not a number."""
    hea = Path(path)
    if hea.suffix.lower() != ".hea":
        hea = Path(f"{hea}.hea")
    hea = _existing_file(hea)
    for line in read_text(hea).splitlines():
        tokens = line.split()
        if tokens and not tokens[0].startswith("#"):
            return _parse_fs(tokens[2], str(hea)) if len(tokens) > 2 else _WFDB_DEFAULT_FS
    raise _fail(hea, "empty header: no record line")


# ---------------------------------------------------------------------------------------------------- WFDB records


def _channel_names(names: list[str | None]) -> list[str]:
    """Header signal names, ``ch<i>`` where a header gives none."""
    return [str(n) if n else f"ch{i}" for i, n in enumerate(names)]


# ``PHYSIOWAVE_WFDB_FAST=0`` sends every record through ``wfdb.rdrecord`` (benchmarks compare the two paths).
WFDB_FAST = os.environ.get("PHYSIOWAVE_WFDB_FAST", "1").strip() != "0"

# The header subset read without wfdb. A header that matches these exactly (whole line, ASCII) means the same to
# wfdb's own regular expressions (wfdb/io/header.py rx_record, rx_signal), which match the prefix they can and
# silently reinterpret the rest; anything else (other formats, x2 frames, skew, multi-segment, a missing fs or
# length, a signal name starting with a digit or '-' before all five integer fields, tabs in a name, ...) goes to
# wfdb.rdrecord, which then reads it or raises as before.
_FAST_RECORD_RE = re.compile(
    r"[-\w]+[ \t]+(?P<n_sig>\d+)[ \t]+(?P<fs>\d+(?:\.\d*)?)(?:/\d+(?:\.\d*)?(?:\(-?\d+(?:\.\d*)?\))?)?"
    r"[ \t]+(?P<sig_len>\d+)(?:[ \t]+(?P<time>\d{1,2}:\d{1,2}:\d{1,2}(?:\.\d{1,6})?)"
    r"(?:[ \t]+(?P<date>\d{1,2}/\d{1,2}/\d{4}))?)?", re.ASCII)
_FAST_SIGNAL_RE = re.compile(
    r"(?P<file>[-\w]+(?:\.\w+)?)[ \t]+16(?:x1)?(?:\+(?P<offset>\d+))?"
    r"(?:[ \t]+(?P<gain>-?\d+(?:\.\d*)?(?:e[-+]?\d+)?)(?:\((?P<baseline>-?\d+)\))?(?:/[\w^?%/-]*)?"
    r"(?:[ \t]+\d+(?:[ \t]+(?P<zero>-?\d+)(?:[ \t]+-?\d+(?:[ \t]+-?\d+(?:[ \t]+\d+(?P<all_ints>))?)?)?)?)?"
    r"(?:[ \t]+(?P<name>[^\t\n\r\f\v]+))?)?", re.ASCII)  # a name starting with - or a digit: see _fast_wfdb_plan


class _FastPlan(NamedTuple):
    """Everything the fast path needs from a header: one format-16 file, interleaved ``[T, C]`` little-endian."""

    dat: Path
    byte_offset: int
    n_sig: int
    sig_len: int
    fs: float
    gain: np.ndarray  # [C] float64, 0 already replaced by 200
    baseline: np.ndarray  # [C] int64
    names: list[str | None]
    comments: list[str]


def _wfdb_time_ok(time: str | None, date: str | None) -> bool:
    """Whether wfdb's strptime calls accept the record line's base time and date (else wfdb raises: fall back)."""
    try:
        if time is not None:
            datetime.datetime.strptime(time, "%H:%M:%S.%f" if "." in time else "%H:%M:%S")
        if date is not None:
            datetime.datetime.strptime(date, "%d/%m/%Y")
    except ValueError:
        return False
    return True


def _fast_wfdb_plan(hea: Path) -> _FastPlan | str:
    """The fast-path plan of a header, or the reason it goes to ``wfdb.rdrecord`` instead."""
    try:
        raw = hea.read_bytes()
    except OSError as err:
        return f"header unreadable ({type(err).__name__})"
    try:
        text = raw.decode("ascii")  # wfdb decodes ascii dropping other bytes
    except UnicodeDecodeError:
        return "header is not ASCII"
    lines, comments = [], []
    for line in text.splitlines():  # the same splitting and stripping as wfdb.io.header.parse_header_content
        line = line.strip()
        if line.startswith("#"):
            comments.append(line.strip(" \t#").strip())
        elif line:
            lines.append(line)
    if not lines:
        return "no record line"
    rec = _FAST_RECORD_RE.fullmatch(lines[0])
    if rec is None:
        return "record line outside the fast subset"
    n_sig, sig_len = int(rec["n_sig"]), int(rec["sig_len"])
    fs = float(rec["fs"])
    if round(fs, 8) == float(int(fs)):  # wfdb rounds fs within 1e-8 of an integer
        fs = float(int(fs))
    if n_sig == 0 or sig_len == 0 or fs <= 0 or len(lines) - 1 != n_sig:
        return "no signals, no samples, fs 0 or a signal-line count that differs from the record line"
    if (rec["time"] or rec["date"]) and not _wfdb_time_ok(rec["time"], rec["date"]):
        return "base time or date that wfdb rejects"
    specs = [_FAST_SIGNAL_RE.fullmatch(line) for line in lines[1:]]
    if not all(specs):
        return "signal line outside the fast subset (format 16, one sample per frame, no skew)"
    if any(s["name"] and s["name"][0] in "-0123456789" and s["all_ints"] is None for s in specs):
        return "a signal name that wfdb would read as an integer field"  # "16 0 5V": init value 5, name "V"
    if len({s["file"] for s in specs}) != 1 or len({s["offset"] for s in specs}) != 1:
        return "signals in several files or at several byte offsets"
    gain = np.array([float(s["gain"]) if s["gain"] else _WFDB_DEFAULT_GAIN for s in specs], dtype=np.float64)
    gain[gain == 0] = _WFDB_DEFAULT_GAIN
    baseline = np.array([int(s["baseline"]) if s["baseline"] is not None else int(s["zero"] or 0) for s in specs],
                        dtype=np.int64)
    names = [s["name"] for s in specs]
    return _FastPlan(hea.parent / specs[0]["file"], int(specs[0]["offset"] or 0), n_sig, sig_len, fs, gain,
                     baseline, names, comments)


def _read_fast(hea: Path, plan: _FastPlan) -> Recording:
    """The ``.dat`` of a planned record → ``(digital - baseline) / gain``, computed as wfdb does (float64)."""
    n = plan.n_sig * plan.sig_len
    if not plan.dat.is_file():
        raise _fail(hea, f"signal file {plan.dat.name} not found")
    available = max(0, plan.dat.stat().st_size - plan.byte_offset)
    if available < 2 * n:
        raise _fail(plan.dat, f"truncated .dat: expected {2 * n} bytes of format-16 data ({plan.n_sig} signals x "
                              f"{plan.sig_len} samples) from byte {plan.byte_offset}, found {available}")
    try:
        digital = np.fromfile(plan.dat, dtype="<i2", count=n, offset=plan.byte_offset)
    except OSError as err:  # unreadable (permissions, I/O error)
        raise _fail(plan.dat, f"unreadable .dat: {err}") from err
    if digital.size != n:  # the file shrank since stat
        raise _fail(plan.dat, f"truncated .dat: expected {n} samples, read {digital.size}")
    digital = digital.reshape(plan.sig_len, plan.n_sig)
    physical = digital.astype(np.float64)  # wfdb's Record.dac: float64, minus baseline, over gain, NaN where -32768
    physical -= plan.baseline
    physical /= plan.gain
    physical[digital == _FMT16_INVALID] = np.nan
    return Recording(np.ascontiguousarray(physical.T, dtype=np.float32), plan.fs, _channel_names(plan.names),
                     plan.comments)


def _read_rdrecord(p: Path, record_path: Path) -> Recording:
    try:
        with warnings.catch_warnings():  # wfdb 4.3 uses pandas APIs that pandas 3 deprecates, on every read
            warnings.filterwarnings("ignore", message="The inplace keyword in DataFrame")
            record = wfdb.rdrecord(str(record_path), physical=True)
    except Exception as err:  # wfdb raises many types (ValueError, TypeError, OSError, ...) on bad records
        raise _fail(p, f"wfdb could not read the record: {type(err).__name__}: {err}") from err
    if record.p_signal is None or record.p_signal.ndim != 2 or record.p_signal.shape[1] == 0:
        raise _fail(p, "wfdb read no signals")
    return Recording(
        signal=np.ascontiguousarray(record.p_signal.T, dtype=np.float32),  # [T, C] → [C, T]
        fs=float(record.fs),
        channel_names=_channel_names(record.sig_name),
        comments=[c.strip() for c in (record.comments or [])],
    )


def read_wfdb(path: PathLike) -> Recording:
    """Any WFDB record (``path`` with or without ``.hea``) → signal ``[C, T]`` float32, as ``wfdb.rdrecord``.

    Fast path (no wfdb; its pandas-based header parser costs 3-8 ms a record): a single-segment header whose
    signals are all format 16 (interleaved little-endian int16, one sample per frame, no skew) in one file at one
    byte offset, with fs and length given; PTB-XL, MIMIC-IV-ECG and the Challenge ``.mat`` headers are. The
    ``.dat`` is read with numpy and converted as wfdb does (float64 ``(d - baseline) / gain``, gain 0 → 200,
    baseline → ADC zero → 0, -32768 → NaN), so the result equals ``wfdb.rdrecord(...).p_signal`` (tested); a
    missing or short ``.dat`` is a ReadError naming it. Every other record goes through ``wfdb.rdrecord``, as
    does everything when ``PHYSIOWAVE_WFDB_FAST=0``, after its header's rate field is checked
    (:func:`read_header_fs`): ``wfdb`` reads a field such as ``5OO`` as 5 Hz.
    """
    p = Path(path)
    record_path = p.with_suffix("") if p.suffix.lower() == ".hea" else p
    hea = record_path.with_name(record_path.name + ".hea")
    if WFDB_FAST:
        plan = _fast_wfdb_plan(hea)
        if isinstance(plan, _FastPlan):
            return _read_fast(hea, plan)
    if hea.is_file():  # a missing header is left to wfdb, whose error names what it looked for
        read_header_fs(hea)
    return _read_rdrecord(p, record_path)


def _signal_file(hea: Path, header: Header) -> Path:
    """The data file the header names (one for all signals), also accepting ``.mat``/``.MAT`` beside the header."""
    files = {s.file for s in header.signals}
    if len(files) != 1:
        raise _fail(hea, f"signals are spread over {len(files)} files ({', '.join(sorted(files))}); expected one .mat")
    named = hea.parent / files.pop()
    candidates = [named, named.with_suffix(".mat"), named.with_suffix(".MAT"),
                  hea.with_suffix(".mat"), hea.with_suffix(".MAT")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise _fail(hea, f"signal file {named.name} not found (also tried .mat/.MAT beside the header)")


def _orient(arr: np.ndarray, header: Header, mat: Path) -> np.ndarray:
    """``[C, T]`` from a ``[C, T]`` or ``[T, C]`` array, checked against the header's counts."""
    n, t = header.n_signals, header.n_samples
    if arr.ndim != 2:
        raise _fail(mat, f".mat signal has {arr.ndim} dimensions {arr.shape}; expected 2 ([signals, samples])")
    if arr.shape[0] != n and arr.shape[1] == n:
        arr = arr.T  # stored [T, C]
    if arr.shape[0] != n:
        raise _fail(mat, f"header declares {n} signals but .mat has {arr.shape[0]} rows (shape {arr.shape})")
    if t is not None and arr.shape[1] != t:
        raise _fail(mat, f"header declares {t} samples but .mat has {arr.shape[1]} (shape {arr.shape})")
    return arr


def _read_challenge_mat(hea: Path, header: Header, mat: Path) -> Recording:
    """Fallback without wfdb: scipy-loaded digital values → ``(digital - baseline) / gain`` per channel."""
    digital = _orient(read_mat_array(mat), header, mat)
    if not np.issubdtype(digital.dtype, np.number) or np.iscomplexobj(digital):
        raise _fail(mat, f".mat signal has dtype {digital.dtype}; expected real numbers")
    gain = np.array([s.gain for s in header.signals], dtype=np.float64)[:, None]
    baseline = np.array([s.baseline for s in header.signals], dtype=np.float64)[:, None]
    physical = (digital.astype(np.float64) - baseline) / gain
    fmt16 = np.array([s.fmt == "16" for s in header.signals])[:, None]
    physical[fmt16 & (digital == _FMT16_INVALID)] = np.nan
    names = _channel_names([s.name for s in header.signals])
    return Recording(physical.astype(np.float32), header.fs, names, header.comments)


def read_challenge(hea_path: PathLike) -> Recording:
    """A PhysioNet/CinC Challenge 2020/2021 record (``.hea`` + MATLAB ``.mat`` ``val``) → ``[C, T]`` in mV.

    The header is parsed here (tolerant of fields ``wfdb`` rejects) and the ``.mat`` loaded with scipy/h5py (v4,
    v5, v7.3, ``[C, T]`` or ``[T, C]``, checked against the header): 5× faster than ``wfdb.rdrecord``, whose
    pandas header parser dominates, and equal to it on the plain layout (tested). wfdb is not used: it reads the
    ``.mat`` as raw int16 at the header's offset and misreads v5 or ``[T, C]`` files without an error.
    Samples stored as -32768 (format 16) become NaN, as in wfdb.
    """
    hea = Path(hea_path)
    if hea.suffix.lower() != ".hea" and Path(f"{hea}.hea").is_file():
        hea = Path(f"{hea}.hea")  # record path given without the extension
    hea = _existing_file(hea)
    header = parse_header(read_text(hea), source=str(hea))
    return _read_challenge_mat(hea, header, _signal_file(hea, header))


# ---------------------------------------------------------------------------------------------------- MATLAB files


@dataclass
class _V4Matrix:
    name: str
    rows: int
    cols: int
    dtype: np.dtype
    data_offset: int  # byte where the values start
    n_bytes: int  # bytes the header promises
    available: int  # bytes actually in the file from data_offset (capped at n_bytes)


def _v4_matrices(path: Path) -> list[_V4Matrix]:
    """Walk the matrix headers of a MATLAB v4 file (5 int32: type MOPT, rows, cols, imagf, name length)."""
    size = path.stat().st_size
    out, pos = [], 0
    with open(path, "rb") as f:
        while pos < size:
            f.seek(pos)
            head = f.read(20)
            if len(head) < 20:
                raise _fail(path, f"truncated .mat: matrix header at byte {pos} has {len(head)} of 20 bytes")
            for order in "<>":
                mopt, rows, cols, imagf, namlen = (int(x) for x in np.frombuffer(head, dtype=f"{order}i4"))
                if 0 <= mopt < 5000 and mopt // 1000 in (0, 1) and (mopt // 10) % 10 in _V4_DTYPES:
                    break
            else:
                raise _fail(path, f"not a MATLAB v4 matrix header at byte {pos}")
            dtype = np.dtype(_V4_DTYPES[(mopt // 10) % 10]).newbyteorder(order)
            name = f.read(namlen).split(b"\0", 1)[0].decode("latin-1")
            data_offset = pos + 20 + namlen
            n_bytes = rows * cols * dtype.itemsize * (2 if imagf else 1)
            out.append(_V4Matrix(name, rows, cols, dtype, data_offset, n_bytes,
                                 max(0, min(n_bytes, size - data_offset))))
            pos = data_offset + n_bytes
    return out


def _v4_truncation(path: Path) -> str | None:
    """The truncation reason of a v4 file, or None when every matrix is complete."""
    for m in _v4_matrices(path):
        if m.available < m.n_bytes:
            return (f"truncated .mat: expected {m.n_bytes} bytes of {m.dtype.name} data for "
                    f"'{m.name}' ({m.rows}x{m.cols}), found {m.available}")
    return None


def _mat_version(path: Path) -> int:
    """0 (v4), 1 (v5/v7) or 2 (v7.3, HDF5)."""
    try:
        return matfile_version(str(path))[0]
    except Exception as err:  # MatReadError (empty/truncated), ValueError (unknown type)
        raise _fail(path, f"not a readable MATLAB file: {err}") from err


def _mat_index(path: Path) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, MATLAB-order shape, MATLAB class) of each variable, without reading the values."""
    if _mat_version(path) == 2:
        try:
            with h5py.File(path, "r") as f:
                return [(k, tuple(reversed(d.shape)), _h5_class(d)) for k, d in f.items()
                        if isinstance(d, h5py.Dataset) and not k.startswith("#")]
        except OSError as err:
            raise _fail(path, f"unreadable MATLAB v7.3 (HDF5) .mat: {err}") from err
    try:
        return [(name, tuple(shape), cls) for name, shape, cls in scipy.io.whosmat(str(path))]
    except Exception as err:
        raise _fail(path, f"unreadable .mat: {err}") from err


def _h5_class(ds: h5py.Dataset) -> str:
    cls = ds.attrs.get("MATLAB_class", b"")
    cls = cls.decode() if isinstance(cls, bytes) else str(cls)
    return cls or ("double" if ds.dtype.kind in "fiub" else "unknown")


def _mat_load(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    """Load the named variables in MATLAB order (v7.3 datasets are transposed back)."""
    if _mat_version(path) == 2:
        try:
            with h5py.File(path, "r") as f:
                return {n: np.asarray(f[n][()]).T for n in names}  # HDF5 holds MATLAB arrays reversed
        except OSError as err:
            raise _fail(path, f"unreadable MATLAB v7.3 (HDF5) .mat: {err}") from err
    try:
        data = scipy.io.loadmat(str(path), variable_names=names)
    except Exception as err:
        reason = _v4_truncation(path) if _mat_version(path) == 0 else None
        raise _fail(path, reason or f"unreadable .mat: {err}") from err
    return {n: data[n] for n in names}


def read_mat_array(path: PathLike, keys: tuple[str, ...] = _MAT_KEYS) -> np.ndarray:
    """The array under the first of ``keys`` present, else the single largest 2-D numeric array (as stored).

    MATLAB v4/v5/v7 via scipy, v7.3 (HDF5) via h5py, transposed back to the shape MATLAB shows.
    """
    p = _existing_file(path)
    index = _mat_index(p)
    by_name = {name: (shape, cls) for name, shape, cls in index}
    chosen = next((k for k in keys if k in by_name), None)
    if chosen is None:
        numeric = [(int(np.prod(shape)), name) for name, shape, cls in index
                   if len(shape) == 2 and cls in _NUMERIC_CLASSES and min(shape) > 0]
        if not numeric:
            have = ", ".join(f"{n} {s} {c}" for n, s, c in index) or "no variables"
            raise _fail(p, f"no 2-D numeric array in .mat (looked for {', '.join(keys)}; has {have})")
        numeric.sort(reverse=True)
        if len(numeric) > 1 and numeric[0][0] == numeric[1][0]:
            raise _fail(p, f"no key of {', '.join(keys)} and the largest arrays tie: "
                           f"{numeric[0][1]}, {numeric[1][1]}; cannot choose")
        chosen = numeric[0][1]
    arr = np.asarray(_mat_load(p, [chosen])[chosen])
    if arr.dtype.kind not in "fiub" or arr.size == 0:
        raise _fail(p, f"'{chosen}' is {arr.dtype} with shape {arr.shape}; expected a non-empty numeric array")
    return arr


def _scalar(value: np.ndarray) -> int | float:
    item = np.asarray(value).reshape(-1)[0].item()
    if isinstance(item, bool) or (isinstance(item, float) and item.is_integer()):
        return int(item)
    return item


def read_ninapro(path: PathLike, key: str = "emg") -> tuple[np.ndarray, dict[str, int | float]]:
    """NinaPro ``.mat``: ``key`` stored ``[T, C]`` → (signal ``[C, T]`` float32, scalar numeric fields).

    ``meta`` holds every one-element numeric variable (e.g. ``subject``, ``daytesting``, ``time``) as a Python
    int (integral values, as MATLAB stores them in doubles) or float.
    """
    p = _existing_file(path)
    index = _mat_index(p)
    names = {name for name, _, _ in index}
    if key not in names:
        raise _fail(p, f"no '{key}' variable in .mat (has: {', '.join(sorted(names)) or 'none'})")
    scalars = [name for name, shape, cls in index
               if name != key and cls in _NUMERIC_CLASSES and int(np.prod(shape)) == 1]
    values = _mat_load(p, [key, *scalars])
    emg = np.asarray(values[key])
    if emg.ndim != 2 or emg.size == 0 or emg.dtype.kind not in "fiub":
        raise _fail(p, f"'{key}' is {emg.dtype} with shape {emg.shape}; expected a 2-D numeric [samples, channels]")
    signal = np.ascontiguousarray(emg.T, dtype=np.float32)  # [T, C] → [C, T]
    return signal, {name: _scalar(values[name]) for name in scalars}


# ---------------------------------------------------------------------------------------------------- CSV


def _csv_delimiter(line: str) -> str | None:
    for delim in ("\t", ",", ";"):
        if delim in line:
            return delim
    return None  # whitespace


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _csv_problem(lines: list[str], delim: str | None, first: int, width: int) -> str | None:
    """The first bad data line (1-based line number) of a CSV, for an error numpy reports by data-row index."""
    for line_no, line in enumerate(lines[first:], start=first + 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cells = [c.strip() for c in line.split(delim)]
        if len(cells) != width:
            return f"line {line_no} has {len(cells)} fields; expected {width}"
        for col, cell in enumerate(cells):
            if not _is_number(cell):
                return f"line {line_no}, column {col}: '{cell}' is not a number"
    return None


def _select_columns(names: list[str], columns: list[str], path: Path) -> list[int]:
    picked = []
    for col in columns:
        if col in names:
            picked.append(names.index(col))
        elif _INT_RE.match(col.strip()) and -len(names) <= int(col) < len(names):
            picked.append(int(col) % len(names))
        else:
            raise _fail(path, f"column '{col}' not found (columns: {', '.join(names)}; or give an index "
                              f"0..{len(names) - 1})")
    return picked


def read_csv(path: PathLike, fs: float, columns: list[str] | None = None) -> Recording:
    """Numeric CSV/TSV, rows = time, columns = channels → signal ``[C, T]`` float32.

    A first row that is not all numeric is the header of channel names (else ``ch0..``). ``columns`` picks
    channels by name or by integer index given as str. Delimiter: tab, comma or semicolon (first one seen on
    the first line), else whitespace. Lines starting with ``#`` are ignored.
    """
    if not fs > 0:
        raise ValueError(f"read_csv: fs must be a positive sampling rate in Hz, got {fs}")
    p = _existing_file(path)
    lines = read_text(p).splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")), None)
    if first is None:
        raise _fail(p, "empty CSV: no rows")
    delim = _csv_delimiter(lines[first])
    cells = [c.strip().strip("\"'") for c in lines[first].split(delim)]
    has_header = not all(_is_number(c) for c in cells)
    names = cells if has_header else [f"ch{i}" for i in range(len(cells))]
    body = lines[first + 1:] if has_header else lines[first:]
    if not any(line.strip() and not line.lstrip().startswith("#") for line in body):
        raise _fail(p, "empty CSV: header row but no data rows" if has_header else "empty CSV: no data rows")
    try:
        data = np.loadtxt(io.StringIO("\n".join(body)), delimiter=delim, dtype=np.float64, ndmin=2)
    except ValueError as err:
        problem = _csv_problem(lines, delim, first + int(has_header), len(names))
        raise _fail(p, problem or f"not a numeric table: {err}") from err
    if data.shape[1] != len(names):
        raise _fail(p, f"header has {len(names)} names but rows have {data.shape[1]} fields")
    picked = list(range(len(names))) if columns is None else _select_columns(names, columns, p)
    signal = np.ascontiguousarray(data[:, picked].T, dtype=np.float32)  # [T, C] → [C, T]
    return Recording(signal, float(fs), [names[i] for i in picked])


# ---------------------------------------------------------------------------------------------------- EPN-612 JSON


def _epn_emg(sample: Any) -> np.ndarray | str:
    """``emg`` ``[8, T]`` float32 (channels ch1..ch8 in numeric order, raw values), or the reason it is unusable."""
    if not isinstance(sample, dict):
        return f"sample is {type(sample).__name__}; expected an object"
    emg = sample.get("emg")
    if not isinstance(emg, dict):
        return "no 'emg' object" if emg is None else f"'emg' is {type(emg).__name__}; expected an object"
    numbered = {}
    for name in emg:
        m = re.fullmatch(r"ch(\d+)", str(name), re.IGNORECASE)
        if not m:
            return f"unexpected emg key '{name}'; expected ch1..ch{_EPN_CHANNELS}"
        numbered[int(m.group(1))] = name
    if sorted(numbered) != list(range(1, _EPN_CHANNELS + 1)):
        return f"emg channels {', '.join(emg)}; expected ch1..ch{_EPN_CHANNELS}"
    lengths = [len(emg[numbered[i]]) if isinstance(emg[numbered[i]], list) else -1 for i in sorted(numbered)]
    if min(lengths) < 0:
        return "an emg channel is not a list of numbers"
    if len(set(lengths)) != 1:
        return f"ragged emg channels: lengths {lengths}"
    if lengths[0] == 0:
        return "empty emg channels"
    try:
        return np.array([emg[numbered[i]] for i in sorted(numbered)], dtype=np.float32)
    except (TypeError, ValueError) as err:
        return f"non-numeric emg values: {err}"


def _epn_samples(samples: dict) -> list[dict]:
    out = []
    for sample_id, sample in samples.items():
        gesture = sample.get("gestureName") if isinstance(sample, dict) else None
        item: dict[str, Any] = {"id": sample_id, "gesture": gesture if isinstance(gesture, str) else None}
        emg = _epn_emg(sample)
        item["error" if isinstance(emg, str) else "emg"] = emg
        out.append(item)
    return out


def read_epn_user(path: PathLike) -> dict[str, list[dict]]:
    """EPN-612 user JSON → ``{"training": [...], "testing": [...]}`` in file order.

    Each item is ``{"id", "gesture" (None when the file has no gestureName), "emg": [8, T] float32}`` with raw
    values (not divided by 128). A malformed sample gets ``"error": reason`` instead of ``"emg"``, so the caller
    can log it as skipped; ``testingSamples`` may be absent (then ``[]``).
    """
    p = _existing_file(path)
    try:
        data = json.loads(read_text(p))
    except json.JSONDecodeError as err:
        raise _fail(p, f"not valid JSON: {err}") from err
    if not isinstance(data, dict) or "trainingSamples" not in data:
        raise _fail(p, "no 'trainingSamples' in JSON; expected an EPN-612 user file")
    out = {}
    for key, split in (("trainingSamples", "training"), ("testingSamples", "testing")):
        samples = data.get(key, {})
        if not isinstance(samples, dict):
            raise _fail(p, f"'{key}' is {type(samples).__name__}; expected an object of samples")
        out[split] = _epn_samples(samples)
    return out


def read_recording(path: Path, input_fs: float | None) -> Recording:
    """One raw record: Challenge (.hea + .mat), WFDB (.hea + .dat) or CSV (rate ``input_fs``)."""
    if path.suffix.lower() == ".hea":
        return read_challenge(path) if path.with_suffix(".mat").is_file() else read_wfdb(path)
    if not input_fs:
        raise ValueError(f"{path}: CSV files carry no sampling rate: pass --input_fs HZ")
    return read_csv(path, input_fs)
