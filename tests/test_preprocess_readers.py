"""Readers: real Challenge records and Myo CSVs (../shared) against wfdb/scipy/numpy, and files written in each
native layout (MATLAB v4/v5/v7.3, odd WFDB headers, EPN-612 JSON) including corrupted ones."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import wfdb

from physiowave.preprocess import readers
from physiowave.preprocess.readers import (ReadError, header_codes, parse_header, read_challenge, read_csv,
                                           read_epn_user, read_mat_array, read_ninapro, read_text, read_wfdb)


def _cinc(shared: Path) -> Path:
    folder = shared / "data" / "real" / "torch_ecg_cinc2021"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    return folder


def _myo(shared: Path) -> list[Path]:
    files = sorted((shared / "data" / "real" / "libemg_myo_testdata").glob("*.csv"))
    if not files:
        pytest.skip("no Myo CSVs in ../shared/data/real/libemg_myo_testdata")
    return files


def _copy_record(src: Path, dst: Path, name: str = "E07500") -> Path:
    """Copy one Challenge record into ``dst``; return its header path."""
    for ext in (".hea", ".mat"):
        shutil.copy(src / f"{name}{ext}", dst / f"{name}{ext}")
    return dst / f"{name}.hea"


def _write_record(folder: Path, name: str, digital: np.ndarray, signal_fields: list[str],
                  record_line: str | None = None, comments: tuple[str, ...] = ()) -> Path:
    """A Challenge-style record: v4 .mat ``val`` [C, T] int16 + header with the given gain/ADC fields per signal."""
    scipy.io.savemat(folder / f"{name}.mat", {"val": digital}, format="4")
    c, t = digital.shape
    lines = [record_line or f"{name} {c} 500 {t}"]
    lines += [f"{name}.mat 16x1+24 {fields}" for fields in signal_fields]
    lines += [f"# {c}" for c in comments]
    (folder / f"{name}.hea").write_text("\n".join(lines) + "\n")
    return folder / f"{name}.hea"


def _assert_one_line_naming(err: pytest.ExceptionInfo, path: Path) -> str:
    text = str(err.value)
    assert "\n" not in text and path.name in text
    return text


# ---------------------------------------------------------------------------------------------- Challenge records


def test_challenge_real_records_match_wfdb_and_scipy(shared: Path) -> None:
    folder = _cinc(shared)
    headers = sorted(folder.glob("*.hea"))
    assert len(headers) == 50
    for hea in headers:
        rec = read_challenge(hea)
        ref_wfdb = wfdb.rdrecord(str(hea.with_suffix("")), physical=True)
        ref_mat = scipy.io.loadmat(hea.with_suffix(".mat"))["val"] / 1000.0  # gain 1000 adu/mV, baseline 0
        assert rec.signal.dtype == np.float32 and rec.signal.shape == ref_mat.shape
        np.testing.assert_array_equal(rec.signal, ref_wfdb.p_signal.T.astype(np.float32))
        np.testing.assert_array_equal(rec.signal, ref_mat.astype(np.float32))
        assert rec.fs == ref_wfdb.fs and rec.channel_names == ref_wfdb.sig_name
        dx_line = next(line for line in hea.read_text().splitlines() if line.startswith("# Dx:"))
        assert header_codes(rec.comments) == dx_line.split(":", 1)[1].strip().split(",")


def test_read_wfdb_matches_rdrecord_and_names_the_file(shared: Path, tmp_path: Path) -> None:
    hea = sorted(_cinc(shared).glob("HR*.hea"))[0]
    rec = read_wfdb(hea)
    ref = wfdb.rdrecord(str(hea.with_suffix("")))
    np.testing.assert_array_equal(rec.signal, ref.p_signal.T.astype(np.float32))
    assert rec.comments == ref.comments
    with pytest.raises(ReadError, match="wfdb could not read") as err:
        read_wfdb(tmp_path / "nothing.hea")
    _assert_one_line_naming(err, tmp_path / "nothing.hea")


def test_challenge_fallback_when_wfdb_rejects_the_header(shared: Path, tmp_path: Path) -> None:
    clean = read_challenge(_cinc(shared) / "E07500.hea")
    hea = _copy_record(_cinc(shared), tmp_path)
    text = hea.read_text().splitlines()
    fields = text[0].split()
    text[0] = " ".join([*fields[:3], f"{fields[3]}.0"])  # sample count "5000.0"
    hea.write_text("\n".join(text) + "\n")
    with pytest.raises(Exception):  # noqa: B017  precondition: wfdb really rejects this header (with whatever error)
        wfdb.rdrecord(str(hea.with_suffix("")))
    rec = read_challenge(hea)
    np.testing.assert_array_equal(rec.signal, clean.signal)
    assert (rec.fs, rec.channel_names, rec.comments) == (clean.fs, clean.channel_names, clean.comments)

    hea.with_suffix(".mat").rename(hea.with_suffix(".MAT"))  # header names .mat, disk has .MAT
    np.testing.assert_array_equal(read_challenge(hea).signal, clean.signal)


@pytest.mark.parametrize("layout", ["transposed_v4", "v5"])
def test_challenge_layouts_wfdb_would_misread(shared: Path, tmp_path: Path, layout: str) -> None:
    clean = read_challenge(_cinc(shared) / "E07500.hea")
    hea = _copy_record(_cinc(shared), tmp_path)
    val = scipy.io.loadmat(hea.with_suffix(".mat"))["val"]
    if layout == "transposed_v4":
        scipy.io.savemat(hea.with_suffix(".mat"), {"val": np.ascontiguousarray(val.T)}, format="4")
    else:
        scipy.io.savemat(hea.with_suffix(".mat"), {"val": val}, format="5")
    wrong = wfdb.rdrecord(str(hea.with_suffix(""))).p_signal.T  # wfdb reads raw bytes at +24 and does not notice
    assert not np.allclose(wrong, clean.signal)
    np.testing.assert_array_equal(read_challenge(hea).signal, clean.signal)


@pytest.mark.parametrize("odd_header", [False, True])
def test_challenge_gain_and_baseline(tmp_path: Path, odd_header: bool) -> None:
    rng = np.random.default_rng(0)
    digital = rng.integers(-3000, 3000, size=(3, 400)).astype(np.int16)
    digital[1, 5] = -32768  # WFDB format-16 "no sample"
    fields = ["500(12)/mV 16 0 0 0 0 A", "250/uV 16 7 0 0 0 B", "0 16 -4 0 0 0 C"]  # baseline 12; adczero 7; gain 0
    record_line = "r 3 500 400.0" if odd_header else None  # wfdb rejects a fractional sample count
    hea = _write_record(tmp_path, "r", digital, fields, record_line, comments=("Dx: 1,2",))
    rec = read_challenge(hea)
    gain = np.array([500.0, 250.0, 200.0])[:, None]
    baseline = np.array([12.0, 7.0, -4.0])[:, None]
    expected = ((digital - baseline) / gain).astype(np.float32)
    expected[1, 5] = np.nan
    np.testing.assert_array_equal(rec.signal, expected)
    assert rec.channel_names == ["A", "B", "C"] and rec.comments == ["Dx: 1,2"] and rec.fs == 500.0


def test_parse_header_defaults_agree_with_wfdb(tmp_path: Path) -> None:
    text = ("h 4 360 200\nh.dat 16x1+24 0(5)/uV 12 3 0 0 0 A\nh.dat 16\n"
            "h.dat 16 500\nh.dat 16 250 12 7 1 2 3 lead four\n#  Dx  1 \n")
    (tmp_path / "h.hea").write_text(text)
    ref = wfdb.rdheader(str(tmp_path / "h"))
    header = parse_header(text)
    assert [s.gain for s in header.signals] == ref.adc_gain
    assert [s.baseline for s in header.signals] == ref.baseline
    assert [s.units for s in header.signals] == ref.units
    assert [s.name or None for s in header.signals] == ref.sig_name
    assert (header.fs, header.n_samples, header.n_signals) == (ref.fs, ref.sig_len, ref.n_sig)
    assert header.signals[0].byte_offset == 24 and header.comments == ["Dx  1"]
    with pytest.raises(ReadError, match="multi-segment"):
        parse_header("m/2 1 250 10\n")
    with pytest.raises(ReadError, match="x.hea: header declares 2 signals but has 1 signal lines"):
        parse_header("x 2 500 10\nx.mat 16 200 I\n", source="x.hea")


# ---------------------------------------------------------------------------------------------- WFDB fast path

_RDRECORD = wfdb.rdrecord  # the real one: references below never go through the spy


@pytest.fixture
def rdrecord_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record paths that read_wfdb handed to wfdb.rdrecord (empty: the fast path read everything)."""
    calls: list[str] = []

    def spy(record_name: str, *args, **kwargs):
        calls.append(record_name)
        return _RDRECORD(record_name, *args, **kwargs)

    monkeypatch.setattr(readers.wfdb, "rdrecord", spy)
    monkeypatch.setattr(readers, "WFDB_FAST", True)
    return calls


