"""Every record's sampling rate is read and checked on its own: records at another rate are resampled to the run's
rate (``--target_fs``, else the data set's rate, else a folder's most common rate), and a rate that is not a number
or is out of range skips that record alone, with the reason in ``skipped.csv``. Tiny WFDB and Challenge records
written here."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import wfdb
from scipy import signal as sps

from physiowave.preprocess.cli import STANDARD_12_LEADS, parse_args
from physiowave.preprocess.transform import process_recording
from physiowave.preprocess.cpsc2018 import CPSC2018Source
from physiowave.preprocess.cpsc2018 import main as cpsc_main
from physiowave.preprocess.epn612 import EPN612Source
from physiowave.preprocess.folder import main as folder_main
from physiowave.preprocess.mimic_ecg import MIMICSource
from physiowave.preprocess.mimic_ecg import main as mimic_main
from physiowave.preprocess.ninapro_db6 import DB6Source
from physiowave.preprocess.params import SignalParams
from physiowave.preprocess.ptbxl import PTBXLSource
from physiowave.preprocess.readers import ReadError, Recording, parse_header, read_header_fs, read_text, read_wfdb
from physiowave.preprocess.shaoxing import ShaoxingSource
from physiowave.preprocess.signal import SignalError

GAIN = 100.0
FOLDER = ["--format", "wfdb", "--window", "500", "--step", "500", "--normalize", "none"]


def _digital(fs: float, seconds: float, n_sig: int = 1) -> np.ndarray:
    """``[T, C]`` int16: a 1.5 Hz sine per channel (phase by channel), well below every Nyquist used here."""
    t = np.arange(int(fs * seconds)) / fs
    return (np.sin(2 * np.pi * 1.5 * t[:, None] + np.arange(n_sig)) * 1000).astype(np.int16)


def _wfdb(root: Path, name: str, fs: float, seconds: float = 8, names: list[str] | None = None) -> np.ndarray:
    """Write a format-16 record; returns its signal in mV, float32 ``[C, T]``."""
    names = names or ["a"]
    d = _digital(fs, seconds, len(names))
    root.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(name, fs=fs, units=["mV"] * len(names), sig_name=names, d_signal=d, fmt=["16"] * len(names),
                adc_gain=[GAIN] * len(names), baseline=[0] * len(names), write_dir=str(root))
    return (d.T / GAIN).astype(np.float32)


def _set_fs_field(hea: Path, text: str) -> None:
    """Replace the sampling-frequency field of the header's record line, as a hand edit would."""
    lines = hea.read_text().splitlines()
    tokens = lines[0].split()
    tokens[2] = text
    hea.write_text("\n".join([" ".join(tokens), *lines[1:]]) + "\n")


def _challenge(root: Path, name: str, fs: float, seconds: float = 10, fs_text: str | None = None) -> np.ndarray:
    """A 12-lead Challenge record (``.hea`` + MATLAB v4 ``val``) of class SNR; returns its signal in mV ``[12, T]``."""
    val = np.ascontiguousarray(_digital(fs, seconds, 12).T)
    root.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(root / f"{name}.mat", {"val": val}, format="4")
    lines = [f"{name} 12 {fs_text or f'{fs:g}'} {val.shape[1]}"]
    lines += [f"{name}.mat 16+24 {GAIN:g}/mV 16 0 {val[i, 0]} 0 0 {lead}" for i, lead in enumerate(STANDARD_12_LEADS)]
    lines += ["# Age: 50", "# Sex: Male", "# Dx: 426783006"]
    (root / f"{name}.hea").write_text("\n".join(lines) + "\n")
    return (val / GAIN).astype(np.float32)


def _windows(out: Path) -> tuple[dict[str, np.ndarray], set[float]]:
    """record id -> its windows ``[n, C, T]`` in start order over every split file, and the files' fs values."""
    parts: dict[str, list] = {}
    rates = set()
    for path in sorted(out.glob("*.h5")):
        with h5py.File(path) as f:
            rates.add(float(f.attrs["fs"]))
            for rid, start, win in zip(f["record_id"].asstr()[()], f["start"][()], f["data"][()]):
                parts.setdefault(rid, []).append((int(start), win))
    return {rid: np.stack([w for _, w in sorted(v, key=lambda x: x[0])]) for rid, v in parts.items()}, rates


def _skipped(out: Path) -> dict[str, str]:
    with open(out / "skipped.csv", newline="") as f:
        return {row["record"]: row["reason"] for row in csv.DictReader(f)}


