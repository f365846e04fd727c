"""The protocol runner (physiowave.benchmark): bootstrap and table arithmetic on hand-made per-record scores, the
cell states that make it resumable, the CLI's refusals, and one end-to-end grid through the real scripts whose
runner is killed (SIGKILL) mid-grid and re-run."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from physiowave import benchmark as bm

from .conftest import lock_held_by_another_process

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--max_level", "2", "--wave_kernel_size", "8", "--wavelet_names", "db4", "--patch_size", "32", "--embed_dim",
        "32", "--depth", "1", "--num_heads", "4", "--num_workers", "0", "--device", "cpu"]


def _h5(path: Path, n_records: int, seed: int, windows: int = 2, multi: bool = False, K: int = 3) -> Path:
    """Class k = a sine of frequency k+1 plus noise; ``windows`` windows per record, with ``record_id``."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_records) % K, windows)
    t = np.arange(128) / 32
    x = rng.normal(0, 0.3, (len(y), 2, 128)) + np.sin(2 * np.pi * (y[:, None, None] + 1) * t)
    ids = np.repeat([f"{path.stem}{i}" for i in range(n_records)], windows)
    with h5py.File(path, "w") as f:
        f["data"] = x.astype(np.float32)
        f["label"] = np.eye(K, dtype=np.float32)[y] if multi else y.astype(np.int64)
        f.create_dataset("record_id", data=ids.astype(object), dtype=h5py.string_dtype())
    return path


def _scores(r: int, k: int, seed: int, multi: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-record probabilities that carry some signal about the labels."""
    rng = np.random.default_rng(seed)
    if multi:
        labels = (rng.random((r, k)) < 0.3).astype(np.int64)
        return np.clip(0.3 * labels + rng.random((r, k)) * 0.8, 0, 1), labels
    labels = rng.integers(0, k, r)
    logits = rng.normal(0, 1, (r, k)) + 1.0 * (labels[:, None] == np.arange(k))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return probs, labels


def _cfg(tmp_path: Path, **kw) -> argparse.Namespace:
    base = dict(modes=["scratch", "finetune"], fractions=[0.1, 1.0], seeds=[0, 1, 2], metric="auroc_macro",
                bootstrap=200, bootstrap_seed=0, label_kind="multi", title="t", out=tmp_path)
    return argparse.Namespace(**{**base, **kw})


def _fake_run(folder: Path, probs: np.ndarray, labels: np.ndarray, ids: np.ndarray, record: bool = True) -> None:
    """A finished run's folder as the engine leaves it (only the files the runner reads)."""
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "test_records.npz", record_id=ids, probs=probs, labels=labels)
    (folder / "test_results.json").write_text(json.dumps({"auroc_macro": 0.5, **({"record": {}} if record else {})}))


# --------------------------------------------------------------------------------------------------- statistics
def test_auroc_macro_averages_the_classes_with_both_labels_one_vs_rest():
    rng = np.random.default_rng(0)
    for trial in range(60):
        r, k = int(rng.integers(2, 50)), int(rng.integers(1, 6))
        probs = np.round(rng.random((r, k)), 1)  # many ties
        labels = (rng.random((r, k)) < 0.3).astype(int) if trial % 2 else rng.integers(0, k, r)
        onehot = labels > 0.5 if labels.ndim == 2 else labels[:, None] == np.arange(k)
        valid = [j for j in range(k) if 0 < onehot[:, j].sum() < r]
        want = np.mean([roc_auc_score(onehot[:, j], probs[:, j]) for j in valid]) if valid else np.nan
        assert bm.metric_value("auroc_macro", probs, labels) == pytest.approx(want, abs=1e-12, nan_ok=True)
        if labels.ndim == 1:
            assert bm.metric_value("acc", probs, labels) == np.mean(probs.argmax(1) == labels)


@pytest.mark.parametrize("metric,multi", [("auroc_macro", True), ("auroc_macro", False), ("acc", False)])
def test_bootstrap_interval_contains_the_estimate_and_shrinks_with_more_records(metric, multi):
    widths = []
    for r in (40, 1600):
        probs, labels = _scores(r, 4, seed=r, multi=multi)
        ci = bm.bootstrap(metric, [probs], labels, n=300, seed=0)
        assert ci["value"] == pytest.approx(bm.metric_value(metric, probs, labels))
        assert ci["low"] <= ci["value"] <= ci["high"] and ci["dropped"] == 0
        assert ci == bm.bootstrap(metric, [probs], labels, n=300, seed=0)  # seeded
        widths.append(ci["high"] - ci["low"])
    assert widths[1] < widths[0] / 3  # ~ 1/sqrt(R): 40x the records, about 1/6 the width


