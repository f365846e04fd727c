"""Preprocessing throughput and memory: records/s and peak RSS of ``ECG/cpsc_multilabel.py`` with 1 and 2 workers
on a generated Challenge-format corpus at two sizes (N and 10·N records). Memory must stay flat as the corpus grows.

    python benchmarks/bench_prep.py               # N = 300 and 3000 records (~2-4 min on 2 cores, ~1.5 GB disk)
    python benchmarks/bench_prep.py --quick       # N = 20 and 200: only proves the script works

Corpus: 12-lead, 500 Hz, 10 s records (``.hea`` + MATLAB v4 ``.mat`` int16, gain 1000, ``# Dx:`` SNOMED codes),
500 per sub-folder as in the Challenge layout. Signals and headers are the real records of
``../shared/data/real/torch_ecg_cinc2021`` cycled, each copy scaled by a record-specific factor so no two are
identical; where ``../shared`` is absent, synthetic ECG-like signals with the same format. Each run is a fresh
``python ECG/cpsc_multilabel.py`` (z-score per window, 2048/1024 windows, gzip HDF5 output) whose process tree
(main + workers) is polled from /proc every 0.1 s. records/s = records listed / the pipeline's own time (the
``seconds`` of cpsc_9class_info.json: listing, processing, writing); the wall time including interpreter start
is reported too. Results: a Markdown table on stdout and ``benchmarks/results/prep_cpu.json`` (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from procmem import run_polled  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

REAL = ROOT.parent / "shared" / "data" / "real" / "torch_ecg_cinc2021"
LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
PER_FOLDER = 500


def _templates() -> list[tuple[np.ndarray, str]]:
    """(int16 [12, 5000], Dx line) pairs: the real records, or synthetic ones without ../shared."""
    if REAL.is_dir():  # the 37 real records with a CPSC class, so every generated record is used
        from physiowave.preprocess.cpsc2018 import CPSC_CLASSES
        known = {c for codes in CPSC_CLASSES.values() for c in codes}
        out = []
        for hea in sorted(REAL.glob("*.hea")):
            dx = next(ln for ln in hea.read_text().splitlines() if ln.startswith("# Dx:"))
            if known & set(dx[5:].replace(" ", "").split(",")):
                out.append((scipy.io.loadmat(hea.with_suffix(".mat"))["val"].astype(np.int16), dx))
        return out
    rng = np.random.default_rng(0)
    t = np.arange(5000) / 500
    codes = ["426783006", "164889003", "270492004", "59118001", "284470004", "164884008", "429622005"]
    return [((np.sin(2 * np.pi * 1.2 * t) * 800 + rng.normal(0, 60, (12, 5000))).astype(np.int16),
             f"# Dx: {codes[i % len(codes)]}") for i in range(50)]


def write_corpus(root: Path, n: int) -> None:
    """``n`` Challenge-format records under ``root/gK/``."""
    templates = _templates()
    for i in range(n):
        sig, dx = templates[i % len(templates)]
        sig = (sig * (0.8 + 0.4 * ((i * 7919) % 1000) / 1000)).astype(np.int16)
        name = f"A{i:06d}"
        folder = root / f"g{i // PER_FOLDER + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(folder / f"{name}.mat", {"val": sig}, format="4")
        lines = [f"{name} 12 500 5000"] + [f"{name}.mat 16+24 1000/mV 16 0 {int(sig[k, 0])} 0 0 {lead}"
                                          for k, lead in enumerate(LEADS)]
        (folder / f"{name}.hea").write_text("\n".join(lines + ["# Age: 50", "# Sex: Female", dx]) + "\n")


def measure(corpus: Path, out: Path, workers: int) -> dict[str, Any]:
    """One fresh preprocessing run → records, windows, records/s, wall time, peak tree RSS/PSS."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, str(ROOT / "ECG" / "cpsc_multilabel.py"), "--input", str(corpus), "--output", str(out),
           "--workers", str(workers)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = run_polled(cmd, 0.1, cwd=ROOT, env=env)
    if res.returncode:
        raise RuntimeError(f"exit {res.returncode}: {' '.join(cmd)}\n{res.output[-2000:]}")
    info = json.loads((out / "cpsc_9class_info.json").read_text())
    records = sum(s["records"] for s in info["splits"].values()) + info["skipped"]["records"]
    windows = sum(s["windows"] for s in info["splits"].values())
    out_mb = sum(p.stat().st_size for p in out.glob("*.h5")) / 2 ** 20
    return dict(workers=workers, records=records, windows=windows, pipeline_s=info["seconds"],
                records_per_s=records / info["seconds"], wall_s=res.wall_s, peak_rss_mb=res.peak_rss_mb,
                peak_pss_mb=res.peak_pss_mb, max_processes=res.max_processes, output_mb=out_mb)


def markdown(r: dict[str, Any]) -> str:
    rows = ["| records | workers | records/s | windows | pipeline s | wall s | peak RSS MB (tree) | peak PSS MB |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m in r["runs"]:
        rows.append(f"| {m['records']} | {m['workers']} | {m['records_per_s']:.1f} | {m['windows']} | "
                    f"{m['pipeline_s']:.1f} | {m['wall_s']:.1f} | {m['peak_rss_mb']:.0f} | {m['peak_pss_mb']:.0f} |")
    rows.append("")
    for w, g in r["rss_growth"].items():
        rows.append(f"{w} worker(s): peak RSS x{g:.3f} for a corpus {r['sizes'][1] // r['sizes'][0]}x larger")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny corpus, proves the script works")
    p.add_argument("--records", type=int, default=300, help="N: the small corpus (the large one is 10 N)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "prep_cpu.json"))
    p.add_argument("--workdir", default=None, help="where to write the corpus (default: a temporary folder)")
    args = p.parse_args(argv)
    n = 20 if args.quick else args.records
    sizes = [n, 10 * n]
    runs = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for size in sizes:
            corpus = Path(tmp) / f"corpus_{size}"
            write_corpus(corpus, size)
            for workers in (1, 2):
                m = measure(corpus, Path(tmp) / "out", workers)
                print(f"{size} records, {workers} worker(s): {m['records_per_s']:.1f} rec/s, "
                      f"peak RSS {m['peak_rss_mb']:.0f} MB", flush=True)
                runs.append(m)
            shutil.rmtree(corpus)
    growth = {str(w): [m for m in runs if m["workers"] == w][1]["peak_rss_mb"]
              / [m for m in runs if m["workers"] == w][0]["peak_rss_mb"] for w in (1, 2)}
    result = dict(benchmark="bench_prep", quick=args.quick, sizes=sizes, runs=runs, rss_growth=growth,
                  corpus="real CinC-2021 records cycled" if REAL.is_dir() else "synthetic",
                  machine=dict(platform=platform.platform(), python=platform.python_version(), cpus=os.cpu_count()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
