"""physiowave.data.scan: streaming non-finite scan (index, count, kind, several blocks, chunked/compressed and
contiguous layouts, missing-modality samples, integer data, errors)."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from physiowave.data import NonFinite, find_nonfinite
from physiowave.data.scan import _rows_per_block

N, C, T = 100, 3, 40
ROW = C * T * 4  # bytes of one float32 sample

LAYOUTS = {
    "contiguous": {},
    "chunked_gzip": {"chunks": (8, C, T), "compression": "gzip", "compression_opts": 4, "shuffle": True},
    "chunked_split": {"chunks": (6, 2, 16)},  # chunks that also split channels and time
}


def _signals(n: int = N, dtype: str = "float32", seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, C, T)).astype(dtype)


def _write(path: Path, data: np.ndarray, key: str = "data", **kwargs) -> str:
    with h5py.File(path, "w") as f:
        f.create_dataset(key, data=data, **kwargs)
        f["label"] = np.zeros(len(data), np.int64)
    return str(path)


@pytest.fixture
def reads(monkeypatch) -> list[int]:
    """Bytes of every block read through h5py (the scan reads with Dataset.read_direct)."""
    sizes: list[int] = []
    original = h5py.Dataset.read_direct

    def spy(self, dest, source_sel=None, dest_sel=None):
        sizes.append(dest[dest_sel].nbytes if dest_sel is not None else dest.nbytes)
        return original(self, dest, source_sel, dest_sel)

    monkeypatch.setattr(h5py.Dataset, "read_direct", spy)
    return sizes


# ---------------------------------------------------------------------------------------------- finite data
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_finite_file_gives_none(tmp_path, layout, dtype, reads):
    path = _write(tmp_path / "ok.h5", _signals(dtype=dtype), **LAYOUTS[layout])
    assert find_nonfinite(path, "data", block_bytes=5 * ROW) is None
    assert len(reads) > 1 and sum(reads) == N * C * T * np.dtype(dtype).itemsize  # every value read, in blocks


def test_large_finite_values_whose_sum_overflows_are_finite(tmp_path):
    big = np.full((6, C, T), 3e38, np.float32)  # each sample's sum overflows float32 to inf
    big[3] = -3e38
    assert find_nonfinite(_write(tmp_path / "big.h5", big), "data") is None
    half = np.full((4, C, T), 60000, np.float16)  # likewise in float16
    assert find_nonfinite(_write(tmp_path / "half.h5", half), "data") is None


@pytest.mark.parametrize("dtype", ["int16", "uint8", "int64", "bool"])
def test_integer_data_is_finite_without_reading(tmp_path, dtype, reads):
    data = (np.arange(N * C * T) % 7).reshape(N, C, T).astype(dtype)
    assert find_nonfinite(_write(tmp_path / "int.h5", data), "data") is None
    assert reads == []


# ---------------------------------------------------------------------------------------------- non-finite values
@pytest.mark.parametrize("layout", LAYOUTS)
def test_nan_found_with_first_index_and_count_across_blocks(tmp_path, layout, reads):
    data = _signals()
    data[37, 1, 5] = np.nan  # not in the first block (5 samples per contiguous block, 8 per gzip chunk)
    data[38, :, :] = np.nan
    data[91, 2, 39] = np.nan
    path = _write(tmp_path / "nan.h5", data, **LAYOUTS[layout])
    found = find_nonfinite(path, "data", block_bytes=5 * ROW)
    assert found == NonFinite(path, "data", samples=3, first=37, first_kind="NaN")
    assert found.describe() == "sample 37 has NaN (3 samples with non-finite values)"
    assert str(found) == f"{path}: 'data' sample 37 has NaN (3 samples with non-finite values)"
    assert len(reads) >= 10 and max(reads) <= 8 * ROW  # several blocks, none much above block_bytes


def test_a_single_nan_in_the_last_sample(tmp_path):
    data = _signals()
    data[N - 1, C - 1, T - 1] = np.nan
    found = find_nonfinite(_write(tmp_path / "last.h5", data), "data", block_bytes=7 * ROW)
    assert (found.first, found.samples, found.first_kind) == (N - 1, 1, "NaN")
    assert found.describe() == "sample 99 has NaN (1 sample with non-finite values)"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_inf_is_reported_as_inf(tmp_path, layout):
    data = _signals()
    data[12, 0, 3] = np.inf
    data[60, 2, 0] = -np.inf
    data[61, 1, 1] = np.nan
    path = _write(tmp_path / "inf.h5", data, **LAYOUTS[layout])
    found = find_nonfinite(path, "data", block_bytes=4 * ROW)
    assert (found.first, found.samples, found.first_kind) == (12, 3, "inf")
    assert "sample 12 has inf (3 samples" in found.describe()
    data[12, 1, 1] = np.nan
    found = find_nonfinite(_write(tmp_path / "both.h5", data, **LAYOUTS[layout]), "data", block_bytes=4 * ROW)
    assert (found.first, found.first_kind) == (12, "NaN and inf")


# ---------------------------------------------------------------------------------------------- missing samples
@pytest.mark.parametrize("layout", LAYOUTS)
def test_allow_missing_samples_ignores_all_nan_samples_only(tmp_path, layout):
    data = _signals()
    data[[4, 20, 21, 70]] = np.nan  # absent modality: whole samples NaN
    path = _write(tmp_path / "fusion.h5", data, **LAYOUTS[layout])
    assert find_nonfinite(path, "data", allow_missing_samples=True, block_bytes=5 * ROW) is None
    strict = find_nonfinite(path, "data", block_bytes=5 * ROW)
    assert (strict.first, strict.samples) == (4, 4)
    data[55, 0, :7] = np.nan   # a partly NaN sample counts
    data[80] = np.inf           # so does an all-inf one
    data[81] = np.nan
    data[81, 2, 10] = -np.inf   # and an all-NaN sample but for one inf
    path = _write(tmp_path / "fusion2.h5", data, **LAYOUTS[layout])
    found = find_nonfinite(path, "data", allow_missing_samples=True, block_bytes=5 * ROW)
    assert (found.first, found.samples, found.first_kind) == (55, 3, "NaN")
    assert found.describe() == "sample 55 has NaN (3 samples with non-finite values, all-NaN samples not counted)"


def test_channel_groups_let_each_modality_be_missing_on_its_own(tmp_path):
    data = np.random.default_rng(1).normal(size=(10, 5, 16)).astype(np.float32)
    data[2, 0:3] = np.nan   # modality a (channels 0-2) absent
    data[6, 3:5] = np.nan   # modality b (channels 3-4) absent
    path = _write(tmp_path / "split.h5", data)
    groups = [[0, 1, 2], [3, 4]]
    assert find_nonfinite(path, "data", allow_missing_samples=True, channel_groups=groups) is None
    found = find_nonfinite(path, "data", allow_missing_samples=True)  # whole samples only: both are partly NaN
    assert (found.first, found.samples) == (2, 2)
    data[8, 0:2] = np.nan   # two of modality a's three channels: not a missing modality
    found = find_nonfinite(_write(tmp_path / "split2.h5", data), "data", allow_missing_samples=True,
                           channel_groups=groups)
    assert (found.first, found.samples, found.first_kind) == (8, 1, "NaN")
    found = find_nonfinite(path, "data", allow_missing_samples=True, channel_groups=[[0, 1, 2]])  # 3-4 must be finite
    assert (found.first, found.samples) == (6, 1)


def test_scan_of_a_fusion_data_set_by_its_sources(tmp_path):
    from physiowave.data import MultiModalDataset, parse_modality
    data, ppg = np.random.default_rng(2).normal(size=(2, 6, 5, 16)).astype(np.float32)
    data[1, 0:2] = np.nan  # modality a absent in sample 1
    ppg[3] = np.nan        # ppg absent in sample 3
    path = str(tmp_path / "f.h5")
    with h5py.File(path, "w") as f:
        f["data"], f["data_ppg"], f["label"] = data, ppg, np.arange(6)
    ds = MultiModalDataset(path, [parse_modality("a:0-1"), parse_modality("b:2-4"), parse_modality("ppg:data_ppg")])
    for p, key in ds.sources:
        assert find_nonfinite(p, key, allow_missing_samples=True, channel_groups=ds.channel_groups(p, key)) is None
    assert find_nonfinite(path, "data", allow_missing_samples=True).first == 1  # as whole samples: partly NaN


# ---------------------------------------------------------------------------------------------- blocks, progress
def test_blocks_are_whole_chunk_rows(tmp_path):
    with h5py.File(tmp_path / "c.h5", "w") as f:
        chunked = f.create_dataset("a", (N, C, T), "f4", chunks=(8, C, T))
        assert _rows_per_block(chunked, 20 * ROW) == 16  # two chunk rows of 8
        assert _rows_per_block(chunked, 3 * ROW) == 3    # a chunk row above the block: partial reads
        contiguous = f.create_dataset("b", (N, C, T), "f4")
        assert _rows_per_block(contiguous, 20 * ROW + 1) == 20
        assert _rows_per_block(contiguous, 1) == 1


def test_progress_bar_in_bytes(tmp_path, capsys):
    data = _signals()
    data[50, 0, 0] = np.nan
    found = find_nonfinite(_write(tmp_path / "p.h5", data), "data", progress=True, block_bytes=10 * ROW)
    assert found.first == 50
    err = capsys.readouterr().err
    assert "p.h5:data" in err and "B" in err


def test_one_dimensional_and_other_keys(tmp_path):
    values = np.arange(20, dtype=np.float64)
    values[[3, 9]] = [np.nan, np.inf]
    path = tmp_path / "one.h5"
    with h5py.File(path, "w") as f:
        f["v"] = values
        f.create_dataset("grp/data", data=_signals(12, seed=3))
    found = find_nonfinite(str(path), "v", block_bytes=16)
    assert (found.first, found.samples, found.first_kind) == (3, 2, "NaN")
    assert find_nonfinite(str(path), "v", allow_missing_samples=True).first == 9  # a NaN scalar is an all-NaN sample
    assert find_nonfinite(path, "grp/data") is None  # nested keys, PathLike paths


# ---------------------------------------------------------------------------------------------- errors
def test_missing_key_names_the_file_and_its_keys(tmp_path):
    path = _write(tmp_path / "k.h5", _signals(4), key="data_ecg")
    with pytest.raises(ValueError) as err:
        find_nonfinite(path, "data_eemg")
    assert str(err.value) == f"{path}: no dataset 'data_eemg' (the file has: data_ecg, label)"


def test_other_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.h5: HDF5 file not found"):
        find_nonfinite(str(tmp_path / "nope.h5"), "data")
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f["text"] = np.array([b"a", b"b"])
        f["data"] = _signals(3)
    with pytest.raises(ValueError, match=r"s\.h5: 'text' has dtype .*expected a numeric array"):
        find_nonfinite(str(path), "text")
    with pytest.raises(ValueError, match=r"s\.h5: 'data' has 3 channels; bad channel group \[2, 3\]"):
        find_nonfinite(str(path), "data", allow_missing_samples=True, channel_groups=[[0, 1], [2, 3]])
    with pytest.raises(ValueError, match="channel_groups needs allow_missing_samples"):
        find_nonfinite(str(path), "data", channel_groups=[[0]])
    with pytest.raises(ValueError, match="block_bytes"):
        find_nonfinite(str(path), "data", block_bytes=0)