def _flat(windows: np.ndarray) -> np.ndarray:
    """``[n, C, T]`` windows (step = window) → ``[C, n*T]``."""
    return np.concatenate(list(windows), axis=1)


# ---------------------------------------------------------------------------------------------------- folder


@pytest.mark.parametrize("first_fs", [250, 50])
def test_folder_resamples_records_at_another_rate_than_the_first(tmp_path: Path, first_fs: int,
                                                                 capsys: pytest.CaptureFixture) -> None:
    """A first record at 250 (or 50) Hz among 500 Hz records: every record is kept, at the most common 500 Hz."""
    root, out = tmp_path / "in", tmp_path / "out"
    src = {"a0": _wfdb(root, "a0", first_fs)}
    src |= {f"a{i}": _wfdb(root, f"a{i}", 500) for i in (1, 2, 3)}
    assert folder_main(["--input", str(root), *FOLDER, "--output", str(out)]) == 0
    assert _skipped(out) == {}
    assert "resampled to 500 Hz, the most common rate" in capsys.readouterr().err
    windows, rates = _windows(out)
    assert rates == {500.0} and sorted(windows) == ["a0", "a1", "a2", "a3"]
    for rid in windows:
        assert windows[rid].shape == (8, 1, 500)  # 8 s at 500 Hz, whatever the record's own rate
    for rid in ("a1", "a2", "a3"):
        np.testing.assert_array_equal(_flat(windows[rid]), src[rid])
    expected = sps.resample_poly(src["a0"], 500 // first_fs, 1, axis=-1)
    np.testing.assert_allclose(_flat(windows["a0"]), expected, atol=1e-5)


def test_folder_skips_unreadable_and_out_of_range_rates_alone(tmp_path: Path) -> None:
    """``5OO`` (wfdb reads it as 5 Hz), 0 and 200000 Hz: each of those records is skipped with its reason; the
    others are kept unchanged at their own 500 Hz (the bad ones do not count towards the run's rate)."""
    root, out = tmp_path / "in", tmp_path / "out"
    src = {f"a{i}": _wfdb(root, f"a{i}", 500) for i in (1, 2)}
    for name, field in (("b_5oo", "5OO"), ("b_zero", "0"), ("b_huge", "200000"), ("b_dash", "-500")):
        _wfdb(root, name, 500)
        _set_fs_field(root / f"{name}.hea", field)
    assert wfdb.rdrecord(str(root / "b_5oo")).fs == 5  # what a lenient reader would use
    assert folder_main(["--input", str(root), *FOLDER, "--output", str(out)]) == 0
    skipped = _skipped(out)
    assert sorted(skipped) == ["b_5oo", "b_dash", "b_huge", "b_zero"]
    assert "b_5oo.hea: record line has sampling frequency '5OO'; expected a positive number in Hz" in skipped["b_5oo"]
    assert "sampling frequency '0'" in skipped["b_zero"] and "sampling frequency '-500'" in skipped["b_dash"]
    assert skipped["b_huge"] == "sampling rate 200000 Hz: expected a finite rate within 1..100000 Hz"
    windows, rates = _windows(out)
    assert rates == {500.0} and sorted(windows) == ["a1", "a2"]
    for rid in windows:
        np.testing.assert_array_equal(_flat(windows[rid]), src[rid])


def test_folder_target_fs_and_most_common_rate(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--target_fs wins over the records' rates; a tie between rates picks the highest."""
    root = tmp_path / "in"
    src = {"r0": _wfdb(root, "r0", 250), "r1": _wfdb(root, "r1", 250), "r2": _wfdb(root, "r2", 500),
           "r3": _wfdb(root, "r3", 500)}
    assert folder_main(["--input", str(root), *FOLDER, "--output", str(tmp_path / "tie")]) == 0
    assert "250 Hz (2 records), 500 Hz (2 records): every record is resampled to 500 Hz" in capsys.readouterr().err
    windows, rates = _windows(tmp_path / "tie")
    assert rates == {500.0} and all(w.shape == (8, 1, 500) for w in windows.values())
    out = tmp_path / "target"
    assert folder_main(["--input", str(root), *FOLDER, "--target_fs", "250", "--output", str(out)]) == 0
    windows, rates = _windows(out)
    assert rates == {250.0} and all(w.shape == (4, 1, 500) for w in windows.values())
    np.testing.assert_array_equal(_flat(windows["r0"]), src["r0"])


# ---------------------------------------------------------------------------------------------------- readers


def test_wfdb_rate_field_is_parsed_whole(tmp_path: Path) -> None:
    _wfdb(tmp_path, "r", 500)
    hea = tmp_path / "r.hea"
    for field, fs in (("500", 500.0), ("360/1000(0)", 360.0), ("128.5", 128.5), ("5e2", 500.0)):
        _set_fs_field(hea, field)
        assert read_header_fs(hea) == fs and read_header_fs(tmp_path / "r") == fs
        assert parse_header(read_text(hea), str(hea)).fs == fs
    hea.write_text("r 1\n")
    assert read_header_fs(hea) == 250.0  # WFDB's default when the field is absent
    for field in ("5OO", "500Hz", "1e999", "nan"):
        _wfdb(tmp_path, "r", 500)
        _set_fs_field(hea, field)
        for read in (read_header_fs, read_wfdb, lambda p: parse_header(read_text(p), str(p))):
            with pytest.raises(ReadError, match=rf"r\.hea: record line has sampling frequency '{re.escape(field)}'"):
                read(hea)


@pytest.mark.parametrize("fs", [0.5, 0.0, float("nan"), float("inf"), 2e5])
def test_process_recording_rejects_rates_out_of_range(fs: float) -> None:
    rec = Recording(np.zeros((1, 4000), np.float32), fs, ["a"])
    with pytest.raises(SignalError, match=r"sampling rate .* Hz: expected a finite rate within 1\.\.100000 Hz"):
        process_recording(rec, SignalParams(window=500, step=500, target_fs=500.0))


# ---------------------------------------------------------------------------------------------------- data sets


def test_cpsc_resamples_250_and_50_hz_records_and_skips_5OO(tmp_path: Path) -> None:
    root, out = tmp_path / "cpsc_2018", tmp_path / "out"
    src = {"A0001": _challenge(root, "A0001", 250), "A0002": _challenge(root, "A0002", 500),
           "A0003": _challenge(root, "A0003", 500), "A0005": _challenge(root, "A0005", 50)}
    _challenge(root, "A0004", 500, fs_text="5OO")
    assert cpsc_main(["--input", str(root), "--output", str(out), "--window", "500", "--step", "500",
                      "--normalize", "none"]) == 0
    skipped = _skipped(out)
    assert list(skipped) == ["A0004"] and "A0004.hea: record line has sampling frequency '5OO'" in skipped["A0004"]
    windows, rates = _windows(out)
    assert rates == {500.0} and sorted(windows) == sorted(src)
    for w in windows.values():
        assert w.shape == (10, 12, 500)  # 10 s at 500 Hz
    for rid in ("A0002", "A0003"):
        np.testing.assert_array_equal(_flat(windows[rid]), src[rid])
    for rid, up in (("A0001", 2), ("A0005", 10)):
        np.testing.assert_allclose(_flat(windows[rid]), sps.resample_poly(src[rid], up, 1, axis=-1), atol=1e-5)


def test_mimic_keeps_records_after_a_250_hz_first_record(tmp_path: Path) -> None:
    root, out = tmp_path / "mimic", tmp_path / "out"
    order = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]
    for i, fs in enumerate((250, 500, 500)):
        rel = f"files/p1000/p1000000{i}/s5000000{i}"
        _wfdb(root / rel, f"5000000{i}", fs, seconds=4, names=order)
    assert mimic_main(["--input", str(root), "--output", str(out), "--window", "500", "--step", "500"]) == 0
    assert _skipped(out) == {}
    windows, rates = _windows(out)
    assert rates == {500.0} and len(windows) == 3 and all(w.shape == (4, 12, 500) for w in windows.values())


@pytest.mark.parametrize("cls,extra,fs", [(CPSC2018Source, [], 500.0), (ShaoxingSource, [], 500.0),
                                          (MIMICSource, [], 500.0), (PTBXLSource, [], 500.0),
                                          (PTBXLSource, ["--rate", "100"], 100.0), (EPN612Source, [], 200.0),
                                          (DB6Source, [], 2000.0)])
def test_every_data_set_has_an_output_rate(tmp_path: Path, cls: type, extra: list[str], fs: float) -> None:
    """Without --target_fs each data set's records are resampled to its documented rate, never the first one's."""
    (tmp_path / "trainingJSON").mkdir()
    assert cls(parse_args(cls, ["--input", str(tmp_path), *extra])).output_rate([]) == fs
    assert cls(parse_args(cls, ["--input", str(tmp_path), "--target_fs", "250", *extra])).output_rate([]) == 250.0
