"""Shareable model folders (physiowave.hub): save_pretrained / from_pretrained, ``physiowave convert``, the input
contract read by predict/embed/info, and loading through the Hugging Face Hub cache offline."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from physiowave import FusionModel, PhysioWave, from_pretrained, load_model, save_pretrained
from physiowave.cli import main as cli
from physiowave.inference import load_trained

from .test_cli import MYO, finetuned_myo

ROOT = Path(__file__).resolve().parents[1]
RECORDS = [str(MYO / "R_3_C_0_EMG.csv"), str(MYO / "R_3_C_1_EMG.csv")]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo's real Myo EMG recordings preprocessed by the CLI (200 Hz, 128-sample windows, record z-score), a
    1-epoch fine-tuned checkpoint, and that checkpoint converted to a folder."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("hub")
    h5 = finetuned_myo(root)
    ckpt = root / "ft" / "best_model.pth"
    folder = root / "folder"
    assert cli(["convert", str(ckpt), "-o", str(folder)]) == 0  # our checkpoint records fs: no flag needed
    return {"ckpt": ckpt, "folder": folder, "test": Path(h5["test"]), "root": root}


def _python(code: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _outputs_in_fresh_process(source: str, x_path: Path, out: Path, env_extra: dict | None = None) -> dict:
    """Load ``source`` with physiowave.from_pretrained in a new interpreter; logits of ``x_path`` to ``out``;
    returns what load_trained reads from it (class names, thresholds, task, preparation)."""
    code = f"""
import json, sys, numpy as np, torch
import physiowave
from physiowave.inference import load_trained
torch.set_num_threads(1)
model = physiowave.from_pretrained({source!r})
assert type(model).__name__ == 'PhysioWave'
assert not model.training
with torch.no_grad():
    np.save({str(out)!r}, model(torch.from_numpy(np.load({str(x_path)!r}))).numpy())
t = load_trained({source!r}, "cpu")
print(json.dumps({{"classes": t.class_names, "task": t.task, "assumed": t.assumed,
                  "thresholds": None if t.thresholds is None else t.thresholds.tolist(),
                  "preparation": t.preparation.as_dict()}}))
