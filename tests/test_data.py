"""physiowave.data: lazy HDF5 datasets (values, crops, labels, errors, memory) and augmentation."""
from __future__ import annotations

import multiprocessing
import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from scipy.stats import zscore
from torch.utils.data import DataLoader

from physiowave.data import Augmentation, H5Dataset, parse_file_paths, time_stretch


def _write(path: Path, data: np.ndarray | None = None, label: np.ndarray | None = None, *, data_key: str = "data",
           label_key: str = "label", **data_kwargs) -> str:
    with h5py.File(path, "w") as f:
        if data is not None:
            f.create_dataset(data_key, data=data, **data_kwargs)
        if label is not None:
            f.create_dataset(label_key, data=label)
    return str(path)


def _signals(n: int, c: int = 4, t: int = 64, seed: int = 0, dtype: str = "float32") -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, c, t)).astype(dtype)



# ---------------------------------------------------------------------------------------------- parse_file_paths
@pytest.mark.parametrize("spec, expected", [
    ("a.h5,b.h5", ["a.h5", "b.h5"]),
    (" a.h5 , b.h5 ,, ", ["a.h5", "b.h5"]),
    ("a.h5 b.h5\tc.h5\n", ["a.h5", "b.h5", "c.h5"]),
    ("my file.h5,b.h5", ["my file.h5", "b.h5"]),  # with a comma, spaces stay part of the name
    (["a.h5", "b.h5,c.h5", "d.h5 e.h5"], ["a.h5", "b.h5", "c.h5", "d.h5", "e.h5"]),
    ([Path("x y.h5")], ["x y.h5"]),
    (None, []),
    ("", []),
    ("  ", []),
    ([], []),
])
def test_parse_file_paths(spec, expected):
    assert parse_file_paths(spec) == expected


# ---------------------------------------------------------------------------------------------- values
def test_round_trip_over_files_of_mixed_sizes_and_layouts(tmp_path):
    parts = [_signals(3, seed=1), _signals(0, seed=2), _signals(7, seed=3, dtype="float64"),
             (_signals(2, seed=4) * 100).astype("int16")]
    labels = [np.array([0, 2, 1]), np.zeros(0, np.int64), np.arange(7) % 3, np.array([4, 0])]
    layouts = [{}, {}, {"chunks": (2, 4, 64), "compression": "gzip"}, {"chunks": (1, 4, 16)}]
    paths = [_write(tmp_path / f"f{k}.h5", d, y, **kw) for k, (d, y, kw) in enumerate(zip(parts, labels, layouts))]
    ds = H5Dataset(",".join(paths))
    data, y_all = np.concatenate(parts).astype(np.float32), np.concatenate(labels)
    assert len(ds) == 12 and ds.file_paths == paths
    assert (ds.num_channels, ds.length, ds.output_length, ds.label_kind) == (4, 64, 64, "single")
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.dtype == torch.float32 and x.shape == (4, 64)
        np.testing.assert_array_equal(x.numpy(), data[i])
        assert y.dtype == torch.int64 and y.ndim == 0 and int(y) == y_all[i]
    np.testing.assert_array_equal(ds[-1][0].numpy(), data[-1])
    np.testing.assert_array_equal(ds[np.int64(5)][0].numpy(), data[5])
    for bad in (12, 100, -13):
        with pytest.raises(IndexError, match="out of range"):
            ds[bad]


def test_centre_crop_and_right_zero_pad(tmp_path):
    data = _signals(3, t=50)
    path = _write(tmp_path / "a.h5", data)
    crop = H5Dataset(path, max_length=20)
    assert crop.output_length == 20 and crop.length == 50
    for i in range(3):
        np.testing.assert_array_equal(crop[i].numpy(), data[i, :, 15:35])  # start = (50 - 20) // 2
    odd = H5Dataset(path, max_length=21)
    np.testing.assert_array_equal(odd[0].numpy(), data[0, :, 14:35])
    pad = H5Dataset(path, max_length=80)
    x = pad[1].numpy()
    assert x.shape == (4, 80)
    np.testing.assert_array_equal(x[:, :50], data[1])
    assert not x[:, 50:].any()


