"""python -m physiowave.benchmark ptbxl: the PTB-XL protocol end to end on a tiny synthetic PTB-XL tree (the real
tables' layout, WFDB records at 100 Hz), with a tiny budget; and its refusals of bad trees before any compute."""
from __future__ import annotations

import csv
import gzip
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import h5py
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from physiowave.benchmark import ptbxl as pp
from physiowave.benchmark import main as benchmark_main
from tests.test_preprocess_ptbxl import LEADS, _write, _write_statements

SUPER = ["CD", "HYP", "MI", "NORM", "STTC"]  # the classes in the order the task writes them (sorted)
CODE = {"NORM": "NORM", "MI": "IMI", "STTC": "NDT", "CD": "CLBBB", "HYP": "LVH"}
TINY_BUDGET = pp.Budget("cpu", ("--max_level", "2", "--wave_kernel_size", "8", "--wavelet_names", "db4",
                                "--patch_size", "25", "--embed_dim", "32", "--depth", "1", "--num_heads", "4"),
                        crop=250, eval_step=250, batch_size=16, pretrain_epochs=1, epochs={1.0: 1},
                        probe_epochs={1.0: 1}, resnet_epochs={1.0: 1}, val_every={1.0: 1}, resnet=("--width", "8"))


def _records() -> list[tuple[int, int, int, dict[str, float]]]:
    """(ecg_id, patient, fold, scp_codes): every class positive in folds 1-8, 9 and 10; two records per patient in
    the training folds; a record without a diagnostic statement (dropped by the task)."""
    out, ecg_id = [], 1
    for fold, per_class in ((1, 2), (4, 2), (9, 1), (10, 1)):
        for k, cls in enumerate(SUPER * per_class):
            codes = {CODE[cls]: 100.0, **({"SR": 0.0} if k % 2 else {})}
            patient = 1000 + fold * 100 + k // 2 if fold < 9 else 2000 + ecg_id
            out.append((ecg_id, patient, fold, codes))
            ecg_id += 1
    out.append((ecg_id, 9999, 3, {"SR": 0.0}))
    return out


