"""Every user error of the training scripts is one line, found before the first training step, with nothing written;
a run owns its output folder."""
from __future__ import annotations

import errno
import importlib
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from physiowave.engine import main
from physiowave.engine.outputs import write_checkpoint

from .conftest import lock_held_by_another_process
from .test_engine import TINY, _errors, _toy, _write


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("checks")
    x, y = _toy(40, 0)
    xv, yv = _toy(12, 1)
    multi = np.eye(3, dtype=np.float32)[y]
    out = {"train": _write(d / "train.h5", x, y), "val": _write(d / "val.h5", xv, yv)}
    out["val_label3"] = _write(d / "val3.h5", xv, np.where(yv == 0, 3, yv))
    xn = xv.copy()
    xn[5, 1, 100] = np.nan
    out["val_nan"] = _write(d / "valnan.h5", xn, yv)
    out["val_empty"] = _write(d / "valempty.h5", xv[:0], yv[:0])
    out["five"] = _write(d / "five.h5", x[:5], y[:5])
    out["ml_train"] = _write(d / "mltrain.h5", x, multi)
    out["ml_val4"] = _write(d / "mlval4.h5", xv, np.eye(4, dtype=np.float32)[yv])
    with h5py.File(d / "two_keys.h5", "w") as f:
        f["data"], f["data_emg"], f["label"] = x, x[:, :2], y
    out["two_keys"] = str(d / "two_keys.h5")
    (d / "notes.pth").write_text("not a checkpoint\n")
    out["not_ckpt"] = str(d / "notes.pth")
    typo = y.copy()
    typo[3] = 99
    out["label99"] = _write(d / "label99.h5", x, typo)
    out["one_class"] = _write(d / "zeros.h5", x, np.zeros_like(y))
    for n in (3, 5):  # class names stored for the 3 classes, and for 5 (2 without a sample)
        out[f"named{n}"] = _write(d / f"named{n}.h5", x, y)
        with h5py.File(out[f"named{n}"], "a") as f:
            f.attrs["class_names"] = [f"c{k}" for k in range(n)]
    return out


@pytest.fixture(scope="module")
def runs(files, tmp_path_factory) -> dict[str, Path]:
    """A pretraining, a single-label and a multi-label run (1 epoch each)."""
    d = tmp_path_factory.mktemp("runs")
    assert main("pretrain", ["--train_files", files["train"], "--epochs", "1", "--batch_size", "16",
                             "--output_dir", str(d / "pre"), *TINY]) == 0
    assert main("finetune", ["--train_file", files["train"], "--val_file", files["val"], "--test_file", files["val"],
                             "--epochs", "1", "--batch_size", "16", "--output_dir", str(d / "ft"), *TINY]) == 0
    assert main("multilabel", ["--train_file", files["ml_train"], "--val_file", files["ml_train"], "--epochs", "1",
                               "--batch_size", "16", "--output_dir", str(d / "ml"), *TINY]) == 0
    return {"pre": d / "pre", "ft": d / "ft", "ml": d / "ml"}


def _fails(script: str, argv: list[str], expect: str, capsys) -> str:
    code = None
    try:
        code = main(script, argv)
    except SystemExit as exit_:  # argparse's one-line errors
        code = exit_.code
    captured = capsys.readouterr().err
    err = _errors(captured) or [line for line in captured.splitlines() if "error:" in line]
    assert code == 1 and len(err) == 1 and "Traceback" not in captured and "usage:" not in captured, captured[-2000:]
    assert expect in err[0], err[0]
    assert "weights_only" not in captured
    return err[0]


FT = ["--epochs", "1", "--batch_size", "16", *TINY]