def _offset(window: np.ndarray, signal: np.ndarray) -> int:
    """Where ``window [C, L]`` sits in ``signal [C, T]`` (exactly one match expected)."""
    L = window.shape[-1]
    hits = [s for s in range(signal.shape[-1] - L + 1) if np.array_equal(signal[:, s:s + L], window)]
    assert len(hits) == 1
    return hits[0]


def test_random_crop_depends_on_seed_epoch_index_only(tmp_path):
    data = _signals(6, t=200)
    path = _write(tmp_path / "a.h5", data)
    ds = H5Dataset(path, max_length=32, random_crop=True, seed=7)

    def offsets(d: H5Dataset) -> list[int]:
        return [_offset(d[i].numpy(), data[i]) for i in range(len(d))]

    epoch0 = offsets(ds)
    assert epoch0 == [int(np.random.default_rng([7, 0, i]).integers(200 - 32 + 1)) for i in range(6)]
    assert len(set(epoch0)) > 1
    ds.set_epoch(1)
    epoch1 = offsets(ds)
    assert epoch1 != epoch0
    other = H5Dataset(path, max_length=32, random_crop=True, seed=7)
    other.set_epoch(1)
    assert offsets(other) == epoch1  # same (seed, epoch, index) → same crop, in a fresh instance too
    ds.set_epoch(0)
    assert offsets(ds) == epoch0
    assert offsets(H5Dataset(path, max_length=32, random_crop=True, seed=8)) != epoch0
    with pytest.raises(ValueError, match="epoch"):
        ds.set_epoch(-1)


