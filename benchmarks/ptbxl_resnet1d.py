"""A plain supervised 1-D ResNet baseline for the PTB-XL protocol (physiowave.benchmark), trained from scratch.

It takes the command-line contract of the PhysioWave cells (``finetune_multilabel.py``), so the protocol runner can
call it for a "resnet" method the same way:

    python benchmarks/ptbxl_resnet1d.py --train_file T --val_file V --test_file X --label_fraction F --seed S \\
        --output_dir DIR [--resume auto] [--max_length 250] [--epochs 30] [--batch_size 64] [--lr 1e-3] \\
        [--weight_decay 1e-2] [--val_every 1] [--width 64]

Data: HDF5 files written by physiowave.preprocess (``data [N, C, T]``, multi-hot ``label [N, K]``, ``record_id``,
optionally ``group_id``). The training file holds whole records; each epoch trains on one random crop of
``--max_length`` samples per record (offsets and order drawn from ``(--seed, epoch)``, so a resumed run draws the
same). ``--label_fraction`` keeps exactly the training samples that
``physiowave.data.fractions.label_fraction_indices`` keeps for that seed (whole patients/records), i.e. the same
records as the PhysioWave cells of that fraction and seed. Validation/test: every window of the file; sigmoid
probabilities averaged per ``record_id``; record-level macro AUROC (mean over labels with both positives and
negatives of sklearn's ``roc_auc_score``).

Model: stem conv (k 7, stride 2) + BatchNorm + ReLU, 4 stages of 2 basic residual blocks (k 5, BatchNorm, ReLU;
widths w, w, 2w, 2w; stride 2 from stage 2 on), global average and max pooling concatenated, dropout, linear to K.
Loss BCEWithLogits, AdamW, cosine schedule with 5 % linear warmup over all steps, fp32 (TF32 off).

Outputs in ``--output_dir``: ``args.json`` (written first: the flags, parameter count, training records/windows
kept), ``latest.pt`` (after every epoch), ``best_model.pt`` (best validation record AUROC; ties keep the earlier
epoch), ``history.json``, ``test_records.npz`` (``record_id``, ``probs``, ``labels``, one row per test record) and
``test_results.json`` (written last: its presence means the run finished). ``--resume auto`` continues from
``latest.pt`` (or starts afresh when there is none). Training data are held in memory (no loader workers).

Test hook: the environment variable ``PTBXL_RESNET_STOP_AFTER_EPOCH=E`` ends the run (SystemExit 3) right after
epoch E's checkpoint, as a kill would. On a GPU, cuDNN runs deterministic kernels (TF32 off), so a resumed run
repeats an uninterrupted one.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: the checkout's package
    sys.path.insert(0, str(ROOT))

from physiowave.data.fractions import label_fraction_indices  # noqa: E402
from physiowave.fileio import write_json  # noqa: E402

RESULTS, RECORDS, LATEST, BEST = "test_results.json", "test_records.npz", "latest.pt", "best_model.pt"
ARGS, HISTORY = "args.json", "history.json"
STOP_ENV = "PTBXL_RESNET_STOP_AFTER_EPOCH"
# Flags a resumed run must share with the run it continues (they decide its numbers).
SAME_ON_RESUME = ("train_file", "val_file", "test_file", "label_fraction", "seed", "max_length", "epochs",
                  "batch_size", "lr", "weight_decay", "val_every", "width", "kernel_size", "dropout")


class InputError(Exception):
    """A one-line problem with the input files or flags, found before training."""


# ------------------------------------------------------------------------------------------------------ model
class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the shortcut (1x1 conv + BN when the shape changes), then ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int):
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv1d(cin, cout, kernel, stride, pad, bias=False)
        self.bn1 = nn.BatchNorm1d(cout)
        self.conv2 = nn.Conv1d(cout, cout, kernel, 1, pad, bias=False)
        self.bn2 = nn.BatchNorm1d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv1d(cin, cout, 1, stride, bias=False), nn.BatchNorm1d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


class ResNet1d(nn.Module):
    """``[B, C, T]`` → ``[B, K]`` logits; any T ≥ 16 (global pooling)."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 64, kernel: int = 5, dropout: float = 0.2):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(in_channels, width, 7, 2, 3, bias=False), nn.BatchNorm1d(width),
                                  nn.ReLU(inplace=True))
        widths, blocks, cin = (width, width, 2 * width, 2 * width), [], width
        for stage, w in enumerate(widths):
            for b in range(2):
                blocks.append(BasicBlock(cin, w, kernel, 2 if stage > 0 and b == 0 else 1))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(2 * cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for blk in blocks:  # each residual branch starts as the identity
            nn.init.zeros_(blk.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(x))
        h = torch.cat([h.mean(-1), h.amax(-1)], dim=1)
        return self.head(self.drop(h))


# ------------------------------------------------------------------------------------------------------ data
def _groups(f: h5py.File) -> np.ndarray | None:
    """The record grouping of a file's samples for the label fraction: ``group_id`` (patient) when the file has
    it, else ``record_id``, else None (each sample its own record)."""
    for key in ("group_id", "record_id"):
        if key in f:
            return np.asarray(f[key][:]).astype(str)
    return None


def _need(f: h5py.File, path: str, keys: tuple[str, ...], role: str) -> None:
    missing = [k for k in keys if k not in f]
    if missing:
        raise InputError(f"{path}: no dataset {', '.join(repr(k) for k in missing)}; a {role} file needs "
                         f"{', '.join(keys)} (as physiowave.preprocess writes)")


def _read_rows(ds: h5py.Dataset, rows: np.ndarray, block: int = 1024) -> np.ndarray:
    """``ds[rows]`` (sorted rows) read block by block, so a small fraction never loads the whole file."""
    out = np.empty((len(rows), *ds.shape[1:]), dtype=np.float32)
    done = 0
    for lo in range(0, ds.shape[0], block):
        sel = rows[(rows >= lo) & (rows < lo + block)]
        if len(sel):
            chunk = ds[lo:min(lo + block, ds.shape[0])]
            out[done:done + len(sel)] = chunk[sel - lo]
            done += len(sel)
    return out


def check_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """Every file present with its datasets and matching shapes → shapes (raises InputError otherwise)."""
    shapes: dict[str, Any] = {}
    for role, path in (("train", args.train_file), ("val", args.val_file), ("test", args.test_file)):
        if not os.path.isfile(path):
            raise InputError(f"{path}: no such file (the --{role}_file)")
        try:
            f = h5py.File(path, "r")
        except OSError as err:
            raise InputError(f"{path}: not a readable HDF5 file ({err})") from None
        with f:
            _need(f, path, ("data", "label") if role == "train" else ("data", "label", "record_id"), role)
            data, label = f["data"].shape, f["label"].shape
            if len(data) != 3:
                raise InputError(f"{path}: 'data' has shape {data}; expected [N, C, T]")
            if len(label) != 2 or label[0] != data[0]:
                raise InputError(f"{path}: 'label' has shape {label}; expected multi-hot [N, K] with N = {data[0]}")
            if role != "train" and f["record_id"].shape != (data[0],):
                raise InputError(f"{path}: 'record_id' has shape {f['record_id'].shape}; expected [{data[0]}]")
            if data[0] == 0:
                raise InputError(f"{path}: no samples")
            shapes[role] = {"data": data, "label": label}
    tr = shapes["train"]
    for role in ("val", "test"):
        path = getattr(args, f"{role}_file")
        if shapes[role]["label"][1] != tr["label"][1]:
            raise InputError(f"{path}: {shapes[role]['label'][1]} labels per sample; expected "
                             f"{tr['label'][1]} as in {args.train_file}")
        if shapes[role]["data"][1] != tr["data"][1]:
            raise InputError(f"{path}: {shapes[role]['data'][1]} channels; expected {tr['data'][1]} as in "
                             f"{args.train_file}")
    if tr["data"][2] < args.max_length:
        raise InputError(f"{args.train_file}: records of {tr['data'][2]} samples are shorter than --max_length "
                         f"{args.max_length}")
    return shapes


def load_train(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The training samples the label fraction keeps → (data [M, C, T], labels [M, K], info)."""
    with h5py.File(args.train_file, "r") as f:
        labels = np.asarray(f["label"][:], dtype=np.float32)
        groups = _groups(f)
        keep = label_fraction_indices(labels, args.label_fraction, args.seed, groups)
        if not len(keep):
            raise InputError(f"{args.train_file}: --label_fraction {args.label_fraction:g} keeps no training sample")
        data = _read_rows(f["data"], keep)
        by = next((k for k in ("group_id", "record_id") if k in f), "sample")
    info = {"label_fraction": args.label_fraction, "by": by, "train_samples": int(len(keep)),
            "train_samples_of": int(len(labels)),
            "train_groups": int(len(np.unique(groups[keep]))) if groups is not None else int(len(keep)),
            "train_groups_of": int(len(np.unique(groups))) if groups is not None else int(len(labels))}
    if args.label_fraction < 1:  # which records/patients (or sample indices) were kept, as the engine lists them
        info["train_chosen"] = sorted(np.unique(groups[keep]).tolist()) if groups is not None else keep.tolist()
    return data, labels[keep], info


def load_eval(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with h5py.File(path, "r") as f:
        return (np.asarray(f["data"][:], dtype=np.float32), np.asarray(f["label"][:], dtype=np.float32),
                np.asarray(f["record_id"][:]).astype(str))


def crops(n: int, length: int, size: int, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(sample order, crop offset of each sample) of an epoch: a function of (seed, epoch) only."""
    rng = np.random.default_rng([int(seed) % 2**63, int(epoch), 0xC409])
    return rng.permutation(n), rng.integers(0, length - size + 1, size=n)


def batches(n: int, batch_size: int) -> list[slice]:
    """Batch slices of an epoch; a trailing single sample is dropped (BatchNorm cannot train on one)."""
    out = [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    return out[:-1] if len(out) > 1 and out[-1].stop - out[-1].start == 1 else out


# ------------------------------------------------------------------------------------------------------ metrics
def record_level(probs: np.ndarray, labels: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window rows → one row per record (sorted by id): mean probability, union of labels."""
    uniq, inverse = np.unique(ids, return_inverse=True)
    inverse = inverse.reshape(-1)
    p = np.zeros((len(uniq), probs.shape[1]))
    np.add.at(p, inverse, probs.astype(np.float64))
    p /= np.bincount(inverse, minlength=len(uniq))[:, None]
    y = np.zeros((len(uniq), labels.shape[1]), dtype=np.float32)
    np.maximum.at(y, inverse, (labels > 0.5).astype(np.float32))
    return uniq, p, y


def auroc_macro(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean over labels with both positives and negatives of sklearn's ROC AUC (NaN when there is none)."""
    from sklearn.metrics import roc_auc_score

    pos = labels > 0.5
    scores = [roc_auc_score(pos[:, k], probs[:, k]) for k in range(labels.shape[1]) if 0 < pos[:, k].sum() < len(pos)]
    return float(np.mean(scores)) if scores else math.nan


@torch.no_grad()
def predict(model: nn.Module, data: np.ndarray, device: torch.device, batch_size: int, desc: str) -> np.ndarray:
    model.eval()
    out = []
    for i in tqdm(range(0, len(data), batch_size), desc=desc, leave=False, mininterval=_interval()):
        x = torch.from_numpy(data[i:i + batch_size]).to(device)
        out.append(torch.sigmoid(model(x)).float().cpu().numpy())
    return np.concatenate(out)


def evaluate(model, split, device, batch_size, desc) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    data, labels, ids = split
    ids_r, probs_r, labels_r = record_level(predict(model, data, device, batch_size, desc), labels, ids)
    return auroc_macro(probs_r, labels_r), ids_r, probs_r, labels_r


# ------------------------------------------------------------------------------------------------------ run
def _interval() -> float:
    return 1.0 if sys.stderr.isatty() else 30.0


def schedule(total: int, warmup_frac: float = 0.05):
    """Per-step LR factor: linear warmup over ``warmup_frac`` of the steps, then cosine to 0."""
    warm = max(1, round(warmup_frac * total))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
    return factor


def _save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train_file", required=True, help="training HDF5 (whole records)")
    p.add_argument("--val_file", required=True, help="validation HDF5 (windows; model selection)")
    p.add_argument("--test_file", required=True, help="test HDF5 (windows)")
    p.add_argument("--label_fraction", type=float, default=1.0, help="fraction of labelled records, in (0, 1]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--resume", default=None, choices=["auto"], help="auto: continue from OUTPUT_DIR/latest.pt if any")
    p.add_argument("--max_length", type=int, default=250, help="training crop, samples (default 250 = 2.5 s at 100 Hz)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    p.add_argument("--weight_decay", type=float, default=1e-2)
    p.add_argument("--val_every", type=int, default=1, help="validate every N epochs and after the last")
    p.add_argument("--width", type=int, default=64, help="channels of the first stage (w, w, 2w, 2w)")
    p.add_argument("--kernel_size", type=int, default=5, help="kernel of the residual blocks' convolutions")
    p.add_argument("--dropout", type=float, default=0.2, help="dropout before the linear head")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    args = p.parse_args(argv)
    if not 0 < args.label_fraction <= 1:
        p.error(f"--label_fraction {args.label_fraction:g}: expected a value in (0, 1]")
    for flag in ("max_length", "epochs", "batch_size", "val_every", "width", "kernel_size"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag} must be ≥ 1")
    if args.max_length < 16:
        p.error("--max_length must be ≥ 16 (the network downsamples 16x)")
    return args


def _refuse_or_resume(args: argparse.Namespace, out: Path) -> dict[str, Any] | None:
    """The checkpoint to continue from (None: start afresh); raises InputError for a folder holding another run."""
    latest = out / LATEST
    if args.resume is None:
        if (out / RESULTS).exists():
            raise InputError(f"{out}: holds a finished run ({RESULTS}); pass another --output_dir")
        if latest.exists():
            raise InputError(f"{out}: holds an unfinished run ({LATEST}); pass --resume auto to continue it")
        return None
    if not latest.exists():
        return None
    ckpt = torch.load(latest, map_location="cpu", weights_only=False)
    old = ckpt["args"]
    diff = [f"--{k} {old.get(k)} → {getattr(args, k)}" for k in SAME_ON_RESUME if old.get(k) != getattr(args, k)]
    if diff:
        raise InputError(f"{latest}: was made with other flags ({'; '.join(diff)}); pass them as before or use "
                         "another --output_dir")
    return ckpt


def run(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.output_dir)
    shapes = check_inputs(args)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = _refuse_or_resume(args, out)
    if (n := os.environ.get("OMP_NUM_THREADS")):
        torch.set_num_threads(max(1, int(n)))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":  # plain fp32 and the same numbers on resume
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False

    x_train, y_train, info = load_train(args)
    val, test = load_eval(args.val_file), load_eval(args.test_file)
    channels, num_classes = shapes["train"]["data"][1], shapes["train"]["label"][1]

    torch.manual_seed(args.seed)
    model = ResNet1d(channels, num_classes, args.width, args.kernel_size, args.dropout).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    write_json(out / ARGS, {**vars(args), "parameters": n_params, **info, "channels": channels,
                            "num_classes": num_classes, "device": str(device),
                            "val_windows": int(len(val[0])), "val_records": int(len(np.unique(val[2]))),
                            "test_windows": int(len(test[0])), "test_records": int(len(np.unique(test[2])))})
    steps_per_epoch = len(batches(len(x_train), args.batch_size))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule(args.epochs * steps_per_epoch))
    start, best, best_epoch, history = 0, -math.inf, None, []
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        start, best, best_epoch, history = ckpt["epoch"], ckpt["best"], ckpt["best_epoch"], ckpt["history"]
        _set_rng_state(ckpt["rng"])
        print(f"resuming {out / LATEST} after epoch {start}", flush=True)
    print(f"ResNet1d width {args.width}: {n_params:,} parameters; {info['train_samples']} training samples "
          f"({info['train_groups']} {info['by']} groups of {info['train_groups_of']}), {steps_per_epoch} steps/epoch, "
          f"on {device}", flush=True)

    train_x = torch.from_numpy(x_train)
    train_y = torch.from_numpy(y_train)
    stop_after = int(os.environ.get(STOP_ENV, "0") or 0)
    for epoch in range(start + 1, args.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        order, offsets = crops(len(train_x), train_x.shape[-1], args.max_length, args.seed, epoch)
        span = torch.arange(args.max_length)
        total, seen = 0.0, 0
        bar = tqdm(batches(len(order), args.batch_size), desc=f"epoch {epoch}/{args.epochs}", leave=False,
                   mininterval=_interval())
        for sl in bar:
            idx = torch.from_numpy(order[sl])
            cols = torch.from_numpy(offsets[order[sl]])[:, None] + span  # [B, L]
            x = torch.gather(train_x[idx], 2, cols[:, None, :].expand(-1, train_x.shape[1], -1)).to(device)
            y = train_y[idx].to(device)
            loss = F.binary_cross_entropy_with_logits(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            seen += len(idx)
            bar.set_postfix(loss=f"{total / seen:.4f}", refresh=False)
        entry: dict[str, Any] = {"epoch": epoch, "train_loss": total / seen, "lr": opt.param_groups[0]["lr"]}
        if epoch % args.val_every == 0 or epoch == args.epochs:
            auc = evaluate(model, val, device, 2 * args.batch_size, "val")[0]
            entry["val_record_auroc_macro"] = auc
            if not math.isnan(auc) and auc > best:
                best, best_epoch = auc, epoch
                _save({"model": model.state_dict(), "epoch": epoch, "val_record_auroc_macro": auc,
                       "args": vars(args), "channels": channels, "num_classes": num_classes}, out / BEST)
        entry["seconds"] = time.perf_counter() - t0
        history.append(entry)
        _save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
               "epoch": epoch, "best": best, "best_epoch": best_epoch, "history": history, "rng": _rng_state(),
               "args": vars(args)}, out / LATEST)
        write_json(out / HISTORY, history)
        val_text = (f", val record AUROC {entry['val_record_auroc_macro']:.4f}"
                    if "val_record_auroc_macro" in entry else "")
        print(f"epoch {epoch}/{args.epochs}: loss {entry['train_loss']:.4f}{val_text} ({entry['seconds']:.1f} s)",
              flush=True)
        if stop_after and epoch == stop_after:
            print(f"{STOP_ENV}={stop_after}: stopping as if killed", flush=True)
            raise SystemExit(3)

    if best_epoch is None:  # every validation was undefined (no label with both classes): keep the last weights
        best_epoch = args.epochs
        _save({"model": model.state_dict(), "epoch": best_epoch, "val_record_auroc_macro": math.nan,
               "args": vars(args), "channels": channels, "num_classes": num_classes}, out / BEST)
    model.load_state_dict(torch.load(out / BEST, map_location=device, weights_only=False)["model"])
    auc, ids, probs, labels = evaluate(model, test, device, 2 * args.batch_size, "test")
    tmp = out / "test_records.tmp.npz"
    np.savez(tmp, record_id=ids.astype(str), probs=probs, labels=labels)
    os.replace(tmp, out / RECORDS)
    results = {"record": {"auroc_macro": auc, "records": int(len(ids)), "aggregate": "mean"},
               "best_epoch": best_epoch, "val_record_auroc_macro": None if math.isinf(best) else best,
               "method": "resnet1d", "parameters": n_params}
    write_json(out / RESULTS, results)
    print(f"test record AUROC (macro) {auc:.4f} over {len(ids)} records, best epoch {best_epoch}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
