"""Several nodes without a cluster: two torchrun launchers on this machine, one process each, meeting through a c10d
rendezvous on localhost, train exactly as one node with two processes (started by ``srun`` as two tasks, SLURM's
variables, no torchrun: the fake srun of tests/fake_slurm); a signal to one "node" stops both after the same step,
and ``--resume auto`` continues to the same weights, bit for bit."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from physiowave.engine import consensus
from physiowave.engine.distributed import DistEnv, launcher_env
from physiowave.engine.errors import ConfigError

from .test_engine import ROOT, TINY, _history, _toy, _write

# The worker: the script's entry point, with a signal sent to itself on one rank inside one optimizer step
# (deterministic, unlike a signal from outside; the other rank never receives one and must stop all the same),
# with flags added on rank 1 only (ranks that disagree), and writing its exit status to a file: when one node's
# worker exits, the other node's torchrun agent may find the c10d store (hosted by the first agent) already gone and
# fail with RendezvousConnectionError instead of reporting its worker's status, so the agents' reports are a race.
WORKER = """
import os, signal, sys
from physiowave.engine import loop, main
from physiowave.engine.distributed import launcher_env
me = launcher_env()[0]  # torchrun's RANK, or srun's SLURM_PROCID
step, rank = (int(v) for v in os.environ.get("TEST_SIGNAL_AT", "0:0").split(":"))
if step and me == rank:
    original, count = loop._optimizer_step, [0]
    def stepping(*a, **kw):
        original(*a, **kw)
        count[0] += 1
        if count[0] == step:
            os.kill(os.getpid(), signal.SIGUSR1)
    loop._optimizer_step = stepping
extra = os.environ.get("TEST_RANK1_ARGS", "").split() if me == 1 else []
status = main(sys.argv[1], sys.argv[2:] + extra)
if os.environ.get("TEST_STATUS_DIR"):  # each process's own exit status, whatever its launcher manages to report
    with open(os.path.join(os.environ["TEST_STATUS_DIR"], f"rank{me}"), "w") as f:
        f.write(str(status))
sys.exit(status)
"""
FAKE_SRUN = Path(__file__).resolve().parent / "fake_slurm" / "srun"
STEPS_PER_EPOCH = 8  # 60 samples over 2 processes, batch 2, accumulation 2: 15 micro-batches, 8 steps


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def _two_nodes(worker: Path, args: list[str], env: dict[str, str],
               timeout: float = 120) -> list[subprocess.CompletedProcess]:
    """Two launchers (``--nnodes 2``), one process each, rendezvous c10d on a free localhost port."""
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(r),
                               "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint",
                               f"127.0.0.1:{port}", "--rdzv_id", "test", str(worker), *args], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE,
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

    # the reference: one node, two processes, started by srun as two tasks (SLURM's variables; no torchrun)
    one = subprocess.run([str(FAKE_SRUN), "--ntasks=2", sys.executable, str(worker), *args, "--output_dir",
                          str(tmp_path / "one")], cwd=ROOT, capture_output=True, text=True, timeout=180,
                         env=_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), SLURM_JOB_NUM_NODES="1"))
    assert one.returncode == 0, one.stderr[-3000:]
    assert "× 2 process(es)" in one.stdout

    out = tmp_path / "two"
    # SIGUSR1 to rank 1 inside the last optimizer step of epoch 1: both stop before validating it
    status = tmp_path / "status"
    status.mkdir()
    stopped = _two_nodes(worker, [*args, "--output_dir", str(out)],
                         _env(TEST_SIGNAL_AT=f"{STEPS_PER_EPOCH}:1", TEST_STATUS_DIR=str(status)))
    assert all(r.returncode != 0 for r in stopped)
    errs = "".join(r.stderr for r in stopped)
    # each worker's own exit status, 128 + SIGUSR1 (the agents' reports of it race each other's teardown)
    assert {f.name: f.read_text() for f in status.iterdir()} == {"rank0": "138", "rank1": "138"}, errs[-3000:]
    # rank 0 reports the stop; the signal went to rank 1
    assert "stopped: SIGUSR1 (received by another process): stopped after step 15 of epoch 1" in errs, errs[-3000:]
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


def test_launcher_env_reads_torchrun_then_srun():
    assert launcher_env({}) == (0, 0, 1)
    assert launcher_env({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "SLURM_PROCID": "0",
                         "SLURM_STEP_NUM_TASKS": "2"}) == (3, 1, 4)  # torchrun under srun: torchrun's
    srun = {"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_STEP_NUM_TASKS": "8"}
    assert launcher_env({**srun, "MASTER_ADDR": "n1", "MASTER_PORT": "29500"}) == (5, 1, 8)
    assert launcher_env({**srun, "SLURM_STEP_NUM_TASKS": "1"}) == (0, 0, 1)  # srun -n1 python ...: one process
    with pytest.raises(RuntimeError,
                       match="srun started 8 tasks of this script but MASTER_ADDR and MASTER_PORT is not set"):
        launcher_env(srun)


def test_ranks_that_disagree_stop_with_one_line_each(tmp_path):
    """Rank 1 given another --seed: both processes stop before training, each with the same one line (two tasks
    of srun here; torchrun's processes run the same check)."""
    train = _write(tmp_path / "train.h5", *_toy(20, 0))
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    proc = subprocess.run([str(FAKE_SRUN), "--ntasks=2", sys.executable, str(worker), "finetune", "--train_file", train,
                           "--epochs", "1", "--output_dir", str(tmp_path / "run"), *TINY], cwd=ROOT,
                          env=_env(TEST_RANK1_ARGS="--seed 7", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port())),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    # both processes share the pipe, so their lines may interleave: count the messages, not the lines
    line = "disagree on --seed: 7 there, 42 on rank 0; every node must run the same command on the same files"
    assert proc.stderr.count("error: rank 1 (on ") == 2 and proc.stderr.count(line) == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "run" / "latest_model.pth").exists()


def _env1(rank: int, world: int) -> DistEnv:
    return DistEnv(rank, 0, world, torch.device("cpu"))


def test_a_checkpoint_only_rank_0_sees_is_named(monkeypatch):
    """An output folder that is not shared: rank 0 resumes, rank 1 would start afresh; the error says so."""
    import argparse

    args = argparse.Namespace(seed=1, output_dir="/o")
    info = {"train_files": [], "train_samples": 10}
    ckpt = {"global_step": 5, "next_epoch": 1, "micro_in_epoch": 2}
    seen = [("n0", consensus.describe(args, info, Path("/o/latest_model.pth"), ckpt)),
            ("n1", consensus.describe(args, info, None, None))]

    def gather(out, obj):
        out[:] = seen

    monkeypatch.setattr(consensus.dist, "all_gather_object", gather)
    with pytest.raises(ConfigError, match=r"rank 1 \(on n1\) and rank 0 \(on n0\) disagree on checkpoint to resume: "
                                          r"none there, /o/latest_model.pth \(step 5.*file system every node sees"):
        consensus.check_ranks_agree(args, _env1(1, 2), info, None, None)
    seen[1] = seen[0]
    consensus.check_ranks_agree(args, _env1(1, 2), info, None, None)  # the same everywhere: no error


def test_world_size_against_the_training_set():
    with pytest.raises(ConfigError, match="3 processes but 2 training samples"):
        consensus.check_world_size(2, _env1(0, 3))
    assert "leaves out 1 of them" in consensus.check_world_size(7, _env1(0, 3))
    assert consensus.check_world_size(6, _env1(0, 3)) is None