def test_dataloader_workers_match_single_process(tmp_path):
    data = _signals(10, t=120)
    paths = [_write(tmp_path / "a.h5", data[:4], np.arange(4)), _write(tmp_path / "b.h5", data[4:], np.arange(6))]
    ds = H5Dataset(paths, max_length=48, random_crop=True, seed=3, augment=Augmentation(prob=1.0))
    ds.set_epoch(2)

    def run(workers: int, context: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = zip(*DataLoader(ds, batch_size=3, num_workers=workers, multiprocessing_context=context))
        return torch.cat(xs), torch.cat(ys)

    x0, y0 = run(0)  # the parent now holds open handles; forked workers must open their own
    for workers, context in [(2, "fork"), (1, "spawn")]:
        if context not in multiprocessing.get_all_start_methods():
            continue
        xw, yw = run(workers, context)
        torch.testing.assert_close(xw, x0, rtol=0, atol=0)
        torch.testing.assert_close(yw, y0, rtol=0, atol=0)
    assert not torch.equal(x0[:, :, :48], torch.from_numpy(data[:, :, 36:84]))  # really cropped at random
    clone = pickle.loads(pickle.dumps(ds))  # spawn workers receive a pickled copy
    torch.testing.assert_close(torch.stack([clone[i][0] for i in range(len(clone))]), x0, rtol=0, atol=0)


def test_normalize_ignores_padding_and_uses_the_crop(tmp_path):
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(2, 3, 30)) * 5 + 3).astype(np.float32)
    data[1, 2] = 4.0  # a constant channel: std floor, no NaN
    path = _write(tmp_path / "a.h5", data)
    x = H5Dataset(path, max_length=45, normalize=True)[0].numpy()
    np.testing.assert_allclose(x[:, :30].mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(x[:, :30].std(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(x[:, :30], zscore(data[0], axis=-1), atol=1e-5)
    assert not x[:, 30:].any()
    flat = H5Dataset(path, normalize=True)[1].numpy()
    assert np.isfinite(flat).all() and not flat[2].any()
    cropped = H5Dataset(path, max_length=10, normalize=True)[0].numpy()
    np.testing.assert_allclose(cropped, zscore(data[0, :, 10:20], axis=-1), atol=1e-5)


def test_augment_sees_the_real_signal_before_padding(tmp_path):
    data = _signals(2, t=30)
    seen: list[tuple[tuple[int, ...], float]] = []

    def plus_one(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        seen.append((x.shape, rng.random()))
        return x + 1

    ds = H5Dataset(_write(tmp_path / "a.h5", data), max_length=40, augment=plus_one, seed=5)
    x = ds[1].numpy()
    np.testing.assert_allclose(x[:, :30], data[1] + 1)
    assert not x[:, 30:].any()
    assert seen == [((4, 30), np.random.default_rng([5, 0, 1]).random())]
    bad = H5Dataset(ds.file_paths, augment=lambda x, rng: x[:, :-1])
    with pytest.raises(ValueError, match="augment returned shape"):
        bad[0]


# ---------------------------------------------------------------------------------------------- keys and labels
@pytest.mark.parametrize("data_key, label_key", [("input", "labels"), ("X", "Y"), ("data", "y")])
def test_key_fallbacks(tmp_path, data_key, label_key):
    data, labels = _signals(3), np.array([1, 0, 2])
    path = _write(tmp_path / "a.h5", data, labels, data_key=data_key, label_key=label_key)
    for ds in (H5Dataset(path), H5Dataset(path, data_key=None, label_key=None)):
        x, y = ds[2]
        np.testing.assert_array_equal(x.numpy(), data[2])
        assert int(y) == 2 and ds.label_kind == "single"


def test_fallback_order_without_keys(tmp_path):
    """None takes the first present of data, input, X and of label, labels, y, Y (the original release's order
    for its default keys)."""
    data_keys, label_keys = ["X", "input", "data"], ["Y", "y", "labels", "label"]
    for k in range(3):  # k most preferred names removed
        path = tmp_path / f"a{k}.h5"
        with h5py.File(path, "w") as f:
            for i, name in enumerate(data_keys[: 3 - k]):
                f[name] = _signals(2, seed=i)
            for i, name in enumerate(label_keys[: 4 - k]):
                f[name] = np.array([i, i])
        ds = H5Dataset(str(path))
        np.testing.assert_array_equal(ds[0][0].numpy(), _signals(2, seed=2 - k)[0])
        np.testing.assert_array_equal(ds.labels_array, [3 - k, 3 - k])


@pytest.mark.parametrize("kwargs, missing", [
    ({"data_key": "data_eemg"}, "data_eemg"),      # a typo never falls back to 'data'
    ({"data_key": "input"}, "input"),              # nor does a fallback name given explicitly
    ({"label_key": "lable"}, "lable"),             # labels="auto": an explicit label key must exist too
    ({"label_key": "labels", "labels": "single"}, "labels"),
])
def test_explicit_keys_never_fall_back(tmp_path, kwargs, missing):
    path = _write(tmp_path / "typo.h5", _signals(2), np.array([0, 1]))
    with pytest.raises(ValueError) as err:
        H5Dataset(path, **kwargs)
    assert str(err.value) == f"{path}: no dataset '{missing}' (the file has: data, label)"


def test_sources_name_the_key_each_file_resolved_to(tmp_path):
    paths = [_write(tmp_path / "a.h5", _signals(2)), _write(tmp_path / "b.h5", _signals(3), data_key="X")]
    assert H5Dataset(paths).sources == [(paths[0], "data"), (paths[1], "X")]


def test_explicit_label_key_is_not_read_without_labels(tmp_path):
    path = _write(tmp_path / "a.h5", _signals(2))  # pretraining data: labels="none" looks at no label dataset
    assert H5Dataset(path, label_key="label", labels="none").label_kind == "none"
    with pytest.raises(ValueError, match=r"a\.h5: no dataset 'label' \(the file has: data\)"):
        H5Dataset(path, label_key="label")


def test_explicit_keys_win_over_fallbacks(tmp_path):
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        f["data"], f["sig"] = _signals(2, seed=1), _signals(2, seed=2)
        f["label"], f["target"] = np.array([0, 0]), np.array([3, 1])
    ds = H5Dataset(str(path), data_key="sig", label_key="target")
    np.testing.assert_array_equal(ds[0][0].numpy(), _signals(2, seed=2)[0])
    np.testing.assert_array_equal(ds.labels_array, [3, 1])


def test_single_labels(tmp_path):
    labels = np.array([0, 3, 3, 1, 3], dtype=np.int32)
    paths = [_write(tmp_path / "a.h5", _signals(3), labels[:3]),
             _write(tmp_path / "b.h5", _signals(2), labels[3:].astype(np.float32))]  # integral floats are fine
    ds = H5Dataset(paths, labels="single")
    assert ds.label_kind == "single" and ds.num_classes == 4
    assert ds.labels_array.dtype == np.int64
    np.testing.assert_array_equal(ds.labels_array, labels)
    np.testing.assert_array_equal(ds.class_counts, np.bincount(labels, minlength=4))
    assert ds.class_counts.tolist() == [1, 1, 0, 3]
    y = ds[4][1]
    assert y.dtype == torch.int64 and y.shape == () and int(y) == 3


@pytest.mark.parametrize("dtype", ["int8", "float32", "bool"])
def test_multi_labels(tmp_path, dtype):
    labels = np.array([[1, 0, 1], [0, 0, 0], [1, 1, 0], [0, 0, 1]]).astype(dtype)
    paths = [_write(tmp_path / "a.h5", _signals(1), labels[:1]), _write(tmp_path / "b.h5", _signals(3), labels[1:])]
    ds = H5Dataset(paths)
    assert ds.label_kind == "multi" and ds.num_classes == 3
    assert ds.labels_array.dtype == np.float32 and ds.labels_array.shape == (4, 3)
    np.testing.assert_array_equal(ds.class_counts, labels.astype(int).sum(0))
    y = ds[2][1]
    assert y.dtype == torch.float32 and y.tolist() == [1.0, 1.0, 0.0]
    assert H5Dataset(paths, labels="multi").num_classes == 3


def test_unlabelled_and_ignored_labels(tmp_path):
    data = _signals(2)
    ds = H5Dataset(_write(tmp_path / "a.h5", data))
    assert ds.label_kind == "none" and ds.num_classes is None and ds.labels_array is None and ds.class_counts is None
    x = ds[1]
    assert isinstance(x, torch.Tensor)
    np.testing.assert_array_equal(x.numpy(), data[1])
    ignored = H5Dataset(_write(tmp_path / "b.h5", data, np.array([-5, 0.5])), labels="none")  # bad labels unread
    assert isinstance(ignored[0], torch.Tensor) and ignored.label_kind == "none"


# ---------------------------------------------------------------------------------------------- errors
def _not_hdf5(tmp: Path) -> list[str]:
    (tmp / "bad.h5").write_text("hello")
    return [str(tmp / "bad.h5")]


ERRORS = [  # (files builder, H5Dataset kwargs, exception, message fragment, file name that must be named)
    (lambda t: [str(t / "missing.h5")], {}, FileNotFoundError, "not found", "missing.h5"),
    (_not_hdf5, {}, ValueError, "not an HDF5 file", "bad.h5"),
    (lambda t: [_write(t / "a.h5", _signals(2), data_key="signals")], {}, ValueError,
     "no data dataset: none of data, input, X is present (the file has: signals)", "a.h5"),
    (lambda t: [_write(t / "a.h5", _signals(2), np.zeros(2), data_key="input")], {"data_key": "data"}, ValueError,
     "no dataset 'data' (the file has: input, label)", "a.h5"),
    (lambda t: [_write(t / "a.h5", _signals(2), np.zeros(2)), _write(t / "b.h5", _signals(2), np.zeros(2),
                                                                      label_key="y")],
     {"label_key": "label"}, ValueError, "no dataset 'label' (the file has: data, y)", "b.h5"),
    (lambda t: [_write(t / "a.h5", np.zeros((2, 64), np.float32))], {}, ValueError, "expected 3-D [N, C, T]", "a.h5"),
    (lambda t: [_write(t / "a.h5", _signals(2, c=4)), _write(t / "b.h5", _signals(2, c=3))], {}, ValueError,
     "(2, 3, 64) but", "a.h5"),
    (lambda t: [_write(t / "a.h5", _signals(2, t=64)), _write(t / "b.h5", _signals(5, t=32))], {}, ValueError,
     "must share [C, T]", "b.h5"),
    (lambda t: [_write(t / "a.h5", _signals(2))], {"labels": "single"}, ValueError, "needs a label dataset", "a.h5"),
    (lambda t: [_write(t / "a.h5", _signals(120), np.zeros(100, np.int64))], {}, ValueError,
     "'label' has 100 entries but 'data' has 120", "a.h5"),
    (lambda t: [_write(t / "a.h5", _signals(3, seed=1), np.array([0, -1, 2]))], {}, ValueError, "negative", "a.h5"),
    (lambda t: [_write(t / "a.h5", _signals(2), np.array([0.0, 1.5]))], {}, ValueError, "non-integer", "a.h5"),
    (lambda t: [_write(t / "a.h5", _signals(2), np.array([[0, 1], [2, 0]]))], {}, ValueError,
     "outside {0, 1}", "a.h5"),
    (lambda t: [_write(t / "a.h5", _signals(2), np.zeros((2, 3)))], {"labels": "single"}, ValueError,
     "shape (2, 3)", "a.h5"),
    (lambda t: [_write(t / "a.h5", _signals(2), np.zeros(2))], {"labels": "multi"}, ValueError, "shape (2,)", "a.h5"),
    (lambda t: [_write(t / "a.h5", _signals(2), np.zeros(2)), _write(t / "b.h5", _signals(2), np.zeros((2, 4)))],
     {}, ValueError, "'multi' labels but", "b.h5"),
    (lambda t: [_write(t / "a.h5", _signals(2), np.zeros(2)), _write(t / "b.h5", _signals(2))], {}, ValueError,
     "'none' labels but", "b.h5"),
    (lambda t: [_write(t / "a.h5", _signals(2), np.zeros((2, 3))), _write(t / "b.h5", _signals(2), np.zeros((2, 4)))],
     {}, ValueError, "has 4 labels per sample but", "a.h5"),
]


@pytest.mark.parametrize("build, kwargs, exc, fragment, named", ERRORS)
def test_errors_name_the_file(tmp_path, build, kwargs, exc, fragment, named):
    with pytest.raises(exc) as info:
        H5Dataset(build(tmp_path), **kwargs)
    message = str(info.value)
    assert fragment in message and os.sep + named in message and "\n" not in message


def test_two_file_shape_error_names_both(tmp_path):
    paths = [_write(tmp_path / "first.h5", _signals(2, c=4)), _write(tmp_path / "second.h5", _signals(2, c=3))]
    with pytest.raises(ValueError, match=r"second\.h5: 'data' has shape \(2, 3, 64\) but .*first\.h5 has \(2, 4, 64\)"):
        H5Dataset(paths)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"labels": "yes"}, "labels must be one of"), ({"max_length": 0}, "max_length"),
    ({"max_length": 2.5}, "max_length"), ({"seed": -1}, "seed"), ({"paths": " , "}, "no HDF5 files"),
])
def test_bad_arguments(tmp_path, kwargs, fragment):
    kwargs = {"paths": _write(tmp_path / "a.h5", _signals(1)), **kwargs}
    with pytest.raises(ValueError, match=fragment):
        H5Dataset(**kwargs)