def test_bootstrap_pools_seeds_on_the_seed_mean_with_the_same_resamples():
    probs, labels = _scores(300, 3, seed=0, multi=True)
    other, _ = _scores(300, 3, seed=1, multi=True)
    one = bm.bootstrap("auroc_macro", [probs], labels, n=200)
    assert bm.bootstrap("auroc_macro", [probs, probs], labels, n=200) == one  # identical seeds: the same interval
    two = bm.bootstrap("auroc_macro", [probs, other], labels, n=200)
    assert two["value"] == pytest.approx((bm.metric_value("auroc_macro", probs, labels)
                                          + bm.metric_value("auroc_macro", other, labels)) / 2)
    assert two["low"] <= two["value"] <= two["high"]
    with pytest.raises(ValueError, match="records"):
        bm.bootstrap("auroc_macro", [probs, other[:10]], labels)


def test_read_records_sorts_by_record_id_and_checks(tmp_path):
    probs, labels = _scores(4, 2, seed=0, multi=False)
    np.savez(tmp_path / "r.npz", record_id=np.array(["d", "b", "a", "c"]), probs=probs, labels=labels)
    rec = bm.read_records(tmp_path / "r.npz")
    assert rec.record_id.tolist() == ["a", "b", "c", "d"] and rec.thresholds is None
    np.testing.assert_array_equal(rec.probs, probs[[2, 1, 3, 0]])
    np.testing.assert_array_equal(rec.labels, labels[[2, 1, 3, 0]])
    np.savez(tmp_path / "bad.npz", record_id=np.array(["a", "a", "b", "c"]), probs=probs, labels=labels)
    with pytest.raises(ValueError, match="repeats"):
        bm.read_records(tmp_path / "bad.npz")
    np.savez(tmp_path / "short.npz", record_id=np.array(["a", "b"]), probs=probs, labels=labels)
    with pytest.raises(ValueError, match="do not fit"):
        bm.read_records(tmp_path / "short.npz")


def test_mean_sd_over_seeds_is_exact_on_a_hand_example(tmp_path):
    cfg = _cfg(tmp_path, fractions=[1.0], modes=["scratch"], seeds=[0, 1, 2])
    cells = bm.plan(tmp_path, cfg.modes, cfg.fractions, cfg.seeds)
    for cell, value in zip(cells, (0.80, 0.90, 0.85)):
        cell.result = {"status": "finished", "value": value, "level": "window"}
    (entry,) = bm.summarize(cells, {}, cfg)
    assert entry["mean"] == pytest.approx(0.85, abs=1e-15)
    assert entry["sd"] == pytest.approx(0.05, abs=1e-15)  # sample sd: sqrt((0.05² + 0.05² + 0) / 2)
    assert entry["n"] == 3 and entry["ci"] is None and "test_records.npz" in entry["ci_note"]
    table = bm.markdown([entry], cells, cfg)
    assert "| from scratch | 0.850 ± 0.050 (window-level) |" in table
    cells[2].result = {"status": "failed"}  # a failed seed: the others count, n says so
    (entry,) = bm.summarize(cells, {}, cfg)
    assert (entry["n"], entry["mean"], entry["sd"]) == (2, pytest.approx(0.85), pytest.approx(0.0707106781, abs=1e-9))
    assert "(n = 2)" in bm.markdown([entry], cells, cfg)