"""
    proc = _python(code, env_extra)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _real_windows(run: dict[str, Path], tmp_path: Path) -> tuple[torch.Tensor, Path]:
    with h5py.File(run["test"], "r") as f:
        x = f["data"][:32].astype(np.float32)
    path = tmp_path / "x.npy"
    np.save(path, x)
    return torch.from_numpy(x), path


# ------------------------------------------------------------------------------------------------- round trips
def test_fine_tuned_model_round_trips_bit_identically_in_a_fresh_process(run, tmp_path) -> None:
    x, x_path = _real_windows(run, tmp_path)
    reference = load_model(run["ckpt"])
    with torch.no_grad():
        expected = reference(x).numpy()
    trained = load_trained(run["ckpt"], "cpu")
    for folder in (run["folder"],
                   save_pretrained(reference, tmp_path / "api", fs=200.0, class_names=trained.class_names)):
        facts = _outputs_in_fresh_process(str(folder), x_path, tmp_path / "out.npy")
        np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)  # bit-identical
        assert facts["classes"] == trained.class_names == ["0", "1", "2", "3", "4"] and facts["task"] == "single"
    # the converted folder carries the checkpoint's whole preparation; nothing is assumed
    facts = _outputs_in_fresh_process(str(run["folder"]), x_path, tmp_path / "out.npy")
    assert facts["preparation"] == trained.preparation.as_dict() and facts["assumed"] == {}
    assert facts["thresholds"] is None and trained.thresholds is None


def test_folder_holds_safetensors_json_and_a_card_and_no_pickle(run) -> None:
    folder = run["folder"]
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert not list(folder.parent.glob(f".{folder.name}.*"))  # no temporary folder left
    weights = folder / "model.safetensors"
    assert weights.read_bytes()[:1] != b"\x80"  # not a pickle
    with safe_open(str(weights), "pt") as f:
        assert f.metadata()["format"] == "pt"
    state, own = load_file(str(weights)), load_model(run["ckpt"]).state_dict()
    assert state.keys() == own.keys() and all(torch.equal(state[k], own[k]) for k in own)
    config = json.loads((folder / "config.json").read_text())
    inp = config["input"]
    assert (inp["fs"], inp["num_channels"], inp["window"], inp["step"], inp["length"], inp["normalize"],
            inp["norm_scope"], inp["input_norm"], inp["input_fs"]) == (200.0, 8, 128, 48, 128, "zscore", "record",
                                                                       config["architecture"]["input_norm"], 200.0)
    assert config["model_type"] == "PhysioWave" and config["architecture"] == load_model(run["ckpt"]).config
    assert config["class_names"] == ["0", "1", "2", "3", "4"] and config["task"] == "single"
    training = config["training"]
    assert training["source"] == "best_model.pth" and training["epochs_completed"] == 1
    assert Path(training["data"]["train_files"][0]).name == "train.h5" and training["args"]["epochs"] == 1
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: physiowave") and "| sampling rate | 200 Hz" in card and "`4`" in card


def test_thresholds_and_multi_label_task_round_trip(tmp_path) -> None:
    model = PhysioWave(in_channels=2, max_level=2, wave_kernel_size=8, wavelet_names=["db4"], patch_size=16,
                       embed_dim=16, depth=1, num_heads=2, num_classes=3).eval()
    folder = save_pretrained(model, tmp_path / "m", fs=100.0, channels=["I", "II"], window=256, step=128,
                             task="multi", class_names=["AF", "LBBB", "NORM"], thresholds=[0.2, 0.5, 0.7])
    trained = load_trained(folder, "cpu")
    assert trained.task == "multi" and trained.class_names == ["AF", "LBBB", "NORM"]
    np.testing.assert_array_equal(trained.thresholds, [0.2, 0.5, 0.7])
    assert trained.preparation.channels == ["I", "II"] and trained.preparation.fs == 100.0
    assert trained.preparation.length == 256 and trained.assumed == {}
    assumed = json.loads((folder / "config.json").read_text())["assumed"]
    assert "normalize" in assumed and "fs" not in assumed and "window" not in assumed
    with pytest.raises(ValueError, match="3 names for a model with 2 input channels"):
        save_pretrained(model, tmp_path / "bad", fs=100.0, channels=["I", "II", "III"])
    assert not (tmp_path / "bad").exists()
    x = torch.randn(3, 2, 256)
    with torch.no_grad():
        assert torch.equal(from_pretrained(folder)(x), model(x))


def test_fusion_model_round_trips_and_is_refused_where_a_physiowave_is_expected(tmp_path) -> None:
    tiny = dict(max_level=2, wave_kernel_size=8, wavelet_names=["db4"], depth=1, num_heads=2, embed_dim=16)
    model = FusionModel({"ecg": PhysioWave(in_channels=2, patch_size=16, **tiny),
                         "emg": PhysioWave(in_channels=3, patch_size=32, **tiny)}, num_classes=3).eval()
    folder = save_pretrained(model, tmp_path / "f", class_names=["a", "b", "c"])
    loaded = from_pretrained(folder)
    assert isinstance(loaded, FusionModel)
    x = {"ecg": torch.randn(2, 2, 64), "emg": torch.randn(2, 3, 128)}
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert isinstance(load_model(folder), FusionModel)
    with pytest.raises(ValueError, match="holds a FusionModel"):
        from_pretrained(folder, expect=PhysioWave)


# ---------------------------------------------------------------------------------------------------- convert
def test_convert_of_an_original_checkpoint_requires_fs_then_gives_the_original_outputs(
        shared, tmp_path, capsys) -> None:
    ckpt, out = shared / "compat" / "ecg_small.pth", tmp_path / "ecg_small"
    assert cli(["convert", str(ckpt), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--fs" in err[0] and "sampling rate" in err[0]
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing written
    assert cli(["convert", str(ckpt), "-o", str(out), "--fs", "500", "--training_data", "the compat fixture"]) == 0
    model = load_model(out)
    expected = torch.load(shared / "compat" / "ecg_small_expected.pt", weights_only=True)
    x = expected["x"]
    with torch.no_grad():
        for ours, ref in ((model.decompose(x), expected["wavelet_spec"]), (model.encode(x), expected["features"]),
                          (model(x), expected["logits"])):
            assert ((ours - ref).abs().max() / ref.abs().max()).item() <= 1e-4
        assert torch.equal(model(x), load_model(ckpt)(x))
    config = json.loads((out / "config.json").read_text())
    assert config["input"]["fs"] == 500.0 and config["input"]["input_norm"] == "none"
    assert config["architecture"]["objective"] == "original" and "window" in config["assumed"]
    assert config["training"]["training_data"] == "the compat fixture"
    assert "the compat fixture" in (out / "README.md").read_text()


def test_convert_refuses_a_non_empty_output_unless_overwrite(run, tmp_path, capsys) -> None:
    out = tmp_path / "m"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert cli(["convert", str(run["ckpt"]), "-o", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    assert cli(["convert", str(run["ckpt"]), "-o", str(out), "--overwrite", "--class_names", "a,b,c,d,e"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert load_trained(out, "cpu").class_names == ["a", "b", "c", "d", "e"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # neither the temporary nor the old folder is left
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(["convert", str(run["ckpt"]), "-o", str(empty)]) == 0  # an empty folder is fine


def test_a_folder_that_is_not_a_model_is_one_line(tmp_path, capsys) -> None:
    assert cli(["info", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no config.json" in err


# ------------------------------------------------------------------------------------------ predict/embed/info
def test_predict_embed_and_info_on_the_folder_equal_those_on_the_checkpoint(run, tmp_path, capsys) -> None:
    for name, source in (("ckpt", run["ckpt"]), ("folder", run["folder"])):
        assert cli(["predict", str(source), *RECORDS, "-o", str(tmp_path / f"{name}.csv"), "--per_window"]) == 0
        assert cli(["embed", str(source), *RECORDS, "-o", str(tmp_path / f"{name}.npy")]) == 0
    assert (tmp_path / "folder.csv").read_text() == (tmp_path / "ckpt.csv").read_text()
    np.testing.assert_array_equal(np.load(tmp_path / "folder.npy"), np.load(tmp_path / "ckpt.npy"))
    capsys.readouterr()
    summaries = []
    for source in (run["ckpt"], run["folder"]):
        assert cli(["info", str(source), "--json"]) == 0
        summaries.append(json.loads(capsys.readouterr().out))
    ckpt, folder = summaries
    for key in ("architecture", "parameters", "task", "classes", "preprocessing", "assumed"):
        assert folder[key] == ckpt[key], key
    assert folder["training"]["epoch"] == ckpt["training"]["epoch"] and folder["source"] == "best_model.pth"
    assert cli(["info", str(run["folder"])]) == 0 and "a model folder" in capsys.readouterr().out


def test_an_input_contract_flag_still_overrides_the_folder(run, tmp_path) -> None:
    trained = load_trained(run["folder"], "cpu", window=64, step=64, length=64)
    assert (trained.preparation.window, trained.preparation.length, trained.preparation.fs) == (64, 64, 200.0)


# ----------------------------------------------------------------------------------------------------- the hub
def test_repo_id_loads_from_the_hub_cache_offline(run, tmp_path) -> None:
    cache = tmp_path / "hf" / "hub"
    repo = cache / "models--physiowave-test--tiny-emg"
    snapshot = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(run["folder"], snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot.name)
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    x, x_path = _real_windows(run, tmp_path)
    facts = _outputs_in_fresh_process("physiowave-test/tiny-emg", x_path, tmp_path / "out.npy", env)
    with torch.no_grad():
        np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), load_model(run["ckpt"])(x).numpy())
    assert facts["classes"] == ["0", "1", "2", "3", "4"] and facts["preparation"]["fs"] == 200.0
    # the command takes the repo id too, and predicts as from the checkpoint
    out = tmp_path / "hub.csv"
    proc = _python(f"from physiowave.cli import main; raise SystemExit(main(['predict', 'physiowave-test/tiny-emg', "
                   f"{RECORDS!r}[0], '-o', {str(out)!r}, '--per_window']))", env)
    assert proc.returncode == 0, proc.stderr
    assert cli(["predict", str(run["ckpt"]), RECORDS[0], "-o", str(tmp_path / "ckpt.csv"), "--per_window"]) == 0
    assert out.read_text() == (tmp_path / "ckpt.csv").read_text()
    # a repo id that is not cached is one line, naming the repo
    proc = _python("from physiowave.cli import main; raise SystemExit(main(['info', 'physiowave-test/absent']))", env)
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0 and "physiowave-test/absent" in proc.stderr