# ---------------------------------------------------------------------------------------------- memory
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_memory_does_not_grow_with_the_file(tmp_path):
    N, C, T, block = 2048, 12, 2048, 256  # 201 MB of float32, chunked like the preprocessed ECG files
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as f:
        dset = f.create_dataset("data", (N, C, T), dtype="f4", chunks=(block, C, T))
        pattern = np.arange(C * T, dtype=np.float32).reshape(1, C, T)
        for s in range(0, N, block):
            dset[s:s + block] = pattern + np.arange(s, s + block, dtype=np.float32)[:, None, None]
        f["label"] = np.arange(N) % 5
    try:
        size = path.stat().st_size
        start = _rss_bytes()
        ds = H5Dataset(str(path), max_length=1024)
        loader = DataLoader(ds, batch_size=64, num_workers=0)
        total, quarter = 0, 0
        for k, (x, _y) in enumerate(loader):
            total += len(x)
            if k == len(loader) // 4:  # handle open, allocator pools warm
                quarter = _rss_bytes()
        end = _rss_bytes()
        assert total == N and int(ds[N - 1][0][0, 0]) == (N - 1) + 512  # centre crop of the last sample
        mib = 2**20
        assert end - start < size / 4, f"RSS grew by {(end - start) / mib:.0f} MiB for a {size / mib:.0f} MiB file"
        assert end - quarter < size / 10, f"RSS grew by {(end - quarter) / mib:.0f} MiB over the last 3/4 of the file"
    finally:
        path.unlink()


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc (Linux)")
def test_open_handles_are_bounded_and_closable(tmp_path):
    parts = [_signals(2, seed=k) for k in range(7)]
    ds = H5Dataset([_write(tmp_path / f"f{k}.h5", d) for k, d in enumerate(parts)])
    data = np.concatenate(parts)
    baseline = _open_files()
    for i in [0, 13, 2, 11, 4, 9, 6, 7, 1, 12, 3, 10, 5, 8]:  # jump between all seven files
        np.testing.assert_array_equal(ds[i].numpy(), data[i])
        assert _open_files() - baseline <= 4
    ds.close()
    assert _open_files() == baseline
    np.testing.assert_array_equal(ds[13].numpy(), data[13])  # reopens on demand


