"""The SLURM templates (``slurm/``), executed through fake ``sbatch``/``srun``/``scontrol`` (``tests/fake_slurm``: they
set the SLURM variables and run the job here): a two-node pretraining job that gets its time-limit signal, stops,
requeues itself and finishes; a one-node fine-tuning job; and the batch rule's one-line refusal."""
from __future__ import annotations

import json
import os
import sys
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from .test_engine import ROOT, TINY, _history, _toy, _write
from .test_multinode import _free_port

FAKE = Path(__file__).resolve().parent / "fake_slurm"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="the templates are bash scripts")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("slurm_data")
    return {name: _write(d / f"{name}.h5", *_toy(n, seed)) for name, n, seed in
            (("train", 48, 0), ("val", 11, 1), ("test", 13, 2))}


def _sbatch(template: str, tmp_path: Path, env: dict[str, str], *args: str, timeout: float = 240) -> tuple[int, str]:
    """``sbatch [--key=value...] slurm/TEMPLATE ARGS`` through the fakes, from the repository root → status, log."""
    log = tmp_path / "job.out"
    sbatch_opts = [a for a in args if a.startswith("--nodes=")]
    script_args = [a for a in args if not a.startswith("--nodes=")]
    full_env = {**os.environ, "PATH": f"{FAKE}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
                "OMP_NUM_THREADS": "1", "GPUS_PER_NODE": "1", "RDZV_PORT": str(_free_port()),
                "FAKE_SLURM_JOB_ID": "4242", "PHYSIOWAVE_DIR": str(ROOT),
                "PYTHON": os.environ.get("PYTHON", sys.executable), **env}
    proc = subprocess.run([str(FAKE / "sbatch"), *sbatch_opts, f"--output={log}", f"slurm/{template}", *script_args],
                          cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, (log.read_text() if log.exists() else "") + proc.stderr


def test_pretrain_on_two_nodes_stops_at_the_time_limit_signal_requeues_and_finishes(files, tmp_path):
    out, cache = tmp_path / "run", tmp_path / "node-local"
    env = {"TRAIN_FILES": files["train"], "VAL_FILES": files["val"], "OUTPUT_DIR": str(out), "GLOBAL_BATCH": "8",
           "LR": "1e-3", "CACHE_DATA": "1", "CACHE_DIR": str(cache),
           # the fake sbatch's stand-in for "300 s before the time limit": once the first step checkpoint exists
           "FAKE_SLURM_SIGNAL_WHEN": str(out / "latest_checkpoint.pth")}
    status, log = _sbatch("pretrain.sbatch", tmp_path, env, "--nodes=2", "--epochs", "2", "--save_every_steps", "1",
                          "--max_length", "256", "--mask_ratio", "0.5", *TINY)
    assert status == 0, log[-4000:]
    assert "global batch 8 = 4 per GPU × 2 GPU(s) × 1 accumulation" in log, log[-4000:]
    assert "got SIGUSR1" in log and "requeueing" in log and "restart 1" in log, log[-4000:]
    assert "stopped: SIGUSR1" in log and "resuming from" in log, log[-4000:]  # stopped mid-run, continued from there
    assert "(exit status 138)" in log, log[-4000:]  # 128 + SIGUSR1
    # the stopped run's checkpoint was a step checkpoint; the requeued run finished both epochs
    ckpt = torch.load(out / "latest_checkpoint.pth", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 2 * 6 and len(_history(out)["epoch"]) == 2
    args = json.loads((out / "args.json").read_text())
    # read from node-local copies
    assert args["train_files"] == str(cache / "train.h5") and (cache / "val.h5").is_file()


def test_finetune_on_one_node(files, tmp_path):
    out = tmp_path / "run"
    env = {"TRAIN_FILE": files["train"], "VAL_FILE": files["val"], "TEST_FILE": files["test"], "OUTPUT_DIR": str(out),
           "PRETRAINED": "", "GLOBAL_BATCH": "8", "ACCUM": "2"}  # from scratch: the tiny model's flags below
    status, log = _sbatch("finetune.sbatch", tmp_path, env, "--epochs", "1", *TINY)
    assert status == 0, log[-4000:]
    assert "global batch 8 = 4 per GPU × 1 GPU(s) × 2 accumulation" in log and "requeue" not in log, log[-4000:]
    assert json.loads((out / "test_results.json").read_text())["confusion_matrix"]
    assert json.loads((out / "args.json").read_text())["batch_size"] == 4


def test_a_global_batch_the_gpus_cannot_share_is_refused_before_launching(files, tmp_path):
    env = {"TRAIN_FILES": files["train"], "VAL_FILES": files["val"], "OUTPUT_DIR": str(tmp_path / "run"),
           "GLOBAL_BATCH": "9", "FAKE_SLURM_STEP": "0"}
    status, log = _sbatch("pretrain.sbatch", tmp_path, env, "--nodes=2")
    assert status == 1
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert errors == ["error: GLOBAL_BATCH=9 is not a multiple of 2 GPUs × ACCUM=1: "
                      "change GLOBAL_BATCH (and LR with it) or ACCUM"], log
    assert not (tmp_path / "run").exists()