def _assert_same_as_rdrecord(rec: readers.Recording, record: Path) -> None:
    ref = _RDRECORD(str(record))
    expected = ref.p_signal.T
    assert rec.signal.shape == expected.shape and rec.signal.dtype == np.float32
    np.testing.assert_allclose(rec.signal, expected, rtol=1e-6, atol=0)  # NaNs must be in the same places
    np.testing.assert_array_equal(rec.signal, expected.astype(np.float32))  # and in fact bit-equal
    assert rec.fs == float(ref.fs)
    assert rec.channel_names == [n if n else f"ch{i}" for i, n in enumerate(ref.sig_name)]
    assert rec.comments == [c.strip() for c in ref.comments]


def _wrsamp(folder: Path, name: str, digital: np.ndarray, fmt: str, **kw) -> Path:
    """A WFDB record ``[T, C]`` written by wfdb itself; returns the record path (no extension)."""
    c = digital.shape[1]
    args = dict(fs=500, units=["mV"] * c, sig_name=[f"s{i}" for i in range(c)], d_signal=digital, fmt=[fmt] * c,
                adc_gain=[1000.0 / (i + 1) for i in range(c)], baseline=[3 * i - 4 for i in range(c)],
                write_dir=str(folder))
    wfdb.wrsamp(name, **{**args, **kw})
    return folder / name


