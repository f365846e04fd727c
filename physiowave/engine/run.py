"""The three entry points, wiring only: ``main("pretrain" | "finetune" | "multilabel")``.

Flow: flags → processes/devices → data → model (pretrained or resumed) → task → epochs of
``train_one_epoch`` + ``evaluate`` with checkpoints → test with the best model → result files.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset

from .. import __version__
from ..checkpoint import load_state_dict_checked, read_checkpoint, save_checkpoint
from ..models import FusionModel
from .args import MODEL_DEFAULTS, parse_args
from .distributed import DistEnv, barrier, cleanup, init_distributed
from .logger import RunLogger, scalars_of, to_jsonable, write_json
from .loop import NonFiniteLossError, Precision, evaluate, train_one_epoch
from .samplers import EvalSampler, TrainSampler
from .schedule import build_scheduler
from .setup import (ConfigError, Indexed, build_fusion_model, build_model, build_optimizer, checkpoint_model_config,
                    frozen_parameter_names, head_config, load_pretrained, modalities_of, open_datasets, output_paths,
                    resolve_model_config)
from .tasks import LOWER_IS_BETTER, Task, build_task

__all__ = ["main", "run"]


# --------------------------------------------------------------------------------------------------- helpers
def _log(env: DistEnv, msg: str) -> None:
    if env.is_main:
        print(msg, flush=True)


def _eval_loader(ds: Dataset, args: argparse.Namespace, env: DistEnv, batch_size: int | None = None) -> DataLoader:
    return DataLoader(Indexed(ds), batch_size=batch_size or args.batch_size, sampler=EvalSampler(len(ds), env.rank, env.world_size),
                      num_workers=args.num_workers, pin_memory=env.device.type == "cuda")


def _rng_state() -> dict[str, Any]:
    import random

    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "python": random.getstate()}


class FeatureTask(Task):
    """The frozen model's features (``model.features``: pooled encoder tokens, or a fusion model's branch
    features), for linear probing."""

    def eval_step(self, model, batch, generator):
        x, y = batch
        return {"features": model.features(x).float().cpu().numpy(), "labels": y.cpu().numpy()}


class ProbeHead(nn.Module):
    """The classification head applied to cached pooled features ``[B, D]`` → logits ``[B, K]``."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head.classify(features)


def feature_head(model: nn.Module) -> nn.Module:
    """The part of the model that maps ``model.features(x)`` to logits: what linear probing trains."""
    return model.fusion if isinstance(model, FusionModel) else ProbeHead(model.task_heads["classification"])


def _describe_modalities(model: FusionModel, modalities: dict[str, dict[str, Any]]) -> list[str]:
    """One log line per modality: its source, shape, and the padding to its branch's patch size."""
    lines = []
    for name, m in modalities.items():
        P, C, T = model.branches[name].patch_size, m["channels"], m["length"]
        pad = f", right-padded to {-(-T // P) * P} (patch size {P})" if T % P else ""
        lines.append(f"modality {name} ({m['source']}): {C} channel{'s' * (C != 1)} × {T} samples{pad}")
    return lines


def _check_resumed_modalities(args: argparse.Namespace, config: dict[str, Any], path: Path) -> None:
    """A fusion checkpoint resumes with the same ``--modality`` names, a single-modality one without any."""
    stored = list(config.get("modalities") or [])
    given = [m.name for m in modalities_of(args)]
    if stored != given:
        want = f"--modality flags for {', '.join(stored)}" if stored else "no --modality flags"
        raise ConfigError(f"--resume {path}: the checkpoint needs {want}, got {', '.join(given) or 'none'}")


class FeatureSet(Dataset):
    def __init__(self, features: np.ndarray, labels: np.ndarray):
        self.features, self.labels = torch.from_numpy(features), torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int):
        return self.features[i], self.labels[i]


def _features(model: nn.Module, ds: Dataset, args: argparse.Namespace, env: DistEnv, precision: Precision) -> FeatureSet:
    out = evaluate(model, _eval_loader(ds, args, env), FeatureTask(), env, precision, seed=args.seed, desc="features")
    return FeatureSet(out["features"].astype(np.float32), out["labels"])