# --------------------------------------------------------------------------------------------------- resumability
def test_cell_states_and_the_resume_flag(tmp_path):
    cfg = argparse.Namespace(label_kind="single", python="py", train="tr.h5", val="va.h5", test="te.h5",
                             pretrained="pre.pth", extra=["--epochs", "2"])
    cell = bm.Cell("probe", 0.1, 3, tmp_path / "probe_f0.1_s3")
    assert bm.cell_state(cell.folder) == "new"
    cmd = bm.command(cell, cfg, "new")
    assert cmd[1].endswith("finetune.py") and "--resume" not in cmd
    i = cmd.index
    assert cmd[i("--label_fraction") + 1] == "0.1" and cmd[i("--seed") + 1] == "3"
    assert cmd[i("--pretrained_path") + 1] == "pre.pth" and "--freeze_encoder" in cmd and cmd[-2:] == ["--epochs", "2"]
    assert "--pretrained_path" not in bm.command(bm.Cell("scratch", 1.0, 0, cell.folder), cfg, "new")
    assert "--freeze_encoder" not in bm.command(bm.Cell("finetune", 1.0, 0, cell.folder), cfg, "new")
    assert bm.command(cell, argparse.Namespace(**{**vars(cfg), "label_kind": "multi"}), "new")[1].endswith(
        "finetune_multilabel.py")

    cell.folder.mkdir()
    (cell.folder / "run.log").write_text("killed before the script wrote anything\n")
    assert bm.cell_state(cell.folder) == "new"
    (cell.folder / "args.json").write_text("{}")
    (cell.folder / "latest_model.pth").write_bytes(b"")
    assert bm.cell_state(cell.folder) == "partial"
    assert bm.command(cell, cfg, "partial")[-2:] == ["--resume", "auto"]
    (cell.folder / "test_results.json").write_text(json.dumps({"acc": 1.0}))
    assert bm.cell_state(cell.folder) == "done"  # an engine without per-record outputs: finished
    (cell.folder / "test_results.json").write_text(json.dumps({"acc": 1.0, "record": {"acc": 1.0}}))
    assert bm.cell_state(cell.folder) == "partial"  # killed between its results and its records: re-evaluate
    np.savez(cell.folder / "test_records.npz", record_id=np.array(["a"]), probs=np.ones((1, 2)), labels=np.zeros(1))
    assert bm.cell_state(cell.folder) == "done"


def test_a_cell_that_ran_other_flags_is_refused(tmp_path):
    cfg = argparse.Namespace(label_kind="multi", python="py", train="tr.h5", val="va.h5", test="te.h5",
                             pretrained="pre.pth", extra=["--epochs", "10", "--embed_dim", "64"])
    cell = bm.Cell("probe", 1.0, 0, tmp_path / "probe_f1_s0")
    cmd = bm.command(cell, cfg, "partial")
    bm.check_command(cell, cmd)  # nothing recorded: nothing to compare
    cell.folder.mkdir()
    ran = bm.command(cell, argparse.Namespace(**{**vars(cfg), "python": "/elsewhere/python",
                                                 "extra": ["--epochs", "3", "--embed_dim", "64"]}), "new")
    (cell.folder / "run.log").write_text(f"\n[physiowave.benchmark 2026-01-01 00:00:00] {shlex.join(ran)}\nepoch 1/3\n")
    with pytest.raises(SystemExit, match=r"probe_f1_s0: .*--epochs 3 -> 10"):
        bm.check_command(cell, cmd)
    same = bm.command(cell, argparse.Namespace(**{**vars(cfg), "python": "/elsewhere/python"}), "new")
    (cell.folder / "run.log").write_text(f"[physiowave.benchmark 2026-01-01 00:00:00] {shlex.join(same)} "
                                         "--output_dir /moved/here\n")
    bm.check_command(cell, cmd)  # another checkout, --resume, --output_dir: the same cell
    (cell.folder / "command.json").write_text(json.dumps({"flags": {"--freeze_encoder": []}}))
    with pytest.raises(SystemExit, match=r"--epochs \(absent\) -> 10"):  # command.json comes before run.log
        bm.check_command(cell, cmd)
    scratch = bm.Cell("scratch", 1.0, 0, cell.folder)
    with pytest.raises(SystemExit, match=r"--freeze_encoder \(set\) -> \(absent\)"):
        bm.check_command(scratch, bm.command(scratch, cfg, "partial"))


