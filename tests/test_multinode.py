"""Several nodes without a cluster: two torchrun launchers on this machine, one process each, meeting through a c10d
rendezvous on localhost, train exactly as one launcher with two processes; a signal to one "node" stops both after
the same step, and ``--resume auto`` continues to the same weights, bit for bit."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .test_engine import ROOT, TINY, _history, _toy, _write

# The worker: the script's entry point, with a signal sent to itself on one rank inside one optimizer step
# (deterministic, unlike a signal from outside; the other rank never receives one and must stop all the same).
WORKER = """
import os, signal, sys
from physiowave.engine import loop, main
step, rank = (int(v) for v in os.environ.get("TEST_SIGNAL_AT", "0:0").split(":"))
if step and int(os.environ["RANK"]) == rank:
    original, count = loop._optimizer_step, [0]
    def stepping(*a, **kw):
        original(*a, **kw)
        count[0] += 1
        if count[0] == step:
            os.kill(os.getpid(), signal.SIGUSR1)
    loop._optimizer_step = stepping
sys.exit(main(sys.argv[1], sys.argv[2:]))
"""
STEPS_PER_EPOCH = 8  # 60 samples over 2 processes, batch 2, accumulation 2: 15 micro-batches, 8 steps


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def _two_nodes(worker: Path, args: list[str], env: dict[str, str], timeout: float = 120) -> list[subprocess.CompletedProcess]:
    """Two launchers (``--nnodes 2``), one process each, rendezvous c10d on a free localhost port."""
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(r),
                               "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
                               "--rdzv_id", "test", str(worker), *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    try:
        results = [(p, *p.communicate(timeout=timeout)) for p in procs]
    finally:
        for p in procs:
            p.kill()
    return [subprocess.CompletedProcess(p.args, p.returncode, out, err) for p, out, err in results]


def test_two_nodes_equal_one_node_and_a_signal_to_one_node_stops_both_exactly(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    train, val = _write(d / "train.h5", *_toy(60, 0)), _write(d / "val.h5", *_toy(11, 1))
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    args = ["finetune", "--train_file", train, "--val_file", val, "--epochs", "2", "--batch_size", "2",
            "--grad_accumulation_steps", "2", "--use_augmentation", *TINY]

    one = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(worker), *args, "--output_dir", str(tmp_path / "one")], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=180)
    assert one.returncode == 0, one.stderr[-3000:]

    out = tmp_path / "two"
    # SIGUSR1 to rank 1 inside the last optimizer step of epoch 1: both stop before validating it
    stopped = _two_nodes(worker, [*args, "--output_dir", str(out)], _env(TEST_SIGNAL_AT=f"{STEPS_PER_EPOCH}:1"))
    assert all(r.returncode != 0 for r in stopped)
    errs = "".join(r.stderr for r in stopped)
    assert errs.count("exitcode  : 138") == 2, errs[-3000:]  # torchrun's report of each worker's status, 128 + SIGUSR1
    assert "stopped: SIGUSR1 (received by another process): stopped after step 15 of epoch 1" in errs \
        or "stopped: SIGUSR1 (received" in errs, errs[-3000:]
    ckpt = torch.load(out / "latest_model.pth", weights_only=True)
    assert (ckpt["global_step"], ckpt["next_epoch"], ckpt["micro_in_epoch"]) == (STEPS_PER_EPOCH, 0, 15)

    resumed = _two_nodes(worker, [*args, "--output_dir", str(out), "--resume", "auto"], _env())
    assert all(r.returncode == 0 for r in resumed), "".join(r.stderr for r in resumed)[-3000:]
    assert "resuming from" in "".join(r.stdout for r in resumed)

    wa = torch.load(tmp_path / "one" / "latest_model.pth", weights_only=True)["model_state_dict"]
    wb = torch.load(out / "latest_model.pth", weights_only=True)["model_state_dict"]
    for k, v in wa.items():
        assert torch.equal(v, wb[k]), k
    ha, hb = _history(tmp_path / "one"), _history(out)
    for k in ("train_loss", "train_acc", "val_loss", "val_acc", "learning_rates"):
        assert ha[k] == pytest.approx(hb[k], rel=1e-12, abs=0), k