# --------------------------------------------------------------------------------------------------- run
class Run:
    """State of one training/evaluation run (built by :func:`run`)."""

    def __init__(self, args: argparse.Namespace, env: DistEnv):
        self.args, self.env = args, env
        self.paths = output_paths(args)
        self.precision = Precision.from_flag(args.use_amp, env.device)
        if env.device.type == "cpu":
            torch.set_flush_denormal(True)  # denormals make CPU kernels up to 5× slower
        self.data = open_datasets(args)
        self.info = self.data["info"]
        self._build_model()
        self.task = build_task(args, self.model.config.get("num_classes"), np.asarray(self.info.get("class_counts", [])),
                               self.info["train_samples"], self.info.get("class_names"),
                               self.model.config.get("objective", "original"))

    # -- model ----------------------------------------------------------------------------------------
    def _build_model(self) -> None:
        args, env = self.args, self.env
        resume = self._resume_path()
        self.resume_ckpt = None
        if resume is not None:
            config, state, ckpt = checkpoint_model_config(str(resume))
            self.resume_ckpt = ckpt
            if not ckpt.get("model_config"):
                raise ConfigError(f"--resume {resume}: not a PhysioWave training checkpoint (no 'model_config')")
            for key in MODEL_DEFAULTS[args.task]:
                flag = getattr(args, key, None)
                if flag is not None and key in config and flag != config[key]:
                    raise ConfigError(f"--{key} {flag} contradicts the checkpoint being resumed {resume} ({key}={config[key]})")
            _check_resumed_modalities(args, config, resume)
            model = build_model(config)
            try:
                load_state_dict_checked(model, state, source=str(resume))
            except ValueError as err:
                raise ConfigError(str(err)) from err
            verb = "evaluating" if getattr(args, "eval", False) else "resuming from"
            _log(env, f"{verb} {resume} (saved after epoch {ckpt.get('epoch', -1) + 1})")
        elif self.info.get("modalities"):
            model = build_fusion_model(args, self.info, self._num_classes())
            for name, report in (self.info.get("pretrained") or {}).items():
                _log(env, f"branch {name}: loaded {report['loaded']}/{report['total']} tensors from {report['path']}")
        else:
            stored = state = None
            source = args.pretrained_path or None
            if source:
                stored, state, _ = checkpoint_model_config(source)
            config = resolve_model_config(args, self.info["channels"], stored, source)
            if args.task != "pretrain":
                config.update(head_config(args, self._num_classes(), config["embed_dim"]))
            model = build_model(config)
            if source:
                report = load_pretrained(model, source, state)
                _log(env, f"loaded {report['loaded']}/{report['total']} tensors from {source} (every encoder tensor; "
                          f"{len(report['skipped'])} head tensors newly initialised)")
                self.info["pretrained"] = {"path": source, **{k: v for k, v in report.items() if k != "ignored"}}
        if isinstance(model, FusionModel):
            for line in _describe_modalities(model, self.info["modalities"]):
                _log(env, line)
            model.freeze_branches(getattr(args, "freeze_branch", None) or [])
        elif self.info["length"] % model.patch_size:
            length, P = self.info["length"], model.patch_size
            raise ConfigError(f"samples are {length} long, not a multiple of --patch_size {P}: pass --max_length "
                              f"{max(P, length // P * P)} or {-(-length // P) * P}")
        model.set_grad_checkpointing(args.grad_checkpointing)
        self.frozen = frozen_parameter_names(model, args.task)
        probe = args.task != "pretrain" and args.freeze_encoder
        trainable = {id(p) for p in feature_head(model).parameters()} if probe else None
        for name, p in model.named_parameters():
            if name in self.frozen or (trainable is not None and id(p) not in trainable):
                p.requires_grad_(False)
        self.model = model.to(self.env.device)
        self.probe = probe

    def _num_classes(self) -> int:
        """Classes of the head: the data's, or ``--num_classes`` when it is larger."""
        num_classes = self.info["num_classes"]
        requested = getattr(self.args, "num_classes", None)
        if requested:
            if requested < num_classes:
                raise ConfigError(f"--num_classes {requested}: the training labels go up to {num_classes - 1}")
            num_classes = requested
        return num_classes

    def _resume_path(self) -> Path | None:
        r = self.args.resume
        if not r:
            return None
        if r == "auto":
            latest = self.paths["latest"]
            return latest if latest.is_file() else None
        if not Path(r).is_file():
            raise ConfigError(f"--resume {r}: no such checkpoint")
        return Path(r)

    # -- checkpoints ----------------------------------------------------------------------------------
    def _checkpoint(self, epoch: int, next_epoch: int, micro: int, metrics: dict, epoch_sums: dict | None = None) -> dict:
        args = self.args
        ckpt: dict[str, Any] = {
            "epoch": epoch, "next_epoch": next_epoch, "micro_in_epoch": micro, "global_step": self.global_step,
            "model_state_dict": self.model.state_dict(), "optimizer_state_dict": self.optimizer.state_dict(),
            "scheduler_state_dict": self.schedule.state_dict(),
            "scaler_state_dict": self.precision.scaler.state_dict() if self.precision.scaler else None,
            "metrics": to_jsonable(metrics), "args": to_jsonable(vars(args)), "model_config": to_jsonable(self.model.config),
            "best": dict(self.best), "history": to_jsonable(self.logger.history), "rng": _rng_state(),
            "epoch_sums": to_jsonable(epoch_sums or {}), "data": to_jsonable(self.info), "physiowave_version": __version__,
        }
        if args.task != "pretrain":
            val = metrics.get("val", {})
            ckpt.update({f"val_{k}": v for k, v in scalars_of(val).items()})
            ckpt["val_metrics"] = to_jsonable(val)
            if "thresholds" in val:
                ckpt["thresholds"] = val["thresholds"]
        return ckpt

    def _save(self, ckpt: dict, *names: Path) -> None:
        if self.env.is_main:
            for path in names:
                save_checkpoint(ckpt, path)

    # -- training -------------------------------------------------------------------------------------
    def _loaders(self) -> None:
        args, env = self.args, self.env
        self.train_set = self.data["train"]
        if self.probe:
            self.model.eval()
            self.train_features = None
            self.stochastic = bool(args.use_augmentation or (args.max_length and self.info["stored_length"] > args.max_length))
            self.eval_sets = {k: _features(self.model, ds, args, env, self.precision) if ds is not None else None
                              for k, ds in (("val", self.data["val"]), ("test", self.data["test"]))}
        else:
            self.eval_sets = {"val": self.data["val"], "test": self.data["test"]}
        n = len(self.train_set)
        self.sampler = TrainSampler(n, env.rank, env.world_size, args.seed)
        self.num_micro = math.ceil((n // env.world_size) / args.batch_size)
        self.steps_per_epoch = math.ceil(self.num_micro / args.grad_accumulation_steps)

    def _train_loader(self, epoch: int, skip_micro: int) -> DataLoader:
        args, env = self.args, self.env
        ds = self.train_set
        if self.probe:
            if self.train_features is None or self.stochastic:
                if hasattr(ds, "set_epoch"):
                    ds.set_epoch(epoch)
                self.train_features = _features(self.model, ds, args, env, self.precision)
            ds = self.train_features
        elif hasattr(ds, "set_epoch"):
            ds.set_epoch(epoch)
        self.sampler.set_epoch(epoch, skip=skip_micro * args.batch_size)
        return DataLoader(Indexed(ds), batch_size=args.batch_size, sampler=self.sampler,
                          num_workers=0 if self.probe else args.num_workers, pin_memory=env.device.type == "cuda")

    def _net(self) -> tuple[nn.Module, nn.Module]:
        """(module trained, possibly DDP-wrapped; the same module unwrapped for evaluation)."""
        inner = self.task.wrap(feature_head(self.model) if self.probe else self.model)
        if self.env.distributed:
            ids = [self.env.device.index] if self.env.device.type == "cuda" else None
            return DDP(inner, device_ids=ids), inner
        return inner, inner

    def _evaluate(self, split: str, state: dict[str, Any]) -> dict[str, Any] | None:
        ds = self.eval_sets.get(split)
        if ds is None:
            return None
        net = self.eval_net
        loader = _eval_loader(ds, self.args, self.env, batch_size=self.args.batch_size * 2)
        outputs = evaluate(net, loader, self.task, self.env, self.precision, seed=self.args.seed, desc=split)
        result = self.task.metrics(outputs, state)
        if weights := self.modality_weights():
            result["modality_weights"] = weights
        return result

    def modality_weights(self) -> dict[str, float] | None:
        """The fusion model's learned modality weights (None for one modality or concatenation)."""
        return self.model.modality_weights() if isinstance(self.model, FusionModel) else None

    def _selected(self, metrics: dict[str, Any]) -> tuple[str, float]:
        name = self.args.select_metric
        source = metrics.get("val") or metrics["train"]
        if name not in source:
            raise ConfigError(f"--select_metric {name}: not among the metrics {sorted(scalars_of(source))}")
        return name, float(source[name])

    def _better(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        best = self.best.get("value")
        if best is None:
            return True
        return value < best if self.args.select_metric in LOWER_IS_BETTER else value > best

    def train(self) -> None:
        args, env = self.args, self.env
        self._loaders()
        self.net, self.eval_net = self._net()
        named = [(n, p) for n, p in self.net.named_parameters() if p.requires_grad]
        params = [p for _, p in named]
        fusion = self.model.fusion if isinstance(self.model, FusionModel) else None
        self.optimizer = build_optimizer(named, args, getattr(fusion, "modality_logits", None))
        total = args.epochs * self.steps_per_epoch
        warmup = args.warmup_epochs * self.steps_per_epoch
        if args.warmup_epochs == 0:
            warmup = int(0.1 * total)
        mode = "min" if args.select_metric in LOWER_IS_BETTER else "max"
        self.schedule = build_scheduler(args.scheduler, self.optimizer, epochs=args.epochs, steps_per_epoch=self.steps_per_epoch,
                                        warmup_steps=min(warmup, total), min_lr=args.min_lr, T_0=args.T_0, T_mult=args.T_mult,
                                        step_size=args.lr_step_size, gamma=args.lr_gamma, patience=args.plateau_patience, mode=mode)
        self.best: dict[str, Any] = {"metric": args.select_metric}
        self.global_step, start_epoch, start_micro, epoch_sums = 0, 0, 0, None
        history = None
        if self.resume_ckpt is not None:
            c = self.resume_ckpt
            try:
                self.optimizer.load_state_dict(c["optimizer_state_dict"])
            except ValueError as err:  # e.g. one parameter group: written before weight decay spared norms and filters
                raise ConfigError(f"--resume {args.resume}: its optimizer state does not fit this version's ({err}); "
                                  "continue from its weights with --pretrained_path instead") from err
            self.schedule.load_state_dict(c["scheduler_state_dict"])
            if self.precision.scaler and c.get("scaler_state_dict"):
                self.precision.scaler.load_state_dict(c["scaler_state_dict"])
            self.best = dict(c.get("best") or self.best)
            self.global_step = int(c.get("global_step", 0))
            start_epoch, start_micro = int(c["next_epoch"]), int(c.get("micro_in_epoch", 0))
            epoch_sums = c.get("epoch_sums") or None
            history = c.get("history")
        self.logger = RunLogger(self.paths["dir"], env.is_main, history)
        if env.is_main:
            self.logger.text("args", "\n".join(f"    {k}: {v}" for k, v in sorted(vars(args).items())))
        _log(env, f"{args.task}: {self.info['train_samples']} training samples, {self.num_micro} batches of {args.batch_size} "
                  f"per process × {env.world_size} process(es), {self.steps_per_epoch} optimizer steps/epoch, "
                  f"{sum(p.numel() for p in params):,} trainable of {sum(p.numel() for p in self.model.parameters()):,} "
                  f"parameters, {self.precision.name} on {env.device}")
        for epoch in range(start_epoch, args.epochs):
            t0 = time.perf_counter()
            loader = self._train_loader(epoch, start_micro)

            def on_step(micro: int, epoch: int = epoch) -> None:
                self.global_step += 1
                lr = self.optimizer.param_groups[0]["lr"]
                if env.is_main and self.global_step % 10 == 0:
                    self.logger.scalars("step", {"lr": lr}, self.global_step)

            train_metrics = train_one_epoch(
                self.net, loader, self.optimizer, self.schedule, self.task, env, self.precision, epoch=epoch, seed=args.seed,
                accum=args.grad_accumulation_steps, grad_clip=args.grad_clip, num_micro=self.num_micro,
                start_micro=start_micro, params=params, on_step=on_step, desc=f"epoch {epoch + 1}/{args.epochs}")
            start_micro = 0
            metrics: dict[str, Any] = {"train": train_metrics}
            val = self._evaluate("val", {})
            if val is not None:
                metrics["val"] = val
            name, value = self._selected(metrics)
            self.schedule.step_epoch(value)
            lr = self.optimizer.param_groups[0]["lr"]
            is_best = self._better(value)
            if is_best:
                self.best.update(value=value, epoch=epoch)
            row = {f"train_{k}": v for k, v in scalars_of(train_metrics).items()}
            row.update({f"val_{k}": v for k, v in scalars_of(val or {}).items()})
            row.update(learning_rates=lr, epoch=epoch + 1, epoch_time=time.perf_counter() - t0)
            weights = self.modality_weights() or {}
            row.update({f"modality_weight_{name}": w for name, w in weights.items()})
            self.logger.record_epoch(row)
            self.logger.scalars("modality_weight", weights, epoch + 1)
            self.logger.scalars("train", train_metrics, epoch + 1)
            self.logger.scalars("val", val or {}, epoch + 1)
            self.logger.scalars("lr", {"lr": lr}, epoch + 1)
            self._log_images(metrics, epoch + 1)
            ckpt = self._checkpoint(epoch, epoch + 1, 0, metrics)
            names = [self.paths["latest"]]
            if is_best:
                names.append(self.paths["best"])
            if args.save_freq and (epoch + 1) % args.save_freq == 0:
                names.append(self.paths["dir"] / f"checkpoint_epoch_{epoch + 1}.pth")
            self._save(ckpt, *names)
            shown = {k: v for k, v in row.items() if k.endswith(("loss", "acc", "auroc", "f1_macro", "macro_f1"))}
            shown.update({f"weight {name}": w for name, w in weights.items()})
            _log(env, f"epoch {epoch + 1}/{args.epochs}: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items())
                      + f", lr {lr:.3g}{' (best)' if is_best else ''}, {row['epoch_time']:.1f}s")
        barrier(env)
        self.logger.close()

    def _log_images(self, metrics: dict[str, Any], step: int) -> None:
        """Figures in TensorBoard: the validation confusion matrix; in pretraining a masked reconstruction of the
        first validation sample (channel 0) and the learned wavelet filters."""
        if not self.env.is_main:
            return
        from .. import figures
        from ..models import introspect

        val = metrics.get("val") or {}
        if "confusion_matrix" in val:
            names = self.info.get("class_names") or [str(i) for i in range(len(val["confusion_matrix"]))]
            self.logger.figure("val/confusion_matrix", lambda: figures.confusion_matrix(np.asarray(val["confusion_matrix"]), names), step)
        if self.args.task == "pretrain":
            ds = self.data["val"] or self.data["train"]
            x = ds[0].unsqueeze(0).to(self.env.device)
            self.model.eval()
            target, pred, mask = introspect.masked_reconstruction(self.model, x, self.args.mask_ratio, self.args.masking_strategy,
                                                                  self.args.importance_ratio, seed=self.args.seed)
            bands = introspect.band_names(self.model.config["max_level"])
            self.logger.figure("pretrain/reconstruction", lambda: figures.masked_reconstruction(
                target[0, 0], pred[0, 0], mask[0, 0], self.model.patch_size, bands), step)
            self.logger.figure("pretrain/wavelet_filters", lambda: figures.wavelet_filters(*introspect.learned_filters(self.model)), step)

    # -- test -----------------------------------------------------------------------------------------
    def test(self) -> dict[str, Any] | None:
        if self.eval_sets.get("test") is None:
            return None
        best = self.paths["best"]
        if best.is_file():
            ckpt = read_checkpoint(best, map_location="cpu")
            self.model.load_state_dict(ckpt["model_state_dict"])
            state = {"thresholds": ckpt.get("thresholds")} if ckpt.get("thresholds") is not None else {}
            epoch = ckpt.get("epoch")
        else:
            state, epoch = {}, None
        result = self._evaluate("test", state)
        result["best_epoch"] = None if epoch is None else epoch + 1
        return result


def _pretrained_sources(info: dict[str, Any]) -> str:
    """The checkpoint the model started from, or for fusion each branch's (``name from path``)."""
    loaded = info.get("pretrained") or {}
    if "path" in loaded:
        return loaded["path"]
    return ", ".join(f"{name} from {report['path']}" for name, report in loaded.items())


def _summary(r: Run, test: dict[str, Any] | None, elapsed: float) -> str:
    args = r.args
    lines = [f"PhysioWave {args.task} run, {time.strftime('%Y-%m-%d %H:%M:%S')}", f"output: {args.output_dir}",
             f"epochs: {args.epochs}", f"best {r.best.get('metric')}: {r.best.get('value')} (epoch "
             f"{None if r.best.get('epoch') is None else r.best['epoch'] + 1})",
             f"final lr: {r.optimizer.param_groups[0]['lr']:.6g}",
             f"parameters: {sum(p.numel() for p in r.model.parameters()):,}",
             f"train files: {len(r.info['train_files'])}, val files: {len(r.info['val_files'])}",
             f"pretrained: {_pretrained_sources(r.info) or args.pretrained_path or 'none'}",
             f"freeze encoder: {getattr(args, 'freeze_encoder', False)}",
             f"processes: {r.env.world_size}, device: {r.env.device}, precision: {r.precision.name}",
             f"wall time: {elapsed:.1f} s"]
    if weights := r.modality_weights():
        lines.append("modality weights: " + ", ".join(f"{n} {w:.4f}" for n, w in weights.items()))
    if test:
        lines += ["test:"] + [f"  {k}: {v:.6g}" for k, v in scalars_of(test).items()]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace, env: DistEnv) -> dict[str, Any]:
    """Train (or with ``--eval`` only evaluate) as the flags say; returns the final metrics."""
    t0 = time.perf_counter()
    out = Path(args.output_dir)
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
    barrier(env)
    r = Run(args, env)
    if env.is_main:
        write_json(out / "args.json", {**vars(args), "model_config": r.model.config, "data": r.info})
    if getattr(args, "eval", False):
        r.probe = False
        r.eval_sets = {"val": r.data["val"], "test": r.data["test"]}
        r.eval_net = r.task.wrap(r.model)
        val = r._evaluate("val", {})
        thresholds = (val or {}).get("thresholds") or (r.resume_ckpt or {}).get("thresholds")
        test = r._evaluate("test", {"thresholds": thresholds} if thresholds is not None else {})
        if env.is_main:
            for name, result in (("val", val), ("test", test)):
                if result is not None:
                    write_json(out / f"{name}_results.json", result)
                    _log(env, f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in scalars_of(result).items()))
        return {"val": val, "test": test}
    r.train()
    test = r.test()
    if env.is_main:
        if test is not None:
            write_json(out / "test_results.json", test)
        (out / "training_summary.txt").write_text(_summary(r, test, time.perf_counter() - t0))
        _log(env, f"done in {time.perf_counter() - t0:.1f} s; outputs in {out}")
    return {"test": test, "best": r.best}


def main(task: str, argv: list[str] | None = None) -> int:
    """Entry point of the scripts: one-line errors for bad input, exit status 1."""
    args = parse_args(task, argv)
    env = None
    try:
        env = init_distributed(args.device, args.world_size)
        torch.manual_seed(args.seed)
        run(args, env)
        return 0
    except (ConfigError, NonFiniteLossError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        cleanup()
