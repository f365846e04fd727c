"""SignalParams: the signal/window parameters of preprocessing, defined once (defaults, flags, checks) and read
back from checkpoints by the ``physiowave`` command."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict

import numpy as np
import pytest

from physiowave.preprocess.params import Preparation
from physiowave.preprocess.cli import build_parser, parse_args
from physiowave.preprocess.core import Source
from physiowave.preprocess.transform import process_recording
from physiowave.preprocess.params import SignalParams
from physiowave.preprocess.ptbxl import PTBXLSource
from physiowave.preprocess.readers import Recording
from physiowave.preprocess.signal import NORMALIZATIONS


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions}


def test_defaults_are_the_preprocessing_parser_defaults() -> None:
    actions = _actions(build_parser(Source))
    assert SignalParams.defaults() == {name: actions[name].default for name in SignalParams.names()}
    assert SignalParams.defaults() == {"channels": None, "target_fs": None, "bandpass": None, "notch": None,
                                       "max_nan_gap": 0.1, "normalize": "zscore", "norm_scope": "window",
                                       "window": 2048, "step": 1024, "tail": "pad", "min_real": 0.5}
    assert tuple(actions["normalize"].choices) == NORMALIZATIONS
    # the flags stay in their two groups, in this order, with the help texts of the dataclass fields
    groups = {g.title: [a.dest for a in g._group_actions] for g in build_parser(Source)._action_groups}
    assert groups["signal"] == ["channels", "target_fs", "bandpass", "notch", "max_nan_gap", "normalize", "norm_scope"]
    assert groups["windows"] == ["window", "step", "tail", "min_real"]


def test_data_set_defaults_still_override_and_reach_the_params() -> None:
    args = build_parser(PTBXLSource).parse_args(["--input", "x"])
    params = SignalParams.from_namespace(args)
    assert params.normalize == "minmax" and params.channels == PTBXLSource.defaults["channels"]
    assert params == SignalParams(**{k: getattr(args, k) for k in SignalParams.names()})


def test_parsed_flags_become_typed_params() -> None:
    args = build_parser(Source).parse_args(["--input", "x", "--channels", "I, II,aVF", "--bandpass", "0.5", "40",
                                            "--notch", "50", "--window", "1000", "--tail", "drop"])
    p = SignalParams.from_namespace(args)
    assert (p.channels, p.bandpass, p.notch, p.window, p.tail) == (["I", "II", "aVF"], [0.5, 40.0], 50.0, 1000, "drop")


def test_from_recorded_round_trip_ignores_unknown_keys_and_defaults_missing_ones() -> None:
    p = SignalParams(channels=["I", "II"], target_fs=250.0, bandpass=[0.5, 40.0], notch=60.0, max_nan_gap=0.2,
                     normalize="minmax", norm_scope="record", window=1000, step=500, tail="drop", min_real=0.25)
    recorded = json.loads(json.dumps({**asdict(p), "fs": 250.0, "source": "ptbxl", "label_regex": None}))
    assert SignalParams.from_recorded(recorded) == p
    assert SignalParams.from_recorded({"window": 1024, "other": 1}) == SignalParams(window=1024)
    assert SignalParams.from_recorded(None) == SignalParams() == SignalParams.from_recorded({})
    assert SignalParams.from_recorded({"window": 1024.0, "channels": [0, 1]}).window == 1024
    assert SignalParams.from_recorded({"channels": [0, 1]}).channels == ["0", "1"]


@pytest.mark.parametrize("change, flag", [
    ({"window": 0}, "--window"), ({"step": -1}, "--step"), ({"window": 2.5}, "--window"),
    ({"min_real": 0.0}, "--min_real"), ({"min_real": 1.5}, "--min_real"), ({"min_real": float("nan")}, "--min_real"),
    ({"bandpass": [5.0, 1.0]}, "--bandpass"), ({"bandpass": [-1.0, 40.0]}, "--bandpass"),
    ({"bandpass": [1.0]}, "--bandpass"), ({"target_fs": 0.0}, "--target_fs"), ({"target_fs": -5.0}, "--target_fs"),
    ({"max_nan_gap": -0.1}, "--max_nan_gap"), ({"max_nan_gap": float("inf")}, "--max_nan_gap"),
    ({"notch": 55.0}, "--notch"), ({"normalize": "robust"}, "--normalize"), ({"norm_scope": "file"}, "--norm_scope"),
    ({"tail": "wrap"}, "--tail"),
])
def test_check_names_the_flag_in_one_line(change: dict, flag: str) -> None:
    with pytest.raises(ValueError) as err:
        SignalParams(**change).check()
    message = str(err.value)
    assert message.startswith(flag + " ") or message.startswith(flag + ":")
    assert "\n" not in message


def test_check_accepts_the_defaults_and_edge_values() -> None:
    assert SignalParams().check() == SignalParams()
    SignalParams(min_real=1.0, max_nan_gap=0.0, bandpass=[0.0, 40.0], notch=50.0, target_fs=125.0).check()


def test_parse_args_reports_check_errors_naming_the_flag(tmp_path, capsys) -> None:
    for flags, flag in ((["--min_real", "2"], "--min_real"), (["--window", "0"], "--window"),
                        (["--target_fs", "-5"], "--target_fs"), (["--max_nan_gap", "-1"], "--max_nan_gap"),
                        (["--bandpass", "40", "0.5"], "--bandpass")):
        with pytest.raises(SystemExit):
            parse_args(Source, ["--input", str(tmp_path), *flags])
        assert flag in capsys.readouterr().err.strip().splitlines()[-1]
    assert parse_args(Source, ["--input", str(tmp_path), "--min_real", "1"]).min_real == 1.0


def test_process_recording_reads_signal_params_like_the_flags() -> None:
    rng = np.random.default_rng(0)
    rec = Recording(rng.standard_normal((3, 3000)).astype(np.float32), 500.0, ["a", "b", "c"])
    args = build_parser(Source).parse_args(["--input", "x", "--channels", "c,a", "--target_fs", "250",
                                            "--bandpass", "0.5", "40", "--window", "256", "--step", "200"])
    params = SignalParams.from_namespace(args)
    for got, want in zip(process_recording(rec, params), process_recording(rec, args)):
        np.testing.assert_array_equal(got, want)


def test_preparation_signal_args_are_signal_params_at_the_model_rate() -> None:
    prep = Preparation(fs=250.0, window=512, step=256, length=512, channels=["I"], bandpass=[0.5, 40.0])
    p = prep.signal_args()
    assert isinstance(p, SignalParams)
    assert (p.target_fs, p.window, p.step, p.channels, p.bandpass) == (250.0, 512, 256, ["I"], [0.5, 40.0])
    given = ("target_fs", "window", "step", "channels", "bandpass")
    assert {k: v for k, v in asdict(p).items() if k not in given} == \
        {k: v for k, v in SignalParams.defaults().items() if k not in given}
