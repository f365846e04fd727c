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
``seconds`` of preprocess_info.json: listing, processing, writing); the wall time including interpreter start
is reported too. Results: a Markdown table on stdout and ``benchmarks/results/prep_cpu.json`` (``--out``).

WFDB mode (``--wfdb``): the old (``wfdb.rdrecord``) against the new (numpy, format 16) WFDB reader in one run.

    python benchmarks/bench_prep.py --wfdb          # N = 1000 records, 5 repeats (~4 min on 2 cores)
    python benchmarks/bench_prep.py --wfdb --quick  # N = 60, 1 repeat

Corpus: a PTB-XL tree (``ptbxl_database.csv``, ``scp_statements.csv``, ``records500/NNNNN/NNNNN_hr.hea/.dat``) of N
12-lead, 500 Hz, 10 s format-16 records with PTB-XL's header layout (``16 1000.0(0)/mV 16 0 <first> <checksum> 0
<lead>``), signals from the same real records cycled and scaled. Each repeat runs ``python ECG/ptbxl_finetune.py``
with 1 and 2 workers, with ``PHYSIOWAVE_WFDB_FAST=0`` (old) and unset (new), alternating old/new so both see the
same machine noise; plus the reader alone (``read_wfdb`` over every record in this process, 1 worker). Medians over
the repeats. Results: ``benchmarks/results/prep_wfdb_cpu.json`` and ``.md`` (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from machine import describe, label  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from procmem import run_polled  # noqa: E402

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
    info = _info(out, "cpsc_9class_info.json")
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


def _info(out: Path, legacy_name: str) -> dict[str, Any]:
    """The run's completion marker: ``preprocess_info.json``, or the per-dataset name older versions wrote."""
    for name in ("preprocess_info.json", legacy_name):
        if (out / name).is_file():
            return json.loads((out / name).read_text())
    raise RuntimeError(f"no preprocess_info.json or {legacy_name} in {out}")


# ------------------------------------------------------------------------------------------------- WFDB mode

PTBXL_LEADS = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]  # PTB-XL's header names
PTBXL_CODES = {"NORM": "NORM", "IMI": "MI", "NDT": "STTC", "CLBBB": "CD", "LVH": "HYP"}


def write_wfdb_corpus(root: Path, n: int) -> list[Path]:
    """A PTB-XL tree of ``n`` format-16 records (PTB-XL's header layout); returns the record paths."""
    templates = [sig for sig, _ in _templates()]
    root.mkdir(parents=True, exist_ok=True)
    (root / "scp_statements.csv").write_text(
        ",diagnostic,diagnostic_class\n" + "".join(f"{c},1.0,{k}\n" for c, k in PTBXL_CODES.items()))
    codes = list(PTBXL_CODES)
    rows, records = ["ecg_id,patient_id,scp_codes,strat_fold,filename_lr,filename_hr"], []
    for i in range(n):
        ecg_id = i + 1
        sig = (templates[i % len(templates)] * (0.8 + 0.4 * ((i * 7919) % 1000) / 1000)).astype("<i2")  # [12, T]
        rel = f"records500/{ecg_id // 1000 * 1000:05d}/{ecg_id:05d}_hr"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        name = Path(rel).name
        sums = [(int(s) + 32768) % 65536 - 32768 for s in sig.astype(np.int64).sum(axis=1)]
        lines = [f"{name} 12 500 {sig.shape[1]}"] + [
            f"{name}.dat 16 1000.0(0)/mV 16 0 {int(sig[k, 0])} {sums[k]} 0 {lead}"
            for k, lead in enumerate(PTBXL_LEADS)]
        (root / f"{rel}.hea").write_text("\n".join(lines) + "\n")
        np.ascontiguousarray(sig.T).tofile(root / f"{rel}.dat")  # interleaved [T, C]
        rows.append(f"{ecg_id},{ecg_id // 3}.0,\"{{'{codes[i % len(codes)]}': 100.0}}\",{i % 10 + 1},"
                    f"records100/{rel[10:-3]}_lr,{rel}")
        records.append(root / rel)
    (root / "ptbxl_database.csv").write_text("\n".join(rows) + "\n")
    return records