CASES = {
    # name: (script, argv builder, expected text)
    "val label outside the classes": ("finetune", lambda f,
                                      o: ["--train_file", f["train"], "--val_file", f["val_label3"]],
                                      "labels go up to 3, but the model has 3 classes"),
    "multilabel K=4 vs 3": ("multilabel", lambda f, o: ["--train_file", f["ml_train"], "--val_file", f["ml_val4"]],
                            "have 4 labels each, the model has 3"),
    "NaN in validation": ("finetune", lambda f, o: ["--train_file", f["train"], "--val_file", f["val_nan"]], "NaN"),
    "empty validation": ("finetune", lambda f, o: ["--train_file", f["train"], "--val_file", f["val_empty"]],
                         "the val set has no samples"),
    "automatic split leaves no validation": ("finetune", lambda f, o: ["--train_file", f["five"]],
                                             "--val_split_ratio 0.1 of its 5 samples holds out none for validation"),
    "data key typo": ("finetune", lambda f, o: ["--train_file", f["two_keys"], "--data_key", "data_eemg"],
                      "no dataset 'data_eemg' (the file has: data, data_emg, label)"),
    "label key typo": ("finetune", lambda f, o: ["--train_file", f["two_keys"], "--label_key", "labl"],
                       "no dataset 'labl'"),
    "patch size 0": ("finetune", lambda f, o: ["--train_file", f["train"], "--patch_size", "0"],
                     "--patch_size must be ≥ 1"),
    "negative lr": ("finetune", lambda f, o: ["--train_file", f["train"], "--lr", "-1"], "--lr must be ≥ 0"),
    "val_split_ratio 1": ("finetune", lambda f, o: ["--train_file", f["train"], "--val_split_ratio", "1"],
                          "--val_split_ratio must be in [0, 1)"),
    "mask ratio 0": ("pretrain", lambda f, o: ["--train_files", f["train"], "--mask_ratio", "0"],
                     "--mask_ratio must be in (0, 1)"),
    "unknown select metric": ("finetune", lambda f, o: ["--train_file", f["train"], "--val_file", f["val"],
                                                        "--select_metric", "bogus"], "--select_metric bogus"),
    "compile on cpu": ("pretrain", lambda f, o: ["--train_files", f["train"], "--compile"],
                       "--compile needs a CUDA device"),
    "cuda without cuda": ("finetune", lambda f, o: ["--train_file", f["train"], "--device", "cuda"],
                          "CUDA is not available"),
    "not a checkpoint": ("finetune", lambda f, o: ["--train_file", f["train"], "--pretrained_path", f["not_ckpt"]],
                         "not a PyTorch checkpoint"),
    "output is a file": ("finetune", lambda f, o: ["--train_file", f["train"], "--output_dir", f["train"]],
                         "is a file"),
    "empty output folder": ("finetune", lambda f, o: ["--train_file", f["train"], "--output_dir", ""],
                            "--output_dir is empty"),
    "resume and overwrite": ("finetune", lambda f, o: ["--train_file", f["train"], "--resume", "auto", "--overwrite"],
                             "--resume continues the folder's run and --overwrite deletes it"),
    "probe of a random encoder": ("finetune", lambda f, o: ["--train_file", f["train"], "--freeze_encoder"],
                                  "without --pretrained_path the encoder is random"),
    "max level 50": ("pretrain", lambda f, o: ["--train_files", f["train"], "--max_level", "50"],
                     "--max_level must be in [0, 12], got 50"),
    "max length beyond the samples": ("finetune", lambda f, o: ["--train_file", f["train"], "--max_length", "1000000"],
                                      "--max_length 1000000: expected 1..65536"),
    "label typo 99": ("finetune", lambda f, o: ["--train_file", f["label99"], "--val_file", f["val"]],
                      "labels go up to 99 but classes 3, 4, 5"),
    "one class": ("finetune", lambda f, o: ["--train_file", f["one_class"], "--val_file", f["one_class"]],
                  "every training label is 0"),
    "no training file without --eval": ("finetune", lambda f, o: ["--val_file", f["val"]],
                                        "required: --train_file (only --eval runs without training data)"),
    "more class names than classes": ("finetune", lambda f, o: ["--train_file", f["named5"], "--val_file", f["val"]],
                                      "names 5 classes, the model has 3 outputs (labels 0..2): pass --num_classes 5"),
    "eval without a val file": ("finetune", lambda f,
                                o: ["--train_file", f["train"], "--eval", "--resume", f["not_ckpt"]],
                                "--eval without --val_file"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_user_error_is_one_line_before_any_step_and_writes_nothing(case, files, tmp_path, capsys):
    script, build, expect = CASES[case]
    out = tmp_path / "out"
    argv = [*FT, "--output_dir", str(out), *build(files, out)]
    if case == "cuda without cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    _fails(script, argv, expect, capsys)
    assert not out.exists()


def test_default_shape_on_power_of_two_windows_names_the_fix(files, tmp_path, capsys):
    """The default --model base has patch 20 (the original pretrain.py's): 256-sample windows (2048 alike) are
    refused before any step, with the two lengths that work."""
    with h5py.File(files["train"]) as f:
        assert f["data"].shape[-1] == 256
    out = tmp_path / "out"
    _fails("finetune", ["--train_file", files["train"], "--val_file", files["val"], "--epochs", "1", "--num_workers",
                        "0", "--device", "cpu", "--output_dir", str(out)],
           "samples are 256 long, not a multiple of the patch size 20: pass --max_length 240 or 260", capsys)
    assert not out.exists()


def test_read_only_output_folder(files, tmp_path, monkeypatch, capsys):
    import physiowave.engine.outputs as outputs

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # root ignores chmod
    monkeypatch.setattr(outputs.os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))
    _fails("finetune", ["--train_file", files["train"], *FT, "--output_dir", str(locked / "run")],
           f"{locked} is not writable", capsys)
    assert not (locked / "run").exists()


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 1024 vs 960")])
def test_full_disk_is_named_and_leaves_the_previous_file(error, tmp_path, monkeypatch):
    import physiowave.engine.outputs as outputs

    path = tmp_path / "latest.pth"
    write_checkpoint({"a": 1}, path)
    before = path.read_bytes()

    def failing(obj, p):
        Path(str(p) + ".tmp").write_bytes(b"partial")
        raise error

    monkeypatch.setattr(outputs, "save_checkpoint", failing)
    with pytest.raises(ValueError, match="the disk is full"):
        write_checkpoint({"a": 2}, path)
    assert path.read_bytes() == before and not (tmp_path / "latest.pth.tmp").exists()


# ----------------------------------------------------------------------------------------------- checkpoints vs scripts
def test_checkpoint_of_another_task_is_refused(files, runs, tmp_path, capsys):
    evaluate = ["--eval", "--num_workers", "0", "--device", "cpu"]
    _fails("finetune", ["--train_file", files["train"], "--val_file", files["val"], "--resume",
                        str(runs["ml"] / "best_model.pth"), *evaluate, "--output_dir", str(tmp_path / "a")],
           "a multilabel checkpoint, which finetune_multilabel.py continues", capsys)
    _fails("multilabel", ["--train_file", files["ml_train"], "--val_file", files["ml_train"], "--resume",
                          str(runs["ft"] / "best_model.pth"), *evaluate, "--output_dir", str(tmp_path / "b")],
           "a classification checkpoint, which finetune.py continues", capsys)
    _fails("finetune", ["--train_file", files["train"], "--resume", str(runs["pre"] / "best_model.pth"), *FT,
                        "--output_dir", str(tmp_path / "c")],
                        "a pretraining checkpoint; fine-tune from it with --pretrained_path",
           capsys)
    assert not any((tmp_path / n).exists() for n in "abc")


def test_eval_of_the_right_kind_works(files, runs, tmp_path):
    out = tmp_path / "eval"
    assert main("multilabel", ["--train_file", files["ml_train"], "--val_file", files["ml_train"], "--test_file",
                               files["ml_train"], "--resume", str(runs["ml"] / "best_model.pth"), "--eval",
                               "--num_workers", "0", "--device", "cpu", "--output_dir", str(out)]) == 0
    assert "thresholds" in json.loads((out / "test_results.json").read_text())


def test_eval_needs_no_training_file(files, runs, tmp_path):
    """--eval takes the classes from the checkpoint and the shape from --val_file: the same results as with
    --train_file."""
    common = ["--val_file", files["val"], "--resume", str(runs["ft"] / "best_model.pth"), "--eval",
              "--num_workers", "0", "--device", "cpu"]
    assert main("finetune", [*common, "--output_dir", str(tmp_path / "without")]) == 0
    assert main("finetune", [*common, "--train_file", files["train"], "--output_dir", str(tmp_path / "with")]) == 0
    without, with_ = (json.loads((tmp_path / d / "val_results.json").read_text()) for d in ("without", "with"))
    assert without["confusion_matrix"] == with_["confusion_matrix"] and without["loss"] == with_["loss"]


def test_num_classes_beyond_the_stored_class_names_names_the_others(files, tmp_path, capsys):
    """--num_classes 5 on a file naming 3 classes: the head has 5 outputs, the two unnamed ones are class_3, class_4."""
    argv = ["--train_file", files["named3"], "--val_file", files["val"], "--num_classes", "5", *FT,
            "--output_dir", str(tmp_path / "o"), "--dry_run"]
    assert main("finetune", argv) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["config"]["data"]["class_names"] == ["c0", "c1", "c2", "class_3", "class_4"]
    assert "names 3 classes and the model has 5: the others are called class_3, class_4" in captured.err


# ----------------------------------------------------------------------------------------------- output folders
def test_pretrained_checkpoint_inside_the_output_folder_is_refused(files, runs, capsys):
    before = (runs["pre"] / "best_model.pth").read_bytes()
    _fails("finetune", ["--train_file", files["train"], *FT, "--pretrained_path", str(runs["pre"] / "best_model.pth"),
                        "--output_dir", str(runs["pre"]), "--overwrite"], "the checkpoint this run starts from", capsys)
    assert (runs["pre"] / "best_model.pth").read_bytes() == before


def test_a_folder_with_another_run_is_refused_unless_overwritten(files, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--train_file", files["train"], "--val_file", files["val"], *FT, "--output_dir", str(out)]
    assert main("finetune", [*argv, "--test_file", files["val"]]) == 0
    assert (out / "test_results.json").is_file()
    first = (out / "best_model.pth").read_bytes()
    _fails("finetune", argv, "holds another run", capsys)
    assert (out / "best_model.pth").read_bytes() == first
    assert main("finetune", [*argv, "--overwrite", "--seed", "1"]) == 0  # no --test_file this time
    assert not (out / "test_results.json").exists()  # the first run's results do not sit beside the new model
    assert (out / "best_model.pth").read_bytes() != first


def test_resume_auto_continues_its_own_folder(files, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--train_file", files["train"], "--val_file", files["val"], "--batch_size", "16", *TINY, "--output_dir",
            str(out)]
    assert main("finetune", [*argv, "--epochs", "1", "--scheduler", "step"]) == 0
    assert main("finetune", [*argv, "--epochs", "2", "--scheduler", "step", "--resume", "auto"]) == 0
    assert json.loads((out / "training_history.json").read_text())["epoch"] == [1, 2]
    # a cosine schedule's shape depends on --epochs: more epochs would not continue the same run
    cos = tmp_path / "cos"
    assert main("finetune", [*argv[:-1], str(cos), "--epochs", "1"]) == 0
    _fails("finetune", [*argv[:-1], str(cos), "--epochs", "2", "--resume", "auto"],
           "--epochs 2: the run being resumed", capsys)


RESUME_CHANGES = {  # flag → the changed value (the run was saved with the defaults of FT)
    "--batch_size": "8", "--seed": "7", "--lr": "0.01", "--label_fraction": "0.5", "--scheduler": "linear",
}


@pytest.mark.parametrize("flag", sorted(RESUME_CHANGES))
def test_resume_refuses_a_setting_that_changes_the_trajectory(flag, files, runs, capsys):
    ckpt = runs["ft"] / "latest_model.pth"
    before = ckpt.read_bytes()
    value = RESUME_CHANGES[flag]
    line = _fails("finetune", ["--train_file", files["train"], "--val_file", files["val"], *FT, "--output_dir",
                               str(runs["ft"]), "--resume", "auto", flag, value],
                               f"{flag} {value}: the run being resumed", capsys)
    assert "was saved with" in line
    assert ckpt.read_bytes() == before


def test_resume_refuses_other_training_data(files, tmp_path, capsys):
    x, y = _toy(40, 0)
    data = Path(_write(tmp_path / "train.h5", x, y))
    out = tmp_path / "run"
    argv = ["--train_file", str(data), "--val_file", files["val"], *FT, "--output_dir", str(out)]
    assert main("finetune", argv) == 0
    copy = tmp_path / "copy.h5"
    copy.write_bytes(data.read_bytes())  # a copy (node-local cache, another path) is the same data
    assert main("finetune", [*argv[:1], str(copy), *argv[2:], "--resume", "auto"]) == 0
    _write(data, x[::-1].copy(), y[::-1].copy())  # rewritten in place: same name, other order
    _fails("finetune", [*argv, "--resume", "auto"], "train.h5 is not the training data the run being resumed", capsys)


# ----------------------------------------------------------------------------------------------- lengths and NaN
def test_pretraining_takes_the_stored_length(files, tmp_path, capsys):
    out = tmp_path / "pre"
    # 256 samples, patch 32
    assert main("pretrain", ["--train_files", files["train"], *FT, "--output_dir", str(out)]) == 0
    assert json.loads((out / "args.json").read_text())["data"]["length"] == 256


def test_nonfinite_loss_names_its_possible_causes(files, tmp_path, capsys):
    x, _ = _toy(20, 5)
    x[7, 0, 10] = np.nan
    bad = _write(tmp_path / "bad.h5", x)
    err = _fails("pretrain", ["--train_files", bad, *FT, "--output_dir", str(tmp_path / "o"), "--no-check_data"],
                 "non-finite loss", capsys)
    assert "not checked (--no-check_data)" in err and "No checkpoint was written" in err
    _fails("pretrain", ["--train_files", bad, *FT, "--output_dir", str(tmp_path / "p")], "sample 7 has NaN", capsys)


# ----------------------------------------------------------------------------------------------- model settings
def test_new_runs_get_the_new_model_settings_and_the_model_preset(files, runs, tmp_path, capsys):
    pre = json.loads((runs["pre"] / "args.json").read_text())["model_config"]
    assert (pre["input_norm"], pre["objective"], pre["decoder"]) == ("rms", "bands", "transformer")
    ft = json.loads((runs["ft"] / "args.json").read_text())["model_config"]
    assert (ft["input_norm"], ft["objective"], ft["pooling"]) == ("rms", "bands", "bands")
    out = tmp_path / "emg"
    argv = ["--train_file", files["train"], "--val_file", files["val"], "--epochs", "1", "--batch_size", "16",
            "--num_workers", "0", "--device", "cpu", "--model", "emg", "--embed_dim", "32", "--depth", "1",
            "--num_heads", "4", "--max_level", "2"]
    assert main("finetune", [*argv, "--output_dir", str(out)]) == 0
    cfg = json.loads((out / "args.json").read_text())["model_config"]
    assert cfg["wavelet_names"] == ["sym4", "sym5", "db6", "coif3", "bior4.4"] and cfg["patch_size"] == 64
    assert cfg["in_channels"] == 4 and cfg["embed_dim"] == 32  # the data's channels; flags over the preset
    _fails("finetune", ["--train_file", files["train"], "--num_workers", "0", "--device", "cpu", "--pretrained_path",
                        str(runs["pre"] / "best_model.pth"), "--model", "emg", "--output_dir", str(tmp_path / "x")],
           "--model emg contradicts the checkpoint", capsys)
    _fails("finetune", ["--train_file", files["train"], "--val_file", files["val"], "--batch_size", "16", *TINY,
                        "--epochs", "2", "--resume", str(runs["ft"] / "latest_model.pth"), "--dropout", "0.3",
                        "--output_dir", str(tmp_path / "y")], "--dropout 0.3 contradicts the checkpoint", capsys)


def test_eval_never_writes_into_the_folder_of_the_run_it_evaluates(files, runs, capsys):
    before = (runs["ft"] / "args.json").read_text()
    _fails("finetune", ["--train_file", files["train"], "--val_file", files["val"], "--resume",
                        str(runs["ft"] / "best_model.pth"), "--eval", "--overwrite", "--num_workers", "0", "--device",
                        "cpu", "--output_dir", str(runs["ft"])], "the checkpoint this run starts from", capsys)
    assert (runs["ft"] / "args.json").read_text() == before and (runs["ft"] / "best_model.pth").is_file()


def test_resume_auto_takes_over_a_run_that_never_checkpointed(files, tmp_path, capsys):
    out = tmp_path / "requeued"
    out.mkdir()
    (out / "args.json").write_text("{}")  # a run killed before its first checkpoint
    argv = ["--train_file", files["train"], "--val_file", files["val"], *FT, "--output_dir", str(out)]
    _fails("finetune", argv, "pass --resume auto to continue it, --overwrite to replace it", capsys)
    assert main("finetune", [*argv, "--resume", "auto"]) == 0
    assert json.loads((out / "args.json").read_text())["resume"] == "auto"


def test_compile_compiles_the_regions_of_the_trained_model(files, runs, tmp_path, monkeypatch):
    """--compile (CUDA only) reaches the model the engine trains: allowed on CPU here, with torch.compile's eager
    backend (the CPU's inductor cannot compile the decomposition's backward; test_model checks the compiled
    function), the run trains and its checkpoint has the names of a plain run's."""
    from physiowave.models import PhysioWave

    engine_main = importlib.import_module("physiowave.engine.main")  # the package exports the function main

    compiled = []
    plain = PhysioWave.compile_regions

    def compile_regions(self, **kwargs):
        compiled.append(self)
        return plain(self, backend="eager")

    monkeypatch.setattr(engine_main, "COMPILE_DEVICES", ("cuda", "cpu"))
    monkeypatch.setattr(PhysioWave, "compile_regions", compile_regions)
    out = tmp_path / "compiled"
    assert main("pretrain", ["--train_files", files["train"], "--epochs", "1", "--batch_size", "20", "--compile",
                             "--output_dir", str(out), *TINY]) == 0
    assert len(compiled) == 1 and compiled[0].encoder.blocks[0]._compiled_call_impl is not None
    state = torch.load(out / "latest_checkpoint.pth", weights_only=True)["model_state_dict"]
    reference = torch.load(runs["pre"] / "latest_checkpoint.pth", weights_only=True)["model_state_dict"]
    assert list(state) == list(reference)
    assert json.loads((out / "args.json").read_text())["compile"] is True


def test_long_training_records_cropped_to_the_evaluation_windows(files, tmp_path, capsys):
    """Training on random --max_length crops of longer records, evaluating on windows of that length (the PTB-XL
    protocol: 10 s records, 2.5 s windows) runs; other channels are still refused."""
    x, y = _toy(24, 3, T=512)
    long_train = _write(tmp_path / "long.h5", x, y)
    argv = ["--train_file", long_train, "--val_file", files["val"], "--max_length", "256", *FT]
    assert main("finetune", argv + ["--output_dir", str(tmp_path / "ok")]) == 0
    xv, yv = _toy(8, 4, C=3)
    three = _write(tmp_path / "three.h5", xv, yv)
    _fails("finetune", ["--train_file", long_train, "--val_file", three, "--max_length", "256", *FT,
                        "--output_dir", str(tmp_path / "bad")], "val samples are 3×256, training samples 4×256", capsys)


def test_val_every_validates_every_n_epochs_and_the_last(files, tmp_path):
    out = tmp_path / "every"
    argv = ["--train_file", files["train"], "--val_file", files["val"], "--val_every", "2", "--epochs", "3",
            "--batch_size", "16", *TINY, "--output_dir", str(out)]
    assert main("finetune", argv) == 0
    history = json.loads((out / "training_history.json").read_text())
    rows = history if isinstance(history, list) else [dict(zip(history, v)) for v in zip(*history.values())]
    validated = [r["epoch"] for r in rows if r.get("val_loss") is not None]
    assert validated == [2, 3], rows
    best = torch.load(out / "best_model.pth", map_location="cpu", weights_only=False)
    assert best["epoch"] + 1 in validated


def test_resume_auto_with_pretrained_path_starts_then_continues(files, runs, tmp_path, capsys):
    """What a retried or requeued job passes every time: --pretrained_path P --resume auto. An empty folder starts
    from P; a folder with a run continues it; another P than the run started from is refused."""
    out = tmp_path / "ft"
    pre = str(runs["pre"] / "best_model.pth")
    base = ["--train_file", files["train"], "--val_file", files["val"], "--batch_size", "16", *TINY,
            "--output_dir", str(out), "--pretrained_path", pre, "--resume", "auto", "--scheduler", "step"]
    assert main("finetune", base + ["--epochs", "1"]) == 0
    first = "".join(capsys.readouterr())
    assert "resuming from" not in first and f"from {pre}" in first
    assert main("finetune", base + ["--epochs", "2"]) == 0
    assert "resuming from" in "".join(capsys.readouterr())
    other = tmp_path / "other.pth"
    other.write_bytes(Path(pre).read_bytes())
    argv = [a if a != pre else str(other) for a in base] + ["--epochs", "3"]
    _fails("finetune", argv, "resuming it from another one would mix two runs", capsys)
    _fails("finetune", [a if a != "auto" else str(out / "latest_model.pth") for a in base] + ["--epochs", "3"],
           "--pretrained_path starts a new one", capsys)


# ----------------------------------------------------------------------------------------------- one run per folder
def test_a_folder_another_process_is_writing_is_refused_and_a_killed_ones_lock_is_free(files, tmp_path, capsys):
    import signal
    out = tmp_path / "run"
    with lock_held_by_another_process(out) as holder:
        argv = ["--train_file", files["train"], "--val_file", files["val"], *FT, "--output_dir", str(out)]
        _fails("finetune", argv, "another run is writing to this folder now", capsys)
        assert list(out.iterdir()) == []  # the refused run wrote nothing
        holder.send_signal(signal.SIGKILL)  # a killed run leaves no lock behind
        holder.wait(timeout=30)
        assert main("finetune", argv) == 0


def test_a_refused_run_leaves_no_folder_behind(files, tmp_path, capsys):
    out = tmp_path / "new" / "run"
    _fails("finetune",
           ["--train_file", files["train"], "--val_file", files["val_label3"], *FT, "--output_dir", str(out)],
           "labels go up to 3", capsys)
    assert not out.exists()


def test_the_log_says_what_the_run_trains_on_and_warns_about_shared_files(files, tmp_path, capsys):
    argv = ["--train_file", files["train"], "--val_file", files["train"], *FT, "--output_dir", str(tmp_path / "o"),
            "--label_fraction", "0.001", "--dry_run"]
    with pytest.warns(UserWarning, match="is given as both --train_file and --val_file: the val scores are not held"):
        assert main("finetune", argv) == 0
    err = capsys.readouterr().err
    assert "training samples per class: 0: 1, 1: 1, 2: 1" in err  # at least one per class: said, with the share
    assert "--label_fraction 0.001 (drawn by sample): kept 3 of 40 samples (7.5 %)" in err


@pytest.mark.parametrize("task", ["pretrain", "finetune", "multilabel"])
def test_help_shows_defaults_and_the_current_name(task):
    from physiowave.engine.args import build_parser

    text = " ".join(build_parser(task).format_help().split())
    assert "PhysioWave" in text and "BERT" not in text
    assert f"--epochs EPOCHS training epochs (default: {100 if task == 'pretrain' else 30})" in text
    assert "--seed SEED seed of every random draw (weights, splits, batches, masks) (default: 42)" in text


def test_requirements_txt_lists_the_dependencies_of_pyproject():
    import tomllib

    root = Path(__file__).resolve().parents[1]
    wanted = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    listed = [line.strip() for line in (root / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert sorted(listed) == sorted(wanted)
