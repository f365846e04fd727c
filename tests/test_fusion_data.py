"""physiowave.data.multimodal: per-key and channel-split layouts, labels, absent samples, normalisation, several
files, DataLoader batches, spec parsing and errors."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from physiowave.data import Modality, MultiModalDataset, parse_modality
from physiowave.data.multimodal import parse_channels
from physiowave.models.fusion import modality_present


def _write(path: Path, **datasets: np.ndarray) -> str:
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f.create_dataset(key, data=value)
    return str(path)


def _signals(n: int, c: int, t: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, c, t)) * rng.uniform(0.5, 3,
                                                     size=(1, c, 1)) + rng.normal(size=(1, c, 1))).astype(np.float32)


def _zscore(x: np.ndarray) -> np.ndarray:
    """Per-channel z-score over time of ``[C, T]`` (population std), the independent reference."""
    x = x.astype(np.float64)
    return (x - x.mean(axis=-1, keepdims=True)) / x.std(axis=-1, keepdims=True)


KEYED = [Modality("a", key="data_a"), Modality("b", key="data_b")]


@pytest.fixture
def keyed(tmp_path) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    a, b = _signals(6, 2, 64, seed=1), _signals(6, 3, 128, seed=2)
    label = np.array([0, 2, 1, 2, 0, 1])
    return _write(tmp_path / "keyed.h5", data_a=a, data_b=b, label=label), a, b, label


# ---------------------------------------------------------------------------------------------- per-key layout
def test_per_key_layout_returns_the_stored_arrays(keyed):
    path, a, b, label = keyed
    ds = MultiModalDataset(path, KEYED)
    assert len(ds) == 6 and ds.file_paths == [path]
    assert ds.shapes == {"a": (2, 64), "b": (3, 128)}
    assert ds.label_kind == "single" and ds.num_classes == 3
    np.testing.assert_array_equal(ds.labels_array, label)
    assert ds.absent_counts == {"a": 0, "b": 0}
    for i in range(6):
        x, y = ds[i]
        assert list(x) == ["a", "b"]
        assert x["a"].dtype == torch.float32 and x["a"].shape == (2, 64) and x["b"].shape == (3, 128)
        np.testing.assert_array_equal(x["a"].numpy(), a[i])
        np.testing.assert_array_equal(x["b"].numpy(), b[i])
        assert y.dtype == torch.int64 and int(y) == label[i]
    x, y = ds[-1]
    np.testing.assert_array_equal(x["b"].numpy(), b[5])
    assert "a=2×64" in repr(ds) and "b=3×128" in repr(ds)


def test_modality_order_is_the_given_order(keyed):
    path, a, b, _ = keyed
    ds = MultiModalDataset(path, [parse_modality("second:data_b"), parse_modality("first:data_a")])
    x, _ = ds[3]
    assert list(x) == ["second", "first"]
    np.testing.assert_array_equal(x["first"].numpy(), a[3])
    np.testing.assert_array_equal(x["second"].numpy(), b[3])


def test_multi_hot_labels(tmp_path):
    a, b = _signals(5, 2, 64, seed=1), _signals(5, 3, 128, seed=2)
    label = np.random.default_rng(0).integers(0, 2, size=(5, 4))
    ds = MultiModalDataset(_write(tmp_path / "m.h5", data_a=a, data_b=b, label=label), KEYED)
    assert ds.label_kind == "multi" and ds.num_classes == 4
    x, y = ds[2]
    assert y.dtype == torch.float32 and y.shape == (4,)
    np.testing.assert_array_equal(y.numpy(), label[2])
    np.testing.assert_array_equal(x["b"].numpy(), b[2])


def test_labels_none_returns_just_the_dict(keyed):
    path, a, b, _ = keyed
    ds = MultiModalDataset(path, KEYED, labels="none")
    item = ds[4]
    assert isinstance(item, dict) and list(item) == ["a", "b"]
    np.testing.assert_array_equal(item["a"].numpy(), a[4])
    assert ds.labels_array is None and ds.num_classes is None and ds.label_kind == "none"


def test_file_without_labels_gives_dicts(tmp_path):
    a, b = _signals(3, 2, 64, seed=1), _signals(3, 3, 128, seed=2)
    ds = MultiModalDataset(_write(tmp_path / "u.h5", data_a=a, data_b=b), KEYED)
    assert isinstance(ds[0], dict) and ds.label_kind == "none"


# ---------------------------------------------------------------------------------------------- channel-split layout
def test_channel_split_layout_slices_the_stored_channels(tmp_path):
    data, label = _signals(4, 5, 64, seed=3), np.array([1, 0, 1, 0])
    path = _write(tmp_path / "split.h5", data=data, label=label)
    ds = MultiModalDataset(path, [parse_modality("a:0-1"), parse_modality("b:2-4")])
    assert ds.shapes == {"a": (2, 64), "b": (3, 64)}
    for i in range(4):
        x, y = ds[i]
        np.testing.assert_array_equal(x["a"].numpy(), data[i, 0:2])
        np.testing.assert_array_equal(x["b"].numpy(), data[i, 2:5])
        assert int(y) == label[i]
    lists = MultiModalDataset(path, [parse_modality("even:0,2,4"), parse_modality("odd:3,1")])
    assert lists.shapes == {"even": (3, 64), "odd": (2, 64)}
    x, _ = lists[2]
    np.testing.assert_array_equal(x["even"].numpy(), data[2, [0, 2, 4]])
    np.testing.assert_array_equal(x["odd"].numpy(), data[2, [3, 1]])  # in the order listed


def test_channel_and_key_modalities_mix(tmp_path):
    data, extra = _signals(3, 4, 64, seed=4), _signals(3, 1, 96, seed=5)
    path = _write(tmp_path / "mix.h5", data=data, data_ppg=extra, label=np.array([0, 1, 0]))
    ds = MultiModalDataset(path, [parse_modality("ecg:1-3"), parse_modality("ppg:data_ppg")])
    assert ds.shapes == {"ecg": (3, 64), "ppg": (1, 96)}
    x, _ = ds[1]
    np.testing.assert_array_equal(x["ecg"].numpy(), data[1, 1:4])
    np.testing.assert_array_equal(x["ppg"].numpy(), extra[1])


def test_custom_data_key_for_channel_modalities(tmp_path):
    sig = _signals(3, 3, 32, seed=6)
    path = _write(tmp_path / "k.h5", signals=sig, label=np.array([0, 1, 2]))
    ds = MultiModalDataset(path, [parse_modality("a:0"), parse_modality("b:1-2")], data_key="signals")
    x, _ = ds[2]
    np.testing.assert_array_equal(x["a"].numpy(), sig[2, :1])
    np.testing.assert_array_equal(x["b"].numpy(), sig[2, 1:])


def test_sources_and_channel_groups(tmp_path):
    p1 = _write(tmp_path / "one.h5", data=_signals(2, 5, 32, seed=1), data_ppg=_signals(2, 1, 48, seed=2),
                label=np.arange(2))
    p2 = _write(tmp_path / "two.h5", input=_signals(3, 5, 32, seed=3), data_ppg=_signals(3, 1, 48, seed=4),
                label=np.arange(3))
    ds = MultiModalDataset([p1, p2], [parse_modality("a:0-1"), parse_modality("ppg:data_ppg"),
                                      parse_modality("b:2-4")])
    assert ds.sources == [(p1, "data"), (p1, "data_ppg"), (p2, "input"), (p2, "data_ppg")]
    assert ds.channel_groups(p2, "input") == [(0, 1), (2, 3, 4)]
    assert ds.channel_groups(p1, "data_ppg") is None
    with pytest.raises(KeyError, match="not a source"):
        ds.channel_groups(p1, "input")


# ---------------------------------------------------------------------------------------------- absent samples
def test_present_flags_make_the_flagged_samples_all_nan(tmp_path):
    a, b = _signals(5, 2, 64, seed=1), _signals(5, 3, 128, seed=2)
    flags = np.array([1, 0, 1, 0, 1], dtype=np.uint8)
    path = _write(tmp_path / "p.h5", data_a=a, data_b=b, label=np.arange(5) % 2, present_b=flags)
    ds = MultiModalDataset(path, KEYED)
    assert ds.absent_counts == {"a": 0, "b": 2}
    for i in range(5):
        x, _ = ds[i]
        np.testing.assert_array_equal(x["a"].numpy(), a[i])
        if flags[i]:
            np.testing.assert_array_equal(x["b"].numpy(), b[i])
        else:
            assert x["b"].shape == (3, 128) and torch.isnan(x["b"]).all()
    assert torch.isnan(ds[-2][0]["b"]).all() and not torch.isnan(ds[-1][0]["b"]).any()


def test_present_flags_in_the_channel_split_layout(tmp_path):
    data = _signals(3, 4, 64, seed=7)
    path = _write(tmp_path / "ps.h5", data=data, label=np.zeros(3, np.int64), present_a=np.array([True, True, False]))
    ds = MultiModalDataset(path, [parse_modality("a:0-1"), parse_modality("b:2-3")])
    assert ds.absent_counts == {"a": 1, "b": 0}
    x, _ = ds[2]
    assert torch.isnan(x["a"]).all()
    np.testing.assert_array_equal(x["b"].numpy(), data[2, 2:])


@pytest.mark.parametrize("normalize", [False, True])
def test_stored_all_nan_sample_stays_all_nan(tmp_path, normalize):
    a, b = _signals(3, 2, 64, seed=1), _signals(3, 3, 128, seed=2)
    b[1] = np.nan
    ds = MultiModalDataset(_write(tmp_path / "n.h5", data_a=a, data_b=b, label=np.arange(3)), KEYED,
                           normalize=normalize)
    x, _ = ds[1]
    assert torch.isnan(x["b"]).all()
    assert torch.isfinite(x["a"]).all()
    expected = _zscore(a[1]) if normalize else a[1]
    np.testing.assert_allclose(x["a"].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert ds.absent_counts == {"a": 0, "b": 0}  # found only when read


def test_normalize_zscores_each_modality_per_channel(tmp_path):
    a, b = _signals(3, 2, 64, seed=1), _signals(3, 3, 128, seed=2)
    flags = np.array([1, 1, 0])
    ds = MultiModalDataset(_write(tmp_path / "z.h5", data_a=a, data_b=b, label=np.arange(3), present_b=flags), KEYED,
                           normalize=True)
    for i in range(3):
        x, _ = ds[i]
        np.testing.assert_allclose(x["a"].numpy(), _zscore(a[i]), rtol=1e-5, atol=1e-5)
        if flags[i]:
            np.testing.assert_allclose(x["b"].numpy(), _zscore(b[i]), rtol=1e-5, atol=1e-5)
        else:
            assert torch.isnan(x["b"]).all()


def test_normalize_in_the_channel_split_layout(tmp_path):
    data = _signals(2, 5, 64, seed=8)
    ds = MultiModalDataset(_write(tmp_path / "zs.h5", data=data, label=np.arange(2)),
                           [parse_modality("a:0-1"), parse_modality("b:4,2")], normalize=True)
    x, _ = ds[1]
    np.testing.assert_allclose(x["a"].numpy(), _zscore(data[1, 0:2]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x["b"].numpy(), _zscore(data[1, [4, 2]]), rtol=1e-5, atol=1e-5)


def test_augment_runs_on_every_modality_before_absence(tmp_path):
    a, b = _signals(3, 2, 64, seed=1), _signals(3, 3, 128, seed=2)
    path = _write(tmp_path / "aug.h5", data_a=a, data_b=b, label=np.arange(3), present_a=np.array([1, 0, 1]))
    ds = MultiModalDataset(path, KEYED, augment=lambda x, rng: x * 2.0 + 1.0)
    x, _ = ds[0]
    np.testing.assert_allclose(x["a"].numpy(), a[0] * 2 + 1, rtol=1e-6)
    np.testing.assert_allclose(x["b"].numpy(), b[0] * 2 + 1, rtol=1e-6)
    assert torch.isnan(ds[1][0]["a"]).all()


# ---------------------------------------------------------------------------------------------- several files, loader
def test_several_files_concatenate(tmp_path):
    a1, b1 = _signals(3, 2, 64, seed=1), _signals(3, 3, 128, seed=2)
    a2, b2 = _signals(4, 2, 64, seed=3), _signals(4, 3, 128, seed=4)
    y1, y2 = np.array([0, 1, 0]), np.array([4, 1, 2, 3])
    p1 = _write(tmp_path / "one.h5", data_a=a1, data_b=b1, label=y1)  # no flags: all present
    p2 = _write(tmp_path / "two.h5", data_a=a2, data_b=b2, label=y2, present_a=np.array([1, 0, 0, 1]))
    ds = MultiModalDataset([p1, p2], KEYED)
    assert len(ds) == 7 and ds.file_paths == [p1, p2]
    assert ds.shapes == {"a": (2, 64), "b": (3, 128)}
    np.testing.assert_array_equal(ds.labels_array, np.concatenate([y1, y2]))
    assert ds.num_classes == 5
    assert ds.absent_counts == {"a": 2, "b": 0}
    a, b = np.concatenate([a1, a2]), np.concatenate([b1, b2])
    for i in range(7):
        x, y = ds[i]
        np.testing.assert_array_equal(x["b"].numpy(), b[i])
        if i in (4, 5):
            assert torch.isnan(x["a"]).all()
        else:
            np.testing.assert_array_equal(x["a"].numpy(), a[i])
    assert len(MultiModalDataset(f"{p1},{p2}", KEYED)) == 7  # a comma-separated flag value works too


def test_default_collate_gives_batched_dicts_the_fusion_model_reads(tmp_path):
    a, b = _signals(6, 2, 64, seed=1), _signals(6, 3, 128, seed=2)
    flags = np.array([1, 1, 0, 1, 1, 1])
    path = _write(tmp_path / "dl.h5", data_a=a, data_b=b, label=np.arange(6) % 3, present_b=flags)
    loader = DataLoader(MultiModalDataset(path, KEYED), batch_size=4, shuffle=False, num_workers=0)
    batches = list(loader)
    assert len(batches) == 2
    x, y = batches[0]
    assert isinstance(x, dict) and list(x) == ["a", "b"]
    assert x["a"].shape == (4, 2, 64) and x["b"].shape == (4, 3, 128) and y.shape == (4,)
    torch.testing.assert_close(x["a"], torch.from_numpy(a[:4]))
    np.testing.assert_array_equal(y.numpy(), np.arange(4) % 3)
    assert modality_present(x["b"]).tolist() == flags[:4].astype(bool).tolist()
    assert batches[1][0]["b"].shape == (2, 3, 128)


# ---------------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("spec, expected", [
    ("ecg:data_ecg", Modality("ecg", key="data_ecg")),
    ("ecg:data_ecg:ecg.pth", Modality("ecg", key="data_ecg", checkpoint="ecg.pth")),
    ("emg:12-19", Modality("emg", channels=tuple(range(12, 20)))),
    ("emg:0-1,5", Modality("emg", channels=(0, 1, 5))),
    ("eeg_2:3:runs/eeg/best.pth", Modality("eeg_2", channels=(3,), checkpoint="runs/eeg/best.pth")),
    ("ecg:data_ecg:C:/runs/ecg.pth", Modality("ecg", key="data_ecg", checkpoint="C:/runs/ecg.pth")),
    ("ecg:data_ecg:s3://b:1/x.pth", Modality("ecg", key="data_ecg", checkpoint="s3://b:1/x.pth")),
    ("_x:data", Modality("_x", key="data")),
    ("ecg:data_ecg:", Modality("ecg", key="data_ecg")),  # empty checkpoint: a fresh branch
])
def test_parse_modality(spec, expected):
    assert parse_modality(spec) == expected


def test_modality_source():
    assert parse_modality("a:0-2,7").source == "0,1,2,7"
    assert parse_modality("a:data_a:x.pth").source == "data_a"


@pytest.mark.parametrize("spec, phrase", [
    ("ecg", "expected NAME:KEY_OR_CHANNELS"),
    ("ecg:", "expected NAME:KEY_OR_CHANNELS"),
    ("ecg::x.pth", "expected NAME:KEY_OR_CHANNELS"),
    ("1ecg:data", "modality name '1ecg'"),
    ("ecg-2:data", "modality name 'ecg-2'"),
    (":data", "modality name ''"),
    ("ecg:5-2", "runs backwards"),
    ("ecg:0-3,2", "listed twice"),
    ("ecg:0-3,x", "expected indices and inclusive ranges"),
])
def test_parse_modality_errors(spec, phrase):
    with pytest.raises(ValueError, match=phrase) as err:
        parse_modality(spec)
    assert "\n" not in str(err.value)
    assert repr(spec) in str(err.value) or spec.partition(":")[2] in str(err.value)


@pytest.mark.parametrize("text, expected", [
    ("0", (0,)), ("0-11", tuple(range(12))), ("0,2,5-7", (0, 2, 5, 6, 7)), ("3-3", (3,)), ("7,1", (7, 1)),
])
def test_parse_channels(text, expected):
    assert parse_channels(text) == expected


@pytest.mark.parametrize("text, phrase", [
    ("", "expected indices"), ("0-", "expected indices"), ("-1", "expected indices"), ("0, 1", "expected indices"),
    ("a", "expected indices"), ("0-2-4", "expected indices"), ("4-1", "range 4-1 runs backwards"),
    ("0,0", "listed twice"), ("0-4,3-5", "listed twice"),
])
def test_parse_channels_errors(text, phrase):
    with pytest.raises(ValueError, match=phrase) as err:
        parse_channels(text)
    assert repr(text) in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------- errors
def test_missing_key_names_the_file_and_modality(keyed):
    path = keyed[0]
    with pytest.raises(ValueError, match=r"keyed\.h5: no dataset 'data_c' for modality 'c'") as err:
        MultiModalDataset(path, [*KEYED, Modality("c", key="data_c")])
    assert "data_a" in str(err.value)  # lists the keys there are
    with pytest.raises(ValueError, match=r"keyed\.h5: no data dataset for modality 'x': none of data, input, X is "
                                         r"present \(the file has: data_a, data_b, label\)"):
        MultiModalDataset(path, [parse_modality("x:0-1")])
    with pytest.raises(ValueError, match=r"keyed\.h5: no dataset 'data' for modality 'x'"):
        MultiModalDataset(path, [parse_modality("x:0-1")], data_key="data")


def test_explicit_keys_never_fall_back(tmp_path):
    path = _write(tmp_path / "e.h5", data=_signals(2, 3, 32, seed=1), data_b=_signals(2, 1, 32, seed=2),
                  label=np.arange(2))
    with pytest.raises(ValueError, match=r"e\.h5: no dataset 'data_eemg' for modality 'a' \(the file has: data, "
                                         r"data_b, label\)"):
        MultiModalDataset(path, [parse_modality("a:0-1")], data_key="data_eemg")
    with pytest.raises(ValueError, match=r"e\.h5: no dataset 'data_c' for modality 'c'"):
        MultiModalDataset(path, [parse_modality("a:0-1"), parse_modality("c:data_c")])
    with pytest.raises(ValueError, match=r"e\.h5: no dataset 'labels' \(the file has: data, data_b, label\)"):
        MultiModalDataset(path, [parse_modality("a:0-1"), parse_modality("b:data_b")], label_key="labels")
    ds = MultiModalDataset(path, [parse_modality("a:0-1"), parse_modality("b:data_b")], data_key="data",
                           label_key="label")
    assert ds.shapes == {"a": (2, 32), "b": (1, 32)} and ds.labels_array.tolist() == [0, 1]


def test_channel_modalities_fall_back_per_file_without_data_key(tmp_path):
    x1, x2 = _signals(2, 3, 32, seed=1), _signals(3, 3, 32, seed=2)
    p1 = _write(tmp_path / "one.h5", data=x1, label=np.arange(2))
    p2 = _write(tmp_path / "two.h5", input=x2, labels=np.arange(3))
    ds = MultiModalDataset([p1, p2], [parse_modality("a:0"), parse_modality("b:1-2")])
    assert len(ds) == 5 and ds.labels_array.tolist() == [0, 1, 0, 1, 2]
    np.testing.assert_array_equal(ds[3][0]["b"].numpy(), x2[1, 1:])
    np.testing.assert_array_equal(ds[1][0]["a"].numpy(), x1[1, :1])


def test_channel_beyond_the_stored_channels(tmp_path):
    path = _write(tmp_path / "c.h5", data=_signals(2, 5, 64, seed=1), label=np.arange(2))
    with pytest.raises(ValueError, match=r"c\.h5: modality 'b' asks for channel 5, but 'data' has 5 channels"):
        MultiModalDataset(path, [parse_modality("a:0-1"), parse_modality("b:2-5")])


def test_sample_count_mismatch_between_keys(tmp_path):
    path = _write(tmp_path / "mm.h5", data_a=_signals(4, 2, 64, seed=1), data_b=_signals(5, 3, 128, seed=2),
                  label=np.arange(4))
    with pytest.raises(ValueError, match=r"mm\.h5: .*different numbers of samples.*'data_a': 4.*'data_b': 5"):
        MultiModalDataset(path, KEYED)


@pytest.mark.parametrize("flags", [np.ones(3), np.ones((4, 1)), np.ones(5)])
def test_present_flags_of_the_wrong_shape(tmp_path, flags):
    path = _write(tmp_path / "f.h5", data_a=_signals(4, 2, 64, seed=1), data_b=_signals(4, 3, 128, seed=2),
                  label=np.arange(4), present_b=flags)
    with pytest.raises(ValueError, match=r"f\.h5: 'present_b' has shape .*expected \[4\]"):
        MultiModalDataset(path, KEYED)


def test_data_that_is_not_three_dimensional(tmp_path):
    path = _write(tmp_path / "d.h5", data_a=_signals(4, 2, 64, seed=1), data_b=np.zeros((4, 128)), label=np.arange(4))
    with pytest.raises(ValueError, match=r"d\.h5: 'data_b' has shape \(4, 128\); expected 3-D .*modality 'b'"):
        MultiModalDataset(path, KEYED)


def test_duplicate_or_no_modalities(keyed):
    path = keyed[0]
    with pytest.raises(ValueError, match=r"distinct modality names, got \['a', 'a'\]"):
        MultiModalDataset(path, [Modality("a", key="data_a"), Modality("a", key="data_b")])
    with pytest.raises(ValueError, match="distinct modality names"):
        MultiModalDataset(path, [])
    with pytest.raises(ValueError, match="no HDF5 files"):
        MultiModalDataset("", KEYED)


def test_second_file_with_another_shape_names_it(tmp_path):
    p1 = _write(tmp_path / "one.h5", data_a=_signals(2, 2, 64, seed=1), data_b=_signals(2, 3, 128, seed=2),
                label=np.arange(2))
    p2 = _write(tmp_path / "two.h5", data_a=_signals(2, 2, 64, seed=3), data_b=_signals(2, 3, 96, seed=4),
                label=np.arange(2))
    with pytest.raises(ValueError, match=r"two\.h5: 'data_b'"):
        MultiModalDataset([p1, p2], KEYED)


def test_missing_file_names_it(tmp_path):
    missing = str(tmp_path / "missing.h5")
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        MultiModalDataset(missing, KEYED)


def test_file_that_is_not_hdf5_names_it(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("not hdf5")
    with pytest.raises(ValueError, match=r"notes\.h5"):
        MultiModalDataset(str(path), KEYED)


def test_partial_nan_in_a_present_sample_survives_normalize(tmp_path):
    data = _signals(2, 2, 64, seed=9)
    data[0, :, 10:12] = np.nan  # a short gap in both channels
    ds = MultiModalDataset(_write(tmp_path / "gap.h5", data=data, label=np.arange(2)), [parse_modality("a:0-1")],
                           normalize=True)
    x = ds[0][0]["a"].numpy()
    assert modality_present(torch.from_numpy(x)[None]).item()  # still present
    np.testing.assert_array_equal(np.isnan(x), np.isnan(data[0]))
    ref = (data[0] - np.nanmean(data[0], axis=-1, keepdims=True)) / np.nanstd(data[0], axis=-1, keepdims=True)
    np.testing.assert_allclose(x[~np.isnan(x)], ref[~np.isnan(ref)], rtol=1e-5, atol=1e-5)