def test_wfdb_fast_path_equals_rdrecord_on_real_records(shared: Path, tmp_path: Path,
                                                        rdrecord_calls: list[str]) -> None:
    """All 50 real records twice: as stored (Challenge .mat, format 16+24, raw-read by wfdb too) and rewritten by
    wfdb.wrsamp as PTB-XL/MIMIC-style .dat records (format 16, one file, the real digital values and gains)."""
    headers = sorted(_cinc(shared).glob("*.hea"))
    assert len(headers) == 50
    for hea in headers:
        record = hea.with_suffix("")
        _assert_same_as_rdrecord(read_wfdb(hea), record)
        ref = _RDRECORD(str(record), physical=False)
        dat_record = _wrsamp(tmp_path, record.name, ref.d_signal.astype(np.int16), "16", sig_name=ref.sig_name,
                             adc_gain=ref.adc_gain, baseline=ref.baseline, units=ref.units, comments=ref.comments)
        rec = read_wfdb(dat_record)
        _assert_same_as_rdrecord(rec, dat_record)
        assert rec.channel_names == ref.sig_name and rec.signal.shape == (12, 5000)
    assert rdrecord_calls == []  # every read above took the fast path


@pytest.mark.parametrize("fmt", ["16", "212", "80", "24", "32", "61"])
def test_wfdb_formats_fast_or_fallback(tmp_path: Path, rdrecord_calls: list[str], fmt: str) -> None:
    t = np.arange(600)
    digital = np.stack([np.round(90 * np.sin(t / (15 + 4 * k) + k)) for k in range(4)], axis=1).astype(np.int16)
    if fmt == "16":
        digital *= 300  # the full 16-bit range, with a gain (1000/7) that float32 arithmetic would round differently
        digital[[0, 7, 7, 599], [0, 1, 3, 2]] = -32768  # format 16's invalid sample → NaN
        digital[10, 1] = 32767
    if fmt == "61":  # big-endian 16-bit: wfdb reads it but cannot write it
        record = _wrsamp(tmp_path, "r", digital, "16")
        hea = record.with_suffix(".hea")
        hea.write_text(hea.read_text().replace(".dat 16 ", ".dat 61 "))
        digital.astype(">i2").tofile(record.with_suffix(".dat"))
    else:
        record = _wrsamp(tmp_path, "r", digital, fmt, adc_gain=[1000.0, 500.0, 1000 / 7, 0.1])
    rec = read_wfdb(record.with_suffix(".hea"))
    _assert_same_as_rdrecord(rec, record)
    assert rdrecord_calls == ([] if fmt == "16" else [str(record)])
    if fmt == "16":
        assert np.isnan(rec.signal).sum() == 4 and np.isnan(rec.signal[[0, 1, 3, 2], [0, 7, 7, 599]]).all()
        assert rec.signal[1, 10] == np.float32((32767 - (-1)) / 500.0)  # baseline 3*1-4