# ---------------------------------------------------------------------------------------------- augmentation
def test_time_stretch_against_a_ramp():
    ramp = np.arange(10, dtype=np.float64)[None].repeat(2, 0)  # value = position, so interpolation is exact
    np.testing.assert_allclose(time_stretch(ramp, 2.0), np.linspace(0, 9, 20)[None, 5:15].repeat(2, 0))
    short = time_stretch(ramp, 0.5)
    np.testing.assert_allclose(short[:, :5], np.tile([0, 2.25, 4.5, 6.75, 9.0], (2, 1)))
    assert not short[:, 5:].any()
    np.testing.assert_array_equal(time_stretch(ramp, 1.0), ramp)


def test_time_stretch_moves_the_spectral_peak():
    T, cycles, factor = 1000, 40, 1.25
    x = np.sin(2 * np.pi * cycles * np.arange(T) / T)[None]
    peak = np.abs(np.fft.rfft(time_stretch(x, factor)[0])).argmax()
    assert abs(peak - cycles / factor) <= 1


def test_augmentation_is_deterministic_and_bounded():
    x = np.random.default_rng(0).normal(size=(3, 256)).astype(np.float32)
    aug = Augmentation(prob=1.0)
    a, b = aug(x, np.random.default_rng(11)), aug(x, np.random.default_rng(11))
    assert a.dtype == np.float32 and a.shape == x.shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, aug(x, np.random.default_rng(12)))
    np.testing.assert_array_equal(Augmentation(prob=0.0)(x, np.random.default_rng(0)), x)
    applied = [not np.array_equal(Augmentation(prob=0.5)(x, np.random.default_rng(s)), x) for s in range(200)]
    assert 70 < sum(applied) < 130