def test_finished_cells_are_not_run_again_and_the_outputs_are_written(tmp_path, capsys):
    files = {s: _h5(tmp_path / f"{s}.h5", 6, i, multi=True) for i, s in enumerate(("train", "val", "test"))}
    out = tmp_path / "bench"
    modes, fractions, seeds = ["scratch", "finetune"], [0.1, 1.0], [0, 1]
    ids = np.array([f"r{i:03d}" for i in range(120)])
    truth = {}
    for j, (m, f, s) in enumerate((m, f, s) for m in modes for f in fractions for s in seeds):
        probs, labels = _scores(120, 3, seed=0, multi=True)
        probs = np.clip(probs + np.random.default_rng(j).normal(0, 0.2, probs.shape), 0, 1)
        _fake_run(out / "runs" / f"{m}_f{f:g}_s{s}", probs, labels, ids)
        truth[(m, f, s)] = bm.metric_value("auroc_macro", probs, labels)
    pre = tmp_path / "pre.pth"
    pre.write_bytes(b"not read: every cell is finished")
    before = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/test_results.json")}
    argv = ["--train", str(files["train"]), "--val", str(files["val"]), "--test", str(files["test"]), "--pretrained",
            str(pre), "--modes", "scratch,finetune", "--fractions", "0.1,1", "--seeds", "0,1", "--out", str(out),
            "--bootstrap", "200", "--", "--epochs", "1"]
    assert bm.main(argv) == 0
    assert capsys.readouterr().out.count("skipped: finished before") == 8
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/test_results.json")} == before
    assert not list(out.glob("runs/*/run.log"))  # no script ran

    res = json.loads((out / "results.json").read_text())
    assert res["protocol"]["task"] == "multi" and res["protocol"]["extra"] == ["--epochs", "1"]
    assert {r["status"] for r in res["runs"]} == {"skipped"}
    for cell in res["cells"]:
        values = [truth[(cell["mode"], cell["fraction"], s)] for s in seeds]
        assert cell["values"] == pytest.approx(values) and cell["mean"] == pytest.approx(np.mean(values))
        assert cell["sd"] == pytest.approx(np.std(values, ddof=1))
        assert cell["levels"] == ["record"] and cell["records"] == 120
        assert cell["ci"][0] <= cell["mean"] <= cell["ci"][1]
    table = (out / "results.md").read_text()
    assert "| method | 10 % labels | 100 % labels |" in table and "pretrained + fine-tuning" in table
    e = res["cells"][0]
    assert f"{e['mean']:.3f} ± {e['sd']:.3f} [{e['ci'][0]:.3f}, {e['ci'][1]:.3f}]" in table
    png = (out / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000

    # another file, checkpoint or flags in the same folder: refused, nothing run
    with pytest.raises(SystemExit, match="other extra"):
        bm.main(argv[:-1] + ["2"])


def test_cli_refusals(tmp_path):
    files = {s: str(_h5(tmp_path / f"{s}.h5", 3, i)) for i, s in enumerate(("train", "val", "test"))}
    base = ["--train", files["train"], "--val", files["val"], "--test", files["test"], "--out", str(tmp_path / "o")]
    for argv in (base,                                                       # probe/finetune without --pretrained
                 base + ["--modes", "scratch", "--fractions", "0,1"],        # fraction 0
                 base + ["--modes", "scratch", "--", "--seed", "3"],         # a flag the runner sets
                 base + ["--modes", "scratch", "--", "--output_dir=x"],
                 base + ["--modes", "scratch,linear"],
                 base + ["--modes", "resnet"],                               # the baseline is multi-label only
                 base + ["--modes", "scratch", "--metric", "bogus"]):        # refused before anything is trained
        with pytest.raises(SystemExit):
            bm.parse_args(argv)
    cfg = bm.parse_args(base + ["--modes", "scratch", "--metric", "acc", "--fractions", "1,0.01"])
    assert cfg.label_kind == "single" and cfg.fractions == [0.01, 1.0] and cfg.extra == []


# --------------------------------------------------------------------------------------------------- end to end
def _children_of(folder: Path) -> list[int]:
    """Processes whose command line names ``folder`` (the runs of a killed runner, if they survived it)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if str(folder).encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            pass
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kills processes, reads /proc")
def test_killed_runner_resumes_and_finishes(tmp_path):
    from physiowave.engine import main as engine

    files = {s: _h5(tmp_path / f"{s}.h5", n, i) for i, (s, n) in enumerate((("train", 12), ("val", 6), ("test", 9)))}
    pre = tmp_path / "pre"
    assert engine("pretrain", ["--train_files", str(files["train"]), "--epochs", "1", "--batch_size", "8",
                               "--mask_ratio", "0.5", "--output_dir", str(pre), *TINY]) == 0
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "physiowave.benchmark", "--train", str(files["train"]), "--val", str(files["val"]),
           "--test", str(files["test"]), "--pretrained", str(pre / "best_model.pth"), "--modes", "scratch,probe",
           "--fractions", "0.5,1", "--seeds", "0", "--out", str(out), "--bootstrap", "100",
           "--", "--epochs", "3", "--batch_size", "8", *TINY]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    names = ["scratch_f0.5_s0", "scratch_f1_s0", "probe_f0.5_s0", "probe_f1_s0"]
    runs = out / "runs"

    # 1. kill -9 the runner while its second run has a checkpoint but no results
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not ((runs / names[1] / "latest_model.pth").is_file()
                   and not (runs / names[1] / "test_results.json").is_file()):
            assert proc.poll() is None and time.monotonic() < deadline, "the runner ended before it could be killed"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    deadline = time.monotonic() + 10
    while _children_of(runs) and time.monotonic() < deadline:  # PR_SET_PDEATHSIG: the run dies with the runner
        time.sleep(0.05)
    assert not _children_of(runs), "a run outlived the killed runner"
    first = runs / names[0] / "test_results.json"
    assert first.is_file() and not (runs / names[1] / "test_results.json").is_file()
    assert bm.cell_state(runs / names[1]) == "partial"
    mtime = first.stat().st_mtime_ns

    # 2. the same command again (two runs at a time): the finished run is skipped, the killed one continued
    done = subprocess.run(cmd[:cmd.index("--")] + ["--jobs", "2"] + cmd[cmd.index("--"):], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "scratch     50 % seed 0  skipped: finished before" in done.stdout
    assert "scratch    100 % seed 0  finished (resumed)" in done.stdout
    assert first.stat().st_mtime_ns == mtime
    assert (runs / names[0] / "run.log").read_text().count("[physiowave.benchmark") == 1
    assert json.loads((runs / names[1] / "command.json").read_text())["flags"]["--epochs"] == ["3"]
    log = (runs / names[1] / "run.log").read_text()
    assert log.count("[physiowave.benchmark") == 2 and "--resume auto" in log.split("[physiowave.benchmark")[2]
    assert "resuming from" in log
    probe = (runs / names[2] / "run.log").read_text()
    assert "--freeze_encoder" in probe and "--pretrained_path" in probe
    res = json.loads((out / "results.json").read_text())
    assert [r["status"] for r in res["runs"]] == ["skipped", "finished", "finished", "finished"]
    assert all(c["n"] == 1 and c["mean"] is not None for c in res["cells"])
    assert (out / "results.md").is_file() and (out / "results.png").is_file()

    # 3. per-record scores from the engine's test_records.npz
    assert all((runs / n / "test_records.npz").is_file() for n in names)
    for r in res["runs"]:
        engine_record = json.loads((runs / r["name"] / "test_results.json").read_text())["record"]
        assert r["level"] == "record" and r["records"] == 9
        assert r["value"] == pytest.approx(engine_record["auroc"], abs=1e-9)  # our AUROC = the engine's, per record
        assert r["ci"][0] <= r["value"] <= r["ci"][1]
    assert all(c["ci"] is not None and c["ci"][0] <= c["mean"] <= c["ci"][1] for c in res["cells"])

    # 4. inputs replaced in place between two calls: refused before anything runs, naming the cell and the file
    ckpt = pre / "best_model.pth"
    original = ckpt.read_bytes()
    ckpt.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # same path, same size, other content
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "probe_f0.5_s0: its input" in again.stderr, again.stderr[-2000:]
    assert "best_model.pth changed (sha256)" in again.stderr and "Traceback" not in again.stderr
    ckpt.write_bytes(original)
    time.sleep(0.01)
    files["test"].write_bytes(files["test"].read_bytes())  # rewritten: new mtime
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "test.h5 changed (mtime_ns)" in again.stderr, again.stderr[-2000:]


def test_sigterm_stops_the_runs_and_counts_their_time(tmp_path):
    """SIGTERM to the runner (a job scheduler's stop): the running cell is killed, its seconds are added to its
    wall.json, and the runner exits 143."""
    program = f"""
import sys
from pathlib import Path
import argparse
from physiowave import benchmark as bm
cell = bm.Cell("pretrain", 1.0, 0, Path({str(tmp_path / 'cell')!r}), script=[sys.executable, "-c",
               "import time; time.sleep(60)"], flags=[], done_file="never.txt")
bm.run_cells([cell], argparse.Namespace(jobs=1), {{}})
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", program], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 60
        # the runner's own command line names the folder too: wait for the cell's process, not the runner
        while not [pid for pid in _children_of(tmp_path / "cell") if pid != proc.pid]:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 143
    finally:
        proc.kill()
    assert json.loads((tmp_path / "cell" / "wall.json").read_text())["seconds"] > 0.2
    deadline = time.monotonic() + 10
    while _children_of(tmp_path / "cell") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _children_of(tmp_path / "cell")


def test_a_second_runner_on_the_same_output_is_refused(tmp_path):
    out = tmp_path / "bench"
    cells = bm.plan(out, ["scratch"], [1.0], [0])
    with lock_held_by_another_process(out / "runs"):
        with pytest.raises(SystemExit, match="another run is writing to this folder now"):
            bm.run_cells(cells, _cfg(tmp_path), dict(os.environ))
        assert not cells[0].folder.exists()  # nothing ran