def _hand_record(folder: Path, header: str, digital: np.ndarray, dat: str = "r.dat", offset: int = 0) -> Path:
    (folder / "r.hea").write_text(header)
    (folder / dat).write_bytes(b"\x07" * offset + digital.astype("<i2").tobytes())
    return folder / "r"


_D3 = np.random.default_rng(1).integers(-3000, 3000, size=(40, 3)).astype(np.int16)


@pytest.mark.parametrize("header, fast", [
    ("r 3 500 40\nr.dat 16 1000.0(0)/mV 16 0 1 2 0 I\nr.dat 16 1000.0(0)/mV 16 0 1 2 0 II\n"
     "r.dat 16 1000.0(0)/mV 16 0 1 2 0 V1\n", True),  # PTB-XL
    ("r 3 500 40 08:44:00 30/06/2180\nr.dat 16 200(0)/mV 16 0 0 0 0 I\nr.dat 16 200(0)/mV 16 0 0 0 0 aVF\n"
     "r.dat 16 200(0)/mV 16 0 0 0 0 aVL\n# sex: F\n", True),  # MIMIC-IV-ECG style, base time and date
    ("r 3 360/1000(5) 40\nr.dat 16 0(5)/uV 12 3\nr.dat 16x1\nr.dat 16 250 12 7 1 2 3 lead  four\n##  Dx: 1 \n",
     True),  # gain 0 → 200, baseline → ADC zero → 0, no name → ch1, names keep inner spaces, counter frequency
    ("r 3 500.000000001 40\nr.dat 16 -2.5e2(-7)/mV\nr.dat 16 1e3 16 0 5 0 0 12\nr.dat 16 100 16 4 I\n", True),
    ("r 3 500 40\nr.dat 16+8 100\nr.dat 16+8 100\nr.dat 16+8 100\n", True),  # byte offset
    ("r 3 500\nr.dat 16 100\nr.dat 16 100\nr.dat 16 100\n", False),  # no length: wfdb infers it
    ("r 3\nr.dat 16 100\nr.dat 16 100\nr.dat 16 100\n", False),  # no fs either: 250 Hz
    ("r 3 500 40\nr.dat 16 100\nr.dat 16 100 16 0 5V\nr.dat 16 100\n", False),  # "5V": init value 5, name "V"
    ("r 3 500 40\nr.dat 16 100\nr.dat 16:1 100\nr.dat 16 100\n", False),  # skew
    ("r 3 500 40\nr.dat 16 100mV\nr.dat 16 100\nr.dat 16 100\n", False),  # units without '/'
    ("r 3 500 40 8:44\nr.dat 16 100\nr.dat 16 100\nr.dat 16 100\n", False),  # MM:SS base time
    ("r 3 500 40\nr.dat 16 100 16 0 0 0 0 a\tb\nr.dat 16 100\nr.dat 16 100\n", False),  # tab ends wfdb's name
])
def test_wfdb_header_variants_match_rdrecord(tmp_path: Path, rdrecord_calls: list[str], header: str,
                                             fast: bool) -> None:
    offset = 8 if "+8" in header else 0
    record = _hand_record(tmp_path, header, _D3, offset=offset)
    assert isinstance(readers._fast_wfdb_plan(record.with_suffix(".hea")), readers._FastPlan) == fast
    _assert_same_as_rdrecord(read_wfdb(record), record)
    assert rdrecord_calls == ([] if fast else [str(record)])