def test_augmentation_components():
    x = np.random.default_rng(1).normal(size=(2, 100)).astype(np.float32)
    scale_only = Augmentation(noise_std=0.0, scale_range=(2.0, 2.0), stretch_range=(1.0, 1.0), prob=1.0)
    np.testing.assert_allclose(scale_only(x, np.random.default_rng(0)), 2 * x, rtol=1e-6)
    noise_only = Augmentation(noise_std=0.5, scale_range=(1.0, 1.0), stretch_range=(1.0, 1.0), prob=1.0)
    residual = noise_only(np.zeros((4, 5000), np.float32), np.random.default_rng(0))
    assert abs(residual.std() - 0.5) < 0.02 and abs(residual.mean()) < 0.02
    rng = np.random.default_rng(3)
    rng.random(), rng.uniform(1.0, 1.0)  # the draws made before the stretch factor
    factor = rng.uniform(0.8, 1.2)
    stretch_only = Augmentation(noise_std=0.0, scale_range=(1.0, 1.0), stretch_range=(0.8, 1.2), prob=1.0)
    np.testing.assert_allclose(stretch_only(x, np.random.default_rng(3)), time_stretch(x, factor), rtol=1e-6)


@pytest.mark.parametrize("kwargs", [{"noise_std": -1}, {"prob": 1.5}, {"scale_range": (1.2, 0.8)},
                                    {"stretch_range": (0.0, 1.0)}])
def test_augmentation_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError, match="Augmentation"):
        Augmentation(**kwargs)
