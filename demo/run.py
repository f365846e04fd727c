"""`make demo`: the whole PhysioWave pipeline on the 20 real Myo EMG recordings in demo/data/myo (no download).

preprocess (the project's CLI) → pretrain a small PhysioWave → from-scratch, linear-probe and fine-tune runs on the
same split → test metrics table → figures, predictions and embeddings with the `physiowave` command.
It shows the pipeline working on CPU in minutes; it says nothing about the paper's accuracy (20 recordings of one
person). Every stage prints the command a user would type.

    python demo/run.py [--output demo_output] [--quick]      (DEMO_QUICK=1 also means --quick)
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "demo" / "data" / "myo"

# A small model for 8-channel, 128-sample (0.64 s at 200 Hz) windows: 4 bands × 8 channels × 8 patches = 256 tokens.
# Training uses the scripts' default recipe; only the batch is set (32), since the data set holds 85 windows.
MODEL = ["--patch_size", "16", "--embed_dim", "64", "--depth", "2", "--num_heads", "4", "--max_level", "3"]
COMMON = ["--batch_size", "32", "--num_workers", "0", "--device", "cpu", "--seed", "0"]


def _shown(cmd: list[str]) -> str:
    parts = ["python" if c == sys.executable else os.path.relpath(c, Path.cwd()) if c.startswith(str(ROOT)) else c
             for c in cmd]
    return " ".join(shlex.quote(p) for p in parts)


def sh(cmd: list[str]) -> None:
    """Run one stage as the user would, with its progress bars; stop the demo if it fails."""
    print(f"\n$ {_shown(cmd)}", flush=True)
    if subprocess.run(cmd, cwd=ROOT).returncode:
        raise SystemExit(f"demo: stage failed: {_shown(cmd)}")


def physiowave(*args: str) -> None:
    """The `physiowave` console command, run in this process (same code as the installed entry point)."""
    from physiowave.cli import main

    print(f"\n$ physiowave {' '.join(shlex.quote(str(a)) for a in args)}", flush=True)
    if main([str(a) for a in args]):
        raise SystemExit(f"demo: `physiowave {args[0]}` failed")


def train(script: str, out: Path, *flags: str) -> None:
    sh([sys.executable, str(ROOT / script), *flags, *COMMON, "--output_dir", str(out), "--overwrite"])


def _metrics(run_dir: Path) -> dict[str, float]:
    """Test metrics of a run plus the validation accuracy of its selected (best) epoch."""
    test = json.loads((run_dir / "test_results.json").read_text())
    history = json.loads((run_dir / "training_history.json").read_text())
    return {**test, "val_acc": history["val_acc"][history["epoch"].index(test["best_epoch"])]}


def _record_accuracy(predictions: Path) -> tuple[int, int]:
    """(correct, total) of the per-record predictions: the class is the C_<k> in each Myo file name."""
    import csv

    with predictions.open() as f:
        rows = list(csv.DictReader(f))
    return sum(r["predicted"] == r["record"].split("C_")[1].split("_")[0] for r in rows), len(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="demo_output", help="output folder (replaced stage by stage)")
    p.add_argument("--quick", action="store_true", default=os.environ.get("DEMO_QUICK", "") not in ("", "0"),
                   help="1-2 epochs per stage: checks every stage in about a minute (CI)")
    args = p.parse_args(argv)
    out = Path(args.output).resolve()
    t0 = time.perf_counter()
    pre_epochs, ft_epochs = ("2", "2") if args.quick else ("40", "30")
    data = out / "data"

    print(f"PhysioWave demo{' (quick mode: too few epochs for meaningful numbers)' if args.quick else ''}: "
          f"20 Myo EMG recordings, 8 channels at 200 Hz, 5 gestures × 4 repetitions -> {out}")
    # 1. Preprocessing: class from the file name, repetitions kept whole (2 train / 1 val / 1 test). The windows keep
    #    the raw Myo units: which channels are active, and how strongly, is what tells these gestures apart, and a
    #    per-channel z-score would erase it.
    sh([sys.executable, "-m", "physiowave.preprocess", "folder", "--input", str(DATA), "--format", "csv", "--fs", "200",
        "--label_regex", r"C_(\d+)", "--group_regex", r"R_(\d+)", "--split", "0.5", "0.25", "0.25",
        "--window", "128", "--step", "32", "--normalize", "none", "--output", str(data)])
    files = {s: str(data / f"{s}.h5") for s in ("train", "val", "test")}
    split = ["--train_file", files["train"], "--val_file", files["val"], "--test_file", files["test"]]

    # 2. Self-supervised pretraining (masked reconstruction of the wavelet bands) on the training windows.
    train("pretrain.py", out / "pretrain", "--train_files", files["train"], "--val_files", files["val"], *MODEL,
          "--epochs", pre_epochs)
    pretrained = str(out / "pretrain" / "best_model.pth")

    # 3. The same split three ways.
    runs = {"from scratch": out / "scratch", "pretrained + linear probe": out / "probe",
            "pretrained + fine-tune": out / "finetune"}
    tune = ["--epochs", ft_epochs]
    train("finetune.py", runs["from scratch"], *split, *MODEL, *tune)
    train("finetune.py", runs["pretrained + linear probe"], *split, "--pretrained_path", pretrained, "--freeze_encoder",
          *tune)
    train("finetune.py", runs["pretrained + fine-tune"], *split, "--pretrained_path", pretrained, *tune)

    # 4. The `physiowave` command: checkpoint summary, predictions on the raw test recordings, embeddings, figures.
    best = runs["pretrained + fine-tune"] / "best_model.pth"
    test_records = [str(DATA / f"{r}.csv") for r in json.loads((data / "record_splits.json").read_text())["test"]]
    physiowave("info", best)
    physiowave("predict", best, *test_records, "-o", out / "predictions.csv")
    physiowave("embed", pretrained, DATA, "-o", out / "embeddings.h5")
    figs = out / "figures"
    example = str(DATA / "R_0_C_2_EMG.csv")
    physiowave("plot", "bands", pretrained, example, "--channel", "2", "-o", figs / "wavelet_bands.png")
    physiowave("plot", "filters", pretrained, "-o", figs / "wavelet_filters.png")
    physiowave("plot", "selector", pretrained, files["test"], "-o", figs / "selector_weights.png")
    physiowave("plot", "reconstruction", pretrained, example, "--channel", "2", "-o", figs / "reconstruction.png")
    physiowave("plot", "confusion", best, files["test"], "-o", figs / "confusion_matrix.png")
    physiowave("plot", "roc", best, files["test"], "-o", figs / "roc_pr.png")
    physiowave("plot", "history", runs["pretrained + fine-tune"], "-o", figs / "training_curves_finetune.png")
    physiowave("plot", "history", out / "pretrain", "-o", figs / "training_curves_pretrain.png")

    # 5. Results.
    rows = {name: _metrics(d) for name, d in runs.items()}
    correct, total = _record_accuracy(out / "predictions.csv")
    splits = json.loads((data / "record_splits.json").read_text())
    val_rep, test_rep = (splits[s][0].split("_")[1] for s in ("val", "test"))
    header = (f"{'85 windows per split':<28} {'val acc':>8} | {'test acc':>8} {'bal. acc':>8} {'macro F1':>8} "
              f"{'AUROC':>6}")
    lines = [header, "-" * len(header)]
    lines += [f"{name:<28} {m['val_acc']:>8.3f} | {m['acc']:>8.3f} {m['balanced_acc']:>8.3f} {m['macro_f1']:>8.3f} "
              f"{m['auroc']:>6.3f}" for name, m in rows.items()]
    table = "\n".join(lines)
    summary = {"quick": args.quick, "wall_time_s": round(time.perf_counter() - t0, 1),
               "metrics": {name: {k: m[k] for k in ("val_acc", "acc", "balanced_acc", "macro_f1", "auroc",
                                                    "best_epoch")}
                           for name, m in rows.items()},
               "predict_records_correct": [correct, total]}
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\n{table}\n(val = repetition {val_rep}, test = repetition {test_rep}; models selected by validation loss)"
          f"\n\n`physiowave predict` on the {total} raw test recordings (window probabilities averaged): "
          f"{correct}/{total} correct\n\nDemo finished in {summary['wall_time_s']:.0f} s. Outputs in {out}/:\n"
          f"  data/        HDF5 train/val/test files and the preprocessing metadata\n"
          f"  pretrain/ scratch/ probe/ finetune/   checkpoints (best_model.pth), training_history.json, "
          f"test_results.json, TensorBoard logs (tensorboard --logdir {out})\n"
          f"  figures/     {', '.join(sorted(p.name for p in figs.glob('*.png')))}\n"
          f"  predictions.csv, embeddings.h5, results.json\n"
          "These numbers show the pipeline working on 20 recordings of one person, not the paper's accuracy.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