def test_wfdb_random_headers_fast_only_where_rdrecord_agrees(tmp_path: Path) -> None:
    """Random mixes of valid and odd header fields: wherever the fast path accepts a header, wfdb.rdrecord reads
    the record and gets the same signal, fs, names and comments."""
    rng = np.random.default_rng(7)
    records = ["r {n} 500 {t}", "r {n} 500.0 {t}", "r {n} 250/1000(5) {t}", "r {n}\t500\t{t}", "r {n} 500 {t} 8:4:0",
               "r {n} 500 {t} 25:00:00", "r {n} 500 {t} 08:44:00 31/02/2000", "r {n} 500 {t} 08:44:00.5 1/2/2000",
               "r {n} 500", "r/2 {n} 500 {t}", "r {n} 0 {t}", "r {n} 500 {t}.0", "r.x {n} 500 {t}", "r {n} 500 {t} x"]
    fmts = ["16", "16x1", "16+0", "16x2", "16:1", "212", "61", "160"]
    gains = ["200", "1000.0(0)/mV", "0", "0(3)", "-50", "1e3", "1E3", "200/uV", "200mV", "2.5(-7)/mV", ".5",
             "200(5", "200-5", "100(2)/mV/s"]
    ints = ["16", "16 7", "16 7 -119", "16 7 -119 1508", "16 7 -119 1508 0", "16 -", "16 x"]
    names = ["I", "aVR", "V1 lead", "x  y", "12", "-5", "5V", "a\tb", "I # c"]

    def pick(options: list[str], p_plain: float) -> str:
        return options[0] if rng.random() < p_plain else options[rng.integers(len(options))]

    n_fast = 0
    for _ in range(300):
        n = int(rng.integers(1, 4))
        lines = [pick(records, 0.4).format(n=n, t=40)]
        for _ in range(n):
            fields = ["r.dat", pick(fmts, 0.8), pick(gains, 0.4), pick(ints, 0.4), pick(names, 0.4)]
            lines.append(" ".join(fields[:int(rng.integers(2, 6))]))
        lines += ["# Age: 50", "##  Dx: 1,2 "] if rng.random() < 0.3 else []
        record = _hand_record(tmp_path, "\n".join(lines) + "\n", _D3[:, :n])
        plan = readers._fast_wfdb_plan(record.with_suffix(".hea"))
        if isinstance(plan, readers._FastPlan):
            n_fast += 1
            _assert_same_as_rdrecord(readers._read_fast(record.with_suffix(".hea"), plan), record)
    assert n_fast > 60  # the mix exercises the fast path, not only the fallback


def test_wfdb_fallback_cases_assert_the_path(tmp_path: Path, rdrecord_calls: list[str]) -> None:
    t = np.arange(300)
    digital = np.stack([np.round(500 * np.sin(t / 9 + k)) for k in range(2)], axis=1).astype(np.int16)
    two_files = _wrsamp(tmp_path, "two", digital, "16")  # the same signals split over two .dat files
    hea = two_files.with_suffix(".hea")
    lines = hea.read_text().splitlines()
    lines[2] = lines[2].replace("two.dat", "two_b.dat")
    hea.write_text("\n".join(lines) + "\n")
    digital[:, :1].tofile(tmp_path / "two.dat")
    digital[:, 1:].tofile(tmp_path / "two_b.dat")
    fine = np.repeat(digital[:, 0], 2) + np.tile([0, 7], len(digital)).astype(np.int16)
    wfdb.wrsamp("frames", fs=500, units=["mV"] * 2, sig_name=["a", "b"], e_d_signal=[fine, digital[:, 1]],
                samps_per_frame=[2, 1], fmt=["16"] * 2, adc_gain=[100.0, 50.0], baseline=[0, 1],
                write_dir=str(tmp_path))  # signal 0 has 2 samples per frame
    frames = tmp_path / "frames"
    (tmp_path / "multi.hea").write_text("multi/2 2 500 600\ntwo 300\ntwo 300\n")  # multi-segment
    for record in (two_files, frames, tmp_path / "multi"):
        assert isinstance(readers._fast_wfdb_plan(Path(f"{record}.hea")), str)
        rec = read_wfdb(record)
        ref = _RDRECORD(str(record))
        np.testing.assert_array_equal(rec.signal, ref.p_signal.T.astype(np.float32))
    assert rdrecord_calls == [str(two_files), str(frames), str(tmp_path / "multi")]


