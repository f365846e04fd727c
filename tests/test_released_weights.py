"""The released PTB-XL-pretrained encoder (weights/physiowave-ptbxl100-cpu): a hub folder within 5 MB that states its
input contract, recipe and data fingerprint, loads with from_pretrained and starts a fine-tuning run."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import torch

import physiowave
from physiowave.engine import main

FOLDER = Path(__file__).resolve().parents[1] / "weights" / "physiowave-ptbxl100-cpu"


def test_folder_states_its_contract_recipe_and_data():
    size = sum(f.stat().st_size for f in FOLDER.iterdir())
    assert size <= 5e6, size
    config = json.loads((FOLDER / "config.json").read_text())
    inp = config["input"]
    assert (inp["fs"], inp["num_channels"], inp["length"], inp["normalize"]) == (100.0, 12, 250, "none")
    assert inp["channels"] == ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    training = config["training"]
    assert training["recipe"] == "physiowave"
    fp = training["data_fingerprint"]
    assert fp["records"] == 21837 and all(len(fp[k]) == 64 for k in ("ptbxl_database.csv", "records100"))
    assert config["architecture"]["embed_dim"] == 64 and config["architecture"]["input_norm"] == "rms"


def test_loads_and_encodes():
    model = physiowave.from_pretrained(str(FOLDER))
    x = torch.randn(2, 12, 250)
    with torch.no_grad():
        tokens = model.encode(x)
    assert tokens.shape == (2, 48 * 5, 64) and torch.isfinite(tokens).all()  # 12 leads × 4 bands × 5 patches
    assert not model.training


def test_fine_tuning_starts_from_it(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("val", 8)):
        with h5py.File(tmp_path / f"{split}.h5", "w") as f:
            f["data"] = rng.normal(0, 0.3, (n, 12, 250)).astype(np.float32)
            f["label"] = (rng.random((n, 5)) < 0.4).astype(np.float32)
    out = tmp_path / "ft"
    argv = ["--train_file", str(tmp_path / "train.h5"), "--val_file", str(tmp_path / "val.h5"), "--pretrained_path",
            str(FOLDER), "--epochs", "1", "--batch_size", "8", "--num_workers", "0", "--device", "cpu",
            "--output_dir", str(out)]
    assert main("multilabel", argv) == 0
    ckpt = torch.load(out / "best_model.pth", map_location="cpu", weights_only=False)
    loaded = ckpt["data"]["pretrained"]
    # every encoder tensor comes from the folder; only the new classification head starts fresh
    assert loaded["loaded"] > 100 and all(k.startswith("task_heads.classification.") for k in loaded["skipped"])
    assert loaded["loaded"] + len(loaded["skipped"]) == loaded["total"], loaded