def measure_ptbxl(corpus: Path, out: Path, workers: int, fast: bool) -> dict[str, Any]:
    """One fresh ``ECG/ptbxl_finetune.py`` run with the new (``fast``) or the old WFDB reader."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, str(ROOT / "ECG" / "ptbxl_finetune.py"), "--input", str(corpus), "--output", str(out),
           "--workers", str(workers)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PHYSIOWAVE_WFDB_FAST="1" if fast else "0")
    res = run_polled(cmd, 0.1, cwd=ROOT, env=env)
    if res.returncode:
        raise RuntimeError(f"exit {res.returncode}: {' '.join(cmd)}\n{res.output[-2000:]}")
    info = _info(out, "ptbxl_info.json")
    records = sum(s["records"] for s in info["splits"].values()) + info["skipped"]["records"]
    if info["skipped"]["records"]:
        raise RuntimeError(f"{info['skipped']['records']} records skipped: {info['skipped']['reasons']}")
    return dict(path="new" if fast else "old", workers=workers, records=records,
                windows=sum(s["windows"] for s in info["splits"].values()), pipeline_s=info["seconds"],
                records_per_s=records / info["seconds"], wall_s=res.wall_s, peak_rss_mb=res.peak_rss_mb)


def measure_reader(records: list[Path], fast: bool) -> dict[str, Any]:
    """``read_wfdb`` over every record in this process (the reader alone), records/s."""
    from physiowave.preprocess import readers
    readers.WFDB_FAST = fast
    try:
        t0 = time.perf_counter()
        for r in records:
            readers.read_wfdb(r)
        seconds = time.perf_counter() - t0
    finally:
        readers.WFDB_FAST = True
    return dict(path="new" if fast else "old", records=len(records), seconds=seconds,
                records_per_s=len(records) / seconds, ms_per_record=1000 * seconds / len(records))


def _check_paths_agree(records: list[Path]) -> int:
    """Both readers give bit-identical signals, names and fs on the corpus (a sample of it); returns the count."""
    from physiowave.preprocess import readers
    sample = records[:: max(1, len(records) // 50)]
    for r in sample:
        readers.WFDB_FAST = True
        new = readers.read_wfdb(r)
        readers.WFDB_FAST = False
        old = readers.read_wfdb(r)
        readers.WFDB_FAST = True
        if not (np.array_equal(new.signal, old.signal) and new.channel_names == old.channel_names
                and new.fs == old.fs):
            raise RuntimeError(f"{r}: the fast reader differs from wfdb.rdrecord")
    return len(sample)


def _machine() -> dict[str, Any]:
    import wfdb

    def git(*a: str) -> str | None:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    return {**describe(), "omp_num_threads": "1 (children)", "numpy": np.__version__, "wfdb": wfdb.__version__,
            "load_average_before": list(os.getloadavg()), "git_commit": git("rev-parse", "HEAD"),
            "git_dirty": bool(git("status", "--porcelain"))}


def markdown_wfdb(r: dict[str, Any]) -> str:
    m = r["machine"]
    rows = ["# WFDB reading: wfdb.rdrecord (old) vs the numpy format-16 path (new)", "",
            f"{r['records']} PTB-XL-shaped records (12 x 5000, format 16), {r['repeats']} repeat(s), medians; "
            f"{label(m)}; OMP_NUM_THREADS=1 in the children, Python {m['python']}, "
            f"numpy {m['numpy']}, wfdb {m['wfdb']}, {m['date']}, load average before "
            f"{m['load_average_before'][0]:.2f} (other jobs shared the machine: 2 workers may not beat 1).", "",
            "| what | workers | old rec/s | new rec/s | new / old | old runs | new runs |",
            "|---|---:|---:|---:|---:|---|---|"]
    for key, what in (("reader", "read_wfdb alone"), ("pipeline", "ECG/ptbxl_finetune.py")):
        for w, s in r["summary"][key].items():
            rows.append(f"| {what} | {w} | {s['old']:.1f} | {s['new']:.1f} | {s['ratio']:.2f} | "
                        f"{', '.join(f'{x:.0f}' for x in s['old_runs'])} | "
                        f"{', '.join(f'{x:.0f}' for x in s['new_runs'])} |")
    rows += ["", f"Pipeline records/s = records / the run's own ``seconds`` (listing, reading, windowing, gzip HDF5). "
             f"Reader: {r['summary']['reader']['1']['old_ms']:.2f} -> {r['summary']['reader']['1']['new_ms']:.2f} "
             f"ms per record. Both readers gave bit-identical signals on {r['checked_records']} corpus records."]
    return "\n".join(rows)


def main_wfdb(args: argparse.Namespace) -> int:
    n = 60 if args.quick else args.records
    repeats = 1 if args.quick else args.repeats
    out_json = Path(args.out or ROOT / "benchmarks" / "results" / "prep_wfdb_cpu.json")
    machine = _machine()
    reader: list[dict[str, Any]] = []
    pipeline: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        corpus = Path(tmp) / "ptbxl"
        records = write_wfdb_corpus(corpus, n)
        checked = _check_paths_agree(records)
        for fast in (True, False):  # warm the page cache and imports
            measure_reader(records[:20], fast)
        for rep in range(repeats):
            order = (False, True) if rep % 2 == 0 else (True, False)  # alternate which path goes first
            for fast in order:
                reader.append(dict(measure_reader(records, fast), repeat=rep, workers=1))
                print(f"repeat {rep}: {reader[-1]['path']} reader alone: {reader[-1]['records_per_s']:.0f} rec/s",
                      flush=True)
            for workers in (1, 2):
                for fast in order:
                    m = dict(measure_ptbxl(corpus, Path(tmp) / "out", workers, fast), repeat=rep)
                    pipeline.append(m)
                    print(f"repeat {rep}: {m['path']} path, {workers} worker(s): {m['records_per_s']:.1f} rec/s",
                          flush=True)

    def summary(runs: list[dict[str, Any]], workers: int) -> dict[str, Any]:
        old = [m["records_per_s"] for m in runs if m["path"] == "old" and m["workers"] == workers]
        new = [m["records_per_s"] for m in runs if m["path"] == "new" and m["workers"] == workers]
        out = dict(old=statistics.median(old), new=statistics.median(new), old_runs=old, new_runs=new)
        out["ratio"] = out["new"] / out["old"]
        out["ratio_per_repeat"] = [b / a for a, b in zip(old, new)]
        return out

    summ = {"reader": {"1": summary(reader, 1)}, "pipeline": {str(w): summary(pipeline, w) for w in (1, 2)}}
    summ["reader"]["1"]["old_ms"] = 1000 / summ["reader"]["1"]["old"]
    summ["reader"]["1"]["new_ms"] = 1000 / summ["reader"]["1"]["new"]
    result = dict(benchmark="bench_prep --wfdb", quick=args.quick, records=n, repeats=repeats,
                  corpus=("PTB-XL layout, format 16, real CinC-2021 signals cycled" if REAL.is_dir()
                          else "PTB-XL layout, format 16, synthetic signals"),
                  checked_records=checked, summary=summ, reader_runs=reader, pipeline_runs=pipeline, machine=machine)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=2) + "\n")
    md = markdown_wfdb(result)
    out_json.with_suffix(".md").write_text(md + "\n")
    print(md)
    print(f"-> {out_json} and {out_json.with_suffix('.md').name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny corpus, proves the script works")
    p.add_argument("--records", type=int, default=None,
                   help="N: the small corpus (the large one is 10 N); default 300, or 1000 with --wfdb")
    p.add_argument("--wfdb", action="store_true",
                   help="WFDB mode: old (wfdb.rdrecord) vs new reader on a PTB-XL-shaped format-16 corpus")
    p.add_argument("--repeats", type=int, default=5, help="--wfdb: repeats of every measurement (medians)")
    p.add_argument("--out", default=None, help="result JSON (default benchmarks/results/prep_cpu.json, or "
                                               "prep_wfdb_cpu.json with --wfdb; the .md goes beside it)")
    p.add_argument("--workdir", default=None, help="where to write the corpus (default: a temporary folder)")
    args = p.parse_args(argv)
    if args.wfdb:
        args.records = args.records or 1000
        return main_wfdb(args)
    args.out = args.out or str(ROOT / "benchmarks" / "results" / "prep_cpu.json")
    n = 20 if args.quick else (args.records or 300)
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
                  machine=describe())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