def test_wfdb_fast_path_can_be_switched_off(tmp_path: Path, rdrecord_calls: list[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    record = _wrsamp(tmp_path, "r", _D3, "16")
    fast = read_wfdb(record)
    monkeypatch.setattr(readers, "WFDB_FAST", False)
    slow = read_wfdb(record)
    assert rdrecord_calls == [str(record)]
    np.testing.assert_array_equal(fast.signal, slow.signal)
    code = "import physiowave.preprocess.readers as r; print(r.WFDB_FAST)"
    for value, expected in (("0", "False"), ("1", "True")):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parents[1], env={**os.environ, "PHYSIOWAVE_WFDB_FAST": value})
        assert out.stdout.strip() == expected


def test_wfdb_bad_records_are_one_line_read_errors(tmp_path: Path, rdrecord_calls: list[str]) -> None:
    record = _wrsamp(tmp_path, "r", _D3, "16")
    hea, dat = record.with_suffix(".hea"), record.with_suffix(".dat")
    full = dat.read_bytes()
    dat.write_bytes(full[:-3])
    with pytest.raises(ReadError, match=r"truncated \.dat: expected 240 bytes of format-16 data \(3 signals x 40 "
                                        r"samples\) from byte 0, found 237") as err:
        read_wfdb(hea)
    _assert_one_line_naming(err, dat)
    dat.write_bytes(b"")
    with pytest.raises(ReadError, match="truncated .dat") as err:
        read_wfdb(record)
    _assert_one_line_naming(err, dat)
    dat.write_bytes(full + b"\x01\x02\x03")  # trailing bytes beyond the header's length are ignored, as by wfdb
    _assert_same_as_rdrecord(read_wfdb(record), record)
    dat.unlink()
    with pytest.raises(ReadError, match="signal file r.dat not found") as err:
        read_wfdb(record)
    _assert_one_line_naming(err, hea)
    assert rdrecord_calls == []
    dat.write_bytes(full)
    hea.write_text("r x 500 40\nr.dat 16 200 16 0 0 0 0 I\n")  # bad header: wfdb's error, as before
    with pytest.raises(ReadError, match="wfdb could not read the record") as err:
        read_wfdb(hea)
    _assert_one_line_naming(err, hea)
    assert rdrecord_calls == [str(record)]


# ---------------------------------------------------------------------------------------------- corrupted inputs


def test_corrupted_challenge_records(shared: Path, tmp_path: Path) -> None:
    src = _cinc(shared)
    hea = _copy_record(src, tmp_path)
    mat = hea.with_suffix(".mat")
    mat.write_bytes(mat.read_bytes()[:4024])
    with pytest.raises(ReadError) as err:
        read_challenge(hea)
    text = _assert_one_line_naming(err, mat)
    assert "truncated .mat: expected 120000 bytes of int16 data" in text and "found 4000" in text

    mat.unlink()
    with pytest.raises(ReadError, match="not found") as err:
        read_challenge(hea)
    _assert_one_line_naming(err, hea)

    scipy.io.savemat(mat, {"val": scipy.io.loadmat(src / "E07500.mat")["val"][:11]}, format="4")
    with pytest.raises(ReadError, match="header declares 12 signals but .mat has 11 rows") as err:
        read_challenge(hea)
    _assert_one_line_naming(err, mat)

    hea.write_text("")
    with pytest.raises(ReadError, match="empty header") as err:
        read_challenge(hea)
    _assert_one_line_naming(err, hea)


# ---------------------------------------------------------------------------------------------- text and codes


@pytest.mark.parametrize("line, codes", [
    ("Dx: 164889003,59118001", ["164889003", "59118001"]),
    ("Dx:426783006", ["426783006"]),
    ("Dx 164889003; 59118001", ["164889003", "59118001"]),
    ("dx: AF, SNR ;", ["AF", "SNR"]),
    ("Dx:", []),
    ("Dxx: 1", []),
])
def test_header_codes_variants(line: str, codes: list[str]) -> None:
    assert header_codes(["Age: 50", line, "Dx: 999"] if codes else ["Age: 50", line]) == codes


@pytest.mark.parametrize("encoding, note", [("gbk", "心电图 窦性心律"), ("cp1252", "café"),
                                            ("utf-8-sig", "naïve")])
def test_read_text_encodings_then_codes(tmp_path: Path, encoding: str, note: str) -> None:
    text = f"r 1 500 10\nr.mat 16 1000 0 0 0 0 0 I\n# Hx: {note}\n#Dx:164889003; 59118001\n"
    path = tmp_path / "r.hea"
    path.write_bytes(text.encode(encoding))
    with pytest.raises(UnicodeDecodeError) if encoding != "utf-8-sig" else contextlib.nullcontext():
        path.read_bytes().decode("utf-8")  # precondition: the bytes are not plain utf-8 (the BOM one is)
    assert read_text(path) == text
    assert header_codes(parse_header(read_text(path)).comments) == ["164889003", "59118001"]


# ---------------------------------------------------------------------------------------------- CSV


def test_read_csv_real_myo(shared: Path, tmp_path: Path) -> None:
    files = _myo(shared)
    for path in files[:4]:
        ref = np.loadtxt(path, delimiter=",")
        rec = read_csv(path, fs=200)
        np.testing.assert_array_equal(rec.signal, ref.T.astype(np.float32))
        assert rec.channel_names == [f"ch{i}" for i in range(ref.shape[1])] and rec.fs == 200.0
    ref = np.loadtxt(files[0], delimiter=",")
    names = [f"emg{i + 1}" for i in range(ref.shape[1])]
    tsv = tmp_path / "with_header.tsv"
    tsv.write_text("\t".join(names) + "\n" + files[0].read_text().replace(",", "\t"))
    rec = read_csv(tsv, fs=200)
    assert rec.channel_names == names
    np.testing.assert_array_equal(rec.signal, ref.T.astype(np.float32))
    picked = read_csv(tsv, fs=200, columns=["emg3", "0", "-1"])
    assert picked.channel_names == ["emg3", "emg1", names[-1]]
    np.testing.assert_array_equal(picked.signal, ref[:, [2, 0, ref.shape[1] - 1]].T.astype(np.float32))
    with pytest.raises(ReadError, match="column 'emg99' not found"):
        read_csv(tsv, fs=200, columns=["emg99"])


def test_read_csv_bad_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("\n")
    with pytest.raises(ReadError, match="empty CSV") as err:
        read_csv(empty, fs=200)
    _assert_one_line_naming(err, empty)
    header_only = tmp_path / "header_only.csv"
    header_only.write_text("a,b\n")
    with pytest.raises(ReadError, match="no data rows"):
        read_csv(header_only, fs=200)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n1,2,3\n\n4,5,6\n7,x,9\n")
    with pytest.raises(ReadError, match="line 5, column 1: 'x' is not a number") as err:
        read_csv(bad, fs=200)
    _assert_one_line_naming(err, bad)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("1,2,3\n4,5\n")
    with pytest.raises(ReadError, match="line 2 has 2 fields; expected 3"):
        read_csv(ragged, fs=200)
    with pytest.raises(ValueError, match="fs must be a positive"):
        read_csv(bad, fs=0)


# ---------------------------------------------------------------------------------------------- EPN-612 JSON


def test_read_epn_user(shared: Path, tmp_path: Path) -> None:
    files = _myo(shared)
    emgs = [np.loadtxt(f, delimiter=",").T for f in files[:3]]  # [8, T] each
    sample = lambda e, **kw: {"emg": {f"ch{i + 1}": e[i].tolist() for i in range(8)}, **kw}  # noqa: E731
    shuffled = {f"ch{i}": emgs[1][i - 1].tolist() for i in range(8, 0, -1)}  # keys ch8..ch1
    ragged = sample(emgs[2])
    ragged["emg"]["ch4"] = ragged["emg"]["ch4"][:-1]
    user = {
        "userInfo": {"name": "user1"},
        "trainingSamples": {"idx_1": sample(emgs[0], gestureName="fist"), "idx_2": ragged,
                            "idx_3": {"gestureName": "open"}},
        "testingSamples": {"idx_1": {"emg": shuffled}},  # testingJSON users have no gestureName
    }
    path = tmp_path / "user1.json"
    path.write_text(json.dumps(user))
    out = read_epn_user(path)
    first, bad, no_emg = out["training"]
    assert (first["id"], first["gesture"]) == ("idx_1", "fist") and first["emg"].dtype == np.float32
    np.testing.assert_array_equal(first["emg"], emgs[0].astype(np.float32))
    assert "emg" not in bad and "ragged" in bad["error"] and bad["gesture"] is None
    assert "emg" not in no_emg and "no 'emg'" in no_emg["error"] and no_emg["gesture"] == "open"
    (test,) = out["testing"]
    assert test["gesture"] is None
    np.testing.assert_array_equal(test["emg"], emgs[1].astype(np.float32))  # ch8..ch1 in the file → ch1..ch8

    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(user)[:-10])
    with pytest.raises(ReadError, match="not valid JSON") as err:
        read_epn_user(broken)
    _assert_one_line_naming(err, broken)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"testingSamples": {}}))
    with pytest.raises(ReadError, match="trainingSamples"):
        read_epn_user(other)