def _tree(root: Path, records=None, rate_of=lambda ecg_id: 100, columns=None) -> Path:
    """A PTB-XL folder: tables and 100 Hz WFDB records (a class shifts every lead by its index, so it is learnable)."""
    records = records or _records()
    root.mkdir(parents=True, exist_ok=True)
    _write_statements(root)
    columns = columns or ["ecg_id", "patient_id", "scp_codes", "strat_fold", "filename_lr", "filename_hr"]
    rng = np.random.default_rng(0)
    with open(root / "ptbxl_database.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for ecg_id, patient, fold, codes in records:
            row = {"ecg_id": ecg_id, "patient_id": f"{patient}.0", "scp_codes": repr(codes), "strat_fold": fold,
                   "filename_lr": f"records100/00000/{ecg_id:05d}_lr",
                   "filename_hr": f"records500/00000/{ecg_id:05d}_hr"}
            w.writerow([row[c] for c in columns])
            fs = rate_of(ecg_id)
            shift = sum(SUPER.index(c) + 1 for c, code in CODE.items() if code in codes)
            signal = np.cumsum(rng.normal(0, 20, (10 * fs, 12)), axis=0) + 300 * shift
            _write(root / f"records100/00000/{ecg_id:05d}_lr", signal.astype(np.int16), fs, LEADS)
    return root


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = benchmark_main(["ptbxl", *argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing record", "500 Hz record", "no strat_fold", "no scp_codes"])
def test_bad_trees_are_one_line_errors_before_any_compute(case, tmp_path, capsys):
    columns = {"no strat_fold": ["ecg_id", "patient_id", "scp_codes", "filename_lr"],
               "no scp_codes": ["ecg_id", "patient_id", "strat_fold", "filename_lr"]}.get(case)
    root = _tree(tmp_path / "ptbxl", rate_of=lambda i: 500 if case == "500 Hz record" and i == 3 else 100,
                 columns=columns)
    if case == "missing record":
        (root / "records100/00000/00005_lr.dat").unlink()
    out = tmp_path / "out"
    code, err = _run(["--ptbxl", str(root), "--out", str(out)], capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    expected = {"missing record": "00005_lr.dat: not found (1 of the 31 records",
                "500 Hz record": "00003_lr.hea: 12 signals at 500 Hz; expected 12 signals at 100 Hz",
                "no strat_fold": "ptbxl_database.csv: missing column(s) strat_fold",
                "no scp_codes": "ptbxl_database.csv: missing column(s) scp_codes"}[case]
    assert code == 1 and len(lines) == 1 and expected in lines[0], err
    assert not out.exists()


def test_a_class_without_a_positive_test_record_is_refused_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(pp.BUDGETS, "cpu", TINY_BUDGET)
    records = [r for r in _records() if not (r[2] == 10 and "LVH" in r[3])]  # no HYP in fold 10
    root = _tree(tmp_path / "ptbxl", records)
    out = tmp_path / "out"
    code, err = _run(["--ptbxl", str(root), "--out", str(out), "--other_tasks", ""], capsys)
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 1 and len(lines) == 1 and "windows/test.h5: no positive record of class(es) HYP" in lines[0], err
    assert not (out / "pretrain").exists()


def test_protocol_end_to_end_and_resumed_call_runs_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(pp.BUDGETS, "cpu", TINY_BUDGET)
    root = _tree(tmp_path / "ptbxl")
    out = tmp_path / "out"
    argv = ["--ptbxl", str(root), "--out", str(out), "--modes", "scratch,probe,finetune,resnet", "--fractions", "1",
            "--seeds", "0", "--other_tasks", "", "--no-compare", "--jobs", "2", "--bootstrap", "50"]
    code, err = _run(argv, capsys)
    assert code == 0, err[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["recipe"] == "physiowave" and res["budget"]["crop"] == 250
    assert len(res["data_fingerprint"]["records100"]) == 64
    cells = {c["mode"]: c for c in res["cells"]}
    assert set(cells) == {"scratch", "probe", "finetune", "resnet"}
    assert all(c["n"] == 1 and c["ci"] is not None and c["levels"] == ["record"] for c in cells.values())
    assert all(r["state"] == "done" and r["wall_s"] > 0 for r in res["runs"])
    assert res["pretraining"]["physiowave"]["state"] == "done"
    assert json.loads((out / "superdiagnostic/runs/probe_f1_s0/args.json").read_text())["pretrained_path"].endswith(
        "pretrain/physiowave/best_model.pth")

    # the training file keeps each record's patient; the test predictions carry ecg_id and recompute the score
    with h5py.File(out / "data/superdiagnostic/records/train.h5", "r") as f:
        groups = dict(zip(f["record_id"][:].astype(str), f["group_id"][:].astype(str)))
    patients = {f"records100/00000/{e:05d}_lr": str(p) for e, p, _, _ in _records()}
    assert groups and all(patients[r] == g for r, g in groups.items())
    labels = {e: [float(CODE[c] in codes) for c in SUPER] for e, _, fold, codes in _records() if fold == 10}
    for mode in cells:
        with gzip.open(out / f"predictions/superdiagnostic/{mode}_f1_s0.csv.gz", "rt") as f:
            rows = list(csv.reader(f))
        assert rows[0] == ["ecg_id", *SUPER]
        ids = [int(r[0]) for r in rows[1:]]
        assert ids == sorted(labels)
        probs = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
        y = np.array([labels[i] for i in ids])
        auroc = np.mean([roc_auc_score(y[:, k], probs[:, k]) for k in range(5)])
        assert auroc == pytest.approx(cells[mode]["mean"], abs=1e-5)

    # the same command again: everything is done, nothing runs; another budget in the same folder is refused
    walls = {r["name"]: r["wall_s"] for r in res["runs"]}
    code, err = _run(argv, capsys)
    assert code == 0
    assert {r["name"]: r["wall_s"] for r in json.loads((out / "results.json").read_text())["runs"]} == walls
    code, err = _run(argv + ["--report", "--publish", str(tmp_path / "pub")], capsys)
    assert code == 0 and (tmp_path / "pub/results.json").is_file()
    pub = sorted((tmp_path / "pub/predictions/superdiagnostic").glob("*.csv.gz"))
    assert len(pub) == 4
    published = {p.name: p.read_bytes() for p in pub}
    time.sleep(1.1)  # a gzip header with a time stamp would now differ
    code, err = _run(argv + ["--report", "--publish", str(tmp_path / "pub")], capsys)
    assert code == 0 and {p.name: p.read_bytes() for p in pub} == published  # same probabilities, same bytes
    moved = tmp_path / "moved_finetune"
    (out / "superdiagnostic/runs/finetune_f1_s0").rename(moved)  # a cell moved away: not in the table any more
    code, err = _run(argv + ["--report", "--publish", str(tmp_path / "pub")], capsys)
    assert code == 1 and "not finished: superdiagnostic/finetune_f1_s0 (run" in err
    assert not (out / "predictions/superdiagnostic/finetune_f1_s0.csv.gz").exists()
    assert sorted(p.name for p in (tmp_path / "pub/predictions/superdiagnostic").glob("*.csv.gz")) == sorted(
        n for n in published if not n.startswith("finetune"))
    moved.rename(out / "superdiagnostic/runs/finetune_f1_s0")
    e = TINY_BUDGET.pretrain_epochs  # another number of epochs: the cells it changes are refused, one line each run
    monkeypatch.setitem(pp.BUDGETS, "cpu", replace(TINY_BUDGET, pretrain_epochs=e + 1))
    with pytest.raises(SystemExit, match=rf"pretrain/physiowave: it ran with other flags than the grid now gives it "
                                         rf"\(--epochs {e} -> {e + 1}\); move its folder away"):
        pp.main(argv)
    assert pp.main(argv + ["--dry_run"]) == 0  # the dry run says which cells a run would refuse
    assert "# pretrain/physiowave: done, refused: " in capsys.readouterr().out
    monkeypatch.setitem(pp.BUDGETS, "cpu", replace(TINY_BUDGET, eval_step=TINY_BUDGET.eval_step // 2))
    code, err = _run(argv, capsys)  # other windows: the data files no longer match
    assert code == 1 and "holds a protocol run with other budget eval_step" in err


def test_cells_published_before_are_carried_not_run_again(tmp_path, capsys, monkeypatch):
    """--carry PUB: the cells PUB holds finished (same budget, recipe and data) are scored from its predictions and
    not run again; the merged results hold both; a PUB with another budget or a broken predictions file carries
    nothing of it, saying why."""
    monkeypatch.setitem(pp.BUDGETS, "cpu", TINY_BUDGET)
    root = _tree(tmp_path / "ptbxl")
    pub = tmp_path / "pub"
    base = ["--ptbxl", str(root), "--modes", "resnet", "--fractions", "1", "--other_tasks", "", "--no-compare",
            "--jobs", "1", "--bootstrap", "50"]
    code, err = _run(base + ["--out", str(tmp_path / "first"), "--seeds", "0", "--publish", str(pub)], capsys)
    assert code == 0, err[-3000:]
    first = json.loads((pub / "results.json").read_text())
    assert first["runs"][0]["command"]  # recorded, so that a later call can compare flags
    comparison = {r: {m: {"val_record_auroc_macro": v, "state": "done", "folder": "f"} for m in ("probe", "finetune")}
                  for r, v in (("physiowave", 0.8), ("paper", 0.6))}  # as a --compare call would have published it
    (pub / "results.json").write_text(json.dumps({**first, "recipe_comparison": {"fold9": comparison},
                                                  "pretraining": {"paper": {"state": "done"}}}))
    out = tmp_path / "second"
    code, err = _run(base + ["--out", str(out), "--seeds", "0,1", "--carry", str(pub)], capsys)
    assert code == 0, err[-3000:]
    assert not (out / "superdiagnostic/runs/resnet_f1_s0").exists()  # carried, not run
    assert (out / "superdiagnostic/runs/resnet_f1_s1/test_results.json").is_file()
    res = json.loads((out / "results.json").read_text())
    runs = {r["name"]: r for r in res["runs"]}
    assert runs["resnet_f1_s0"]["value"] == pytest.approx(first["runs"][0]["value"], abs=1e-12)
    assert runs["resnet_f1_s0"]["carried_from"]["folder"] == str(pub.resolve())
    assert "carried_from" not in runs["resnet_f1_s1"] and res["carried"]["cells"] == ["superdiagnostic/resnet_f1_s0"]
    assert res["recipe_comparison"]["winner"] == "physiowave"  # kept by a call that did not run the comparison
    assert res["recipe_comparison"]["fold9"]["paper"]["probe"]["carried_from"] == str(pub.resolve())
    assert res["pretraining"]["paper"] == {"state": "done", "carried_from": str(pub.resolve())}  # and its encoder's
    assert res["cells"][0]["n"] == 2 and res["cells"][0]["ci"] is not None  # pooled over the carried and new seed
    assert "| resnet_f1_s0 | done (carried) | " in (out / "results.md").read_text()
    assert (out / "predictions/superdiagnostic/resnet_f1_s0.csv.gz").read_bytes() == (
        pub / "predictions/superdiagnostic/resnet_f1_s0.csv.gz").read_bytes()

    # publishing a table that leaves out a cell the folder holds finished is refused, the folder left as it was
    pub2 = tmp_path / "pub2"
    code, err = _run(base + ["--out", str(out), "--seeds", "0,1", "--carry", str(pub), "--report", "--publish",
                             str(pub2)], capsys)
    assert code == 0, err[-3000:]
    before = {p: p.read_bytes() for p in pub2.rglob("*") if p.is_file()}
    code, err = _run(base + ["--out", str(out), "--seeds", "1", "--report", "--publish", str(pub2)], capsys)
    assert code == 1 and "holds 1 finished cell(s) this call's table leaves out (superdiagnostic/resnet_f1_s0)" in err
    assert {p: p.read_bytes() for p in pub2.rglob("*") if p.is_file()} == before

    # nothing is carried from a folder whose predictions lack a test record, or that ran another budget
    dry = base + ["--out", str(tmp_path / "third"), "--seeds", "0", "--carry", str(pub), "--dry_run"]
    path = pub / "predictions/superdiagnostic/resnet_f1_s0.csv.gz"
    with gzip.open(path, "rt") as f:
        lines = f.read().splitlines()
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines[:-1]) + "\n")
    assert pp.main(dry) == 0
    printed = capsys.readouterr().out
    assert "not carried: superdiagnostic:" in printed  # the dry run's fresh --out has no test file yet
    monkeypatch.setitem(pp.BUDGETS, "cpu", replace(TINY_BUDGET, resnet_epochs={1.0: 2}))
    assert pp.main(dry) == 0
    assert "other budget than this run's; nothing carried" in capsys.readouterr().out
    monkeypatch.setitem(pp.BUDGETS, "cpu", TINY_BUDGET)
    (out / "superdiagnostic/runs/resnet_f1_s1").rename(tmp_path / "moved")
    assert pp.main(base + ["--out", str(out), "--seeds", "0,1", "--carry", str(pub), "--report"]) == 1
    printed = capsys.readouterr()
    assert "not carried: " in printed.out and "resnet_f1_s0.csv.gz: 4 rows for the 5 test records" in printed.out
    assert "not finished: superdiagnostic/resnet_f1_s0, superdiagnostic/resnet_f1_s1" in printed.err


def test_a_second_runner_on_the_same_out_is_refused_whatever_its_cells(tmp_path, capsys, monkeypatch):
    """Two calls with different subsets of one --out (say the main grid, and another task) would share cells'
    parents only in --out itself: the lock is on --out, so the second is refused before it runs anything."""
    from physiowave.fileio import folder_lock

    monkeypatch.setitem(pp.BUDGETS, "cpu", TINY_BUDGET)
    root = _tree(tmp_path / "ptbxl")
    out = tmp_path / "out"
    argv = ["--ptbxl", str(root), "--out", str(out), "--modes", "resnet", "--fractions", "1", "--seeds", "0",
            "--other_tasks", "", "--no-compare", "--jobs", "1"]
    with folder_lock(out, "--out"):  # another runner holds --out (e.g. one running other tasks)
        with pytest.raises(SystemExit, match="another run is writing to this folder now"):
            pp.main(argv)
    assert not (out / "superdiagnostic/runs/resnet_f1_s0").exists()


def test_pretrained_encoder_replaces_the_pretraining(tmp_path, capsys):
    root = _tree(tmp_path / "ptbxl")
    enc = tmp_path / "encoder.pth"
    enc.write_bytes(b"x")
    argv = ["--ptbxl", str(root), "--out", str(tmp_path / "out"), "--fractions", "1", "--seeds", "0",
            "--other_tasks", "", "--no-compare", "--dry_run"]
    assert pp.main(argv + ["--pretrained", str(enc)]) == 0
    printed = capsys.readouterr().out
    assert "pretrain/physiowave" not in printed
    probe = next(ln for ln in printed.splitlines() if "--freeze_encoder" in ln)
    assert f"--pretrained_path {enc}" in probe
    with pytest.raises(SystemExit):
        pp.main(argv + ["--pretrained", str(tmp_path / "missing.pth")])
    assert "missing.pth: expected a checkpoint file or a folder with config.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pp.main([*argv[:-2], "--pretrained", str(enc)])  # the comparison needs to know what the encoder is
    assert "a checkpoint file does not state the recipe and budget" in capsys.readouterr().err


def _encoder_folder(path: Path, recipe: str, **budget_change) -> Path:
    """A hub-style folder whose config.json states the recipe and budget it was pretrained with."""
    path.mkdir()
    budget = json.loads(json.dumps(asdict(pp.BUDGETS["cpu"])))
    budget.update(budget_change)
    (path / "config.json").write_text(json.dumps({"format": "physiowave", "architecture": {},
                                                  "training": {"recipe": recipe, "budget": budget}}))
    return path


def test_a_released_encoder_stands_for_its_recipe_in_the_comparison(tmp_path, capsys):
    """--compare with --pretrained: the given folder is the table recipe's pretraining (same recipe, same
    pretraining budget); only the other recipe is pretrained, and both recipes' cells start from their own."""
    root = _tree(tmp_path / "ptbxl")
    argv = ["--ptbxl", str(root), "--out", str(tmp_path / "out"), "--modes", "probe,finetune", "--fractions", "0.1,1",
            "--seeds", "0", "--other_tasks", "", "--dry_run"]
    mine = _encoder_folder(tmp_path / "mine", "physiowave", epochs={"1.0": 3})  # downstream epochs do not matter
    assert pp.main(argv + ["--pretrained", str(mine)]) == 0
    printed = capsys.readouterr().out
    assert "# pretrain/paper: new" in printed and "pretrain/physiowave" not in printed
    assert "recipes/physiowave" not in printed  # the table's own 10 % cells are the comparison's
    paper = [ln for ln in printed.splitlines() if "--recipe paper" in ln]
    assert len(paper) == 3 and all("pretrain/paper/best_model.pth" in ln for ln in paper[1:])
    table = [ln for ln in printed.splitlines() if "--recipe physiowave" in ln]
    assert len(table) == 4 and all(f"--pretrained_path {mine}" in ln for ln in table)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    for folder, why in ((_encoder_folder(tmp_path / "paper", "paper"), "recipe paper, the table's is physiowave"),
                        (broken, "its config.json is not a model folder's configuration"),
                        (_encoder_folder(tmp_path / "longer", "physiowave", pretrain_epochs=100),
                         "pretraining budget differs from cpu's in pretrain_epochs")):
        with pytest.raises(SystemExit):
            pp.main(argv + ["--pretrained", str(folder)])
        assert why in capsys.readouterr().err


def test_the_recipe_comparison_is_carried_where_this_call_has_not_run_it():
    """A later call without --compare (or with a comparison cell not finished yet) keeps the published fold-9
    entries, marked with their source; what this call finished replaces them; the winner needs both recipes."""
    def entry(value, state="done"):
        return {"val_record_auroc_macro": value, "state": state, "folder": "f"}

    published = {"physiowave": {"probe": entry(0.85), "finetune": entry(0.87)},
                 "paper": {"probe": entry(0.60), "finetune": entry(None, "partial")}}
    kept = pp.merge_comparison({}, published, "PUB")
    assert kept == {"physiowave": {"probe": {**entry(0.85), "carried_from": "PUB"},
                                   "finetune": {**entry(0.87), "carried_from": "PUB"}},
                    "paper": {"probe": {**entry(0.60), "carried_from": "PUB"}}}
    assert pp.comparison_winner(kept) is None  # paper's fine-tuning is not done anywhere
    here = {"paper": {"probe": entry(None, "partial"), "finetune": entry(0.90)}}
    merged = pp.merge_comparison(here, published, "PUB")
    assert merged["paper"]["probe"]["carried_from"] == "PUB"  # not done here: the published one stays
    assert merged["paper"]["finetune"] == entry(0.90)  # done here: this call's
    assert pp.comparison_winner(merged) == "physiowave"  # mean 0.86 against paper's 0.75
    assert pp.comparison_winner(pp.merge_comparison({"paper": {"probe": entry(0.95), "finetune": entry(0.90)}},
                                                    published, "PUB")) == "paper"  # 0.925 against 0.86
    assert pp.comparison_winner({"physiowave": published["physiowave"]}) is None  # one recipe decides nothing