# ---------------------------------------------------------------------------------------------- MATLAB / NinaPro


def _write_v73(path: Path, variables: dict[str, np.ndarray]) -> None:
    """A MATLAB v7.3-style file: HDF5 with the 512-byte MAT header, each array stored transposed as MATLAB does."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in variables.items():
            arr = np.atleast_2d(value)
            f.create_dataset(name, data=arr.T).attrs["MATLAB_class"] = np.bytes_(
                {"f": "double", "i": "int16", "u": "uint8"}[arr.dtype.kind])
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, written by a test".ljust(116) + b"\0" * 8 + b"\x00\x02IM")


@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_ninapro_and_mat_array_v5_and_v73(tmp_path: Path, version: str) -> None:
    rng = np.random.default_rng(1)
    emg = rng.standard_normal((300, 16))  # [T, C] as NinaPro stores it
    variables = {"emg": emg, "subject": np.array([[3.0]]), "daytesting": np.array([[1.0]]),
                 "time": np.array([[2.5]]), "restimulus": rng.integers(0, 5, (300, 1)).astype(np.uint8)}
    path = tmp_path / f"S3_D1_T1_{version}.mat"
    if version == "v5":
        scipy.io.savemat(path, variables)
    else:
        _write_v73(path, variables)
    signal, meta = read_ninapro(path)
    assert signal.dtype == np.float32 and signal.shape == (16, 300)
    np.testing.assert_array_equal(signal, emg.T.astype(np.float32))
    assert meta == {"subject": 3, "daytesting": 1, "time": 2.5} and isinstance(meta["subject"], int)
    np.testing.assert_array_equal(read_mat_array(path), emg)  # key "emg"
    np.testing.assert_array_equal(read_mat_array(path, keys=("nope",)), emg)  # largest 2-D numeric array
    with pytest.raises(ReadError, match="no 'acc' variable") as err:
        read_ninapro(path, key="acc")
    _assert_one_line_naming(err, path)


def test_read_mat_array_errors(tmp_path: Path) -> None:
    tie = tmp_path / "tie.mat"
    scipy.io.savemat(tie, {"a": np.zeros((2, 3)), "b": np.ones((3, 2))})
    with pytest.raises(ReadError, match="largest arrays tie"):
        read_mat_array(tie)
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"definitely not a MATLAB file " * 10)
    with pytest.raises(ReadError, match="not a readable MATLAB file") as err:
        read_mat_array(junk)
    _assert_one_line_naming(err, junk)
    v5 = tmp_path / "cut.mat"
    scipy.io.savemat(v5, {"val": np.arange(6000, dtype=np.int16).reshape(2, 3000)})
    v5.write_bytes(v5.read_bytes()[:3000])
    with pytest.raises(ReadError, match="unreadable .mat"):
        read_mat_array(v5)
