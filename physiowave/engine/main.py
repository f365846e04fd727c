"""The engine behind ``pretrain.py``, ``finetune.py`` and ``finetune_multilabel.py``: ``main(script)``.

:func:`run` reads top to bottom: flags → task → resume checkpoint → output folder → data → model → every check
→ the folder is claimed → (``--eval``: :func:`evaluate_checkpoint`) → :func:`train` (epochs of ``train_one_epoch``,
``evaluate``, selection, checkpoints, logs) → test with the best model → result files. Every check happens before
the folder is written and before the first training step.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from ..checkpoint import read_checkpoint
from .. import threads
from ..fileio import scalars_of, to_jsonable
from ..models import FusionModel
from .args import parse_args
from .config import RunConfig
from .consensus import check_ranks_agree, check_world_size
from .data import (Indexed, check_labels, data_report, find_nonfinite_values, fit_class_names,
                   open_datasets)
from .distributed import DistEnv, all_reduce_sums, barrier, cleanup, init_distributed
from .errors import ConfigError, NonFiniteLossError
from .logger import RunLogger
from .loop import Precision, evaluate, train_one_epoch
from .model_config import build_run_model, checkpoint_kind, read_model_checkpoint
from .optim import build_optimizer, build_schedule
from .outputs import check_output_dir, claim_output_dir, lock_output_dir, write_checkpoint, write_result, write_text
from .preemption import Preempted, Preemption, dataloader_worker_init, parse_signals
from .probe import compute_features, eval_loader, feature_head
from .samplers import TrainSampler
from .state import Progress, make_checkpoint, restore
from .tasks import LOWER_IS_BETTER, Task, build_task
from .timing import PhaseClock

__all__ = ["main", "run"]

COMPILE_DEVICES = ("cuda",)  # where --compile is measured to pay (docs/benchmarks.md, Performance)
_SCRIPTS = {"pretrain": "pretrain.py", "classification": "finetune.py", "multilabel": "finetune_multilabel.py"}
_ENTRY = {"pretrain": "pretrain", "finetune": "finetune", "multilabel": "finetune_multilabel"}  # task → script


def _log(env: DistEnv, msg: str) -> None:
    if env.is_main:
        print(msg, flush=True)


# --------------------------------------------------------------------------------------------------- the run
def run(args: RunConfig, env: DistEnv) -> dict[str, Any]:
    """Train (or with ``--eval`` only evaluate) as the flags say → the final metrics."""
    t0 = time.perf_counter()
    clock = PhaseClock()
    if args.compile and env.device.type not in COMPILE_DEVICES:
        raise ConfigError(f"--compile needs a CUDA device, got {env.device}: on CPU, "
                          "torch's inductor crashes compiling the wavelet decomposition's backward and compiled blocks "
                          "are slower than eager; drop --compile")
    task = build_task(args)
    if threads.note:
        _log(env, threads.note)
    out = Path(args.output_dir)
    resume_path = _resume_path(args, out / task.latest_name)
    resume = _read_resume(resume_path, task) if resume_path else None
    starts_from = [args.pretrained_path, *(m.checkpoint for m in args.modalities)]
    if args.eval:
        starts_from.append(str(resume_path))  # evaluation results go beside a run only through --output_dir
    stale = check_output_dir(out, resume=None if args.eval else resume_path,
                             resuming=bool(args.resume), starts_from=starts_from, overwrite=args.overwrite)
    data = open_datasets(args, task)
    info = data["info"]
    check_ranks_agree(args, env, info, resume_path, resume)  # several processes: same flags, files and checkpoint
    if not args.eval and (note := check_world_size(info["train_samples"], env)):
        _log(env, note)
    model = build_run_model(args, task, info, resume, resume_path, lambda message: _log(env, message))
    num_classes = model.config.get("num_classes")
    if task.label_kind != "none":
        check_labels(data, num_classes, task.label_kind)
        _fit_class_names(info, num_classes, task, resume, env)
    task.attach(info, num_classes, model)
    _check_select_metric(args, task, has_val=data["val"] is not None,
                         val_records=data["record_ids"]["val"] is not None)
    for line in data_report(info):
        _log(env, line)
    if args.dry_run:  # every check so far; not the NaN scan, which reads all the data
        (info.get("label_fraction") or {}).pop("chosen", None)
        return {"script": f"{_ENTRY[args.task]}.py", "recipe": args.recipe,
                "parameters": sum(p.numel() for p in model.parameters()),
                "config": {**vars(args), "model_config": model.config, "data": info}}
    _check_finite(args, data, env)
    precision = Precision.from_flag(args.use_amp, env.device)
    if env.device.type == "cpu":
        torch.set_flush_denormal(True)  # denormals make CPU kernels up to 5× slower
    chosen = (info.get("label_fraction") or {}).pop("chosen", None)
    if env.is_main:
        claim_output_dir(out, stale)
        write_result(out / "args.json", {**vars(args), "model_config": model.config, "data": info})
        if chosen is not None:  # the records (or samples) --label_fraction trained on
            write_result(out / "label_fraction.json", {**info["label_fraction"], "chosen": chosen})
    barrier(env)
    model.to(env.device)
    if args.compile:
        model.compile_regions()
    if args.eval:
        return evaluate_checkpoint(args, env, task, model, data, resume, precision)
    clock.add("setup", time.perf_counter() - clock.start)
    best = train(args, env, task, model, data, resume, precision, clock)
    with clock.phase("test"):
        test = test_best_model(args, env, task, model, data, precision)
    if env.is_main:
        if test is not None:
            write_result(out / "test_results.json", test)
        write_result(out / "timing.json", clock.report())
        write_text(out / "training_summary.txt", _summary(args, env, model, info, best, test, precision,
                                                          time.perf_counter() - t0))
        _log(env, f"done in {time.perf_counter() - t0:.1f} s ({clock.line()}); outputs in {out}")
    return {"test": test, "best": best}


def _fit_class_names(info: dict[str, Any], num_classes: int, task: Task, resume: dict[str, Any] | None,
                     env: DistEnv) -> None:
    """``info["class_names"]``: one name per model output (:func:`physiowave.engine.data.fit_class_names`): the
    data's names, or the ``--resume`` checkpoint's when those fit the head and the data's do not."""
    names, where = info.get("class_names"), (info["train_files"] or info["val_files"])[0]
    stored = ((resume or {}).get("data") or {}).get("class_names")
    if stored is not None and len(stored) == num_classes and (names is None or len(names) != num_classes):
        names, where = list(stored), "the --resume checkpoint"
    info["class_names"], note = fit_class_names(names, num_classes, task.label_kind, where)
    if note:
        _log(env, note)


def _resume_path(args: RunConfig, latest: Path) -> Path | None:
    """The checkpoint ``--resume`` names (``auto``: the output folder's latest, if there is one)."""
    if not args.resume:
        return None
    if args.resume == "auto":
        return latest if latest.is_file() else None
    if not Path(args.resume).is_file():
        raise ConfigError(f"--resume {args.resume}: no such checkpoint")
    return Path(args.resume)


def _read_resume(path: Path, task: Task) -> dict[str, Any]:
    """The checkpoint to continue or evaluate, once it is known to be this script's kind of training checkpoint."""
    _, _, ckpt = read_model_checkpoint(str(path), "--resume")
    if not isinstance(ckpt, dict) or not ckpt.get("model_config"):
        raise ConfigError(f"--resume {path}: not a PhysioWave training checkpoint (no 'model_config'); to start from "
                          "its weights use --pretrained_path")
    kind = checkpoint_kind(ckpt)
    if kind != task.kind:
        if kind == "pretrain":
            raise ConfigError(f"--resume {path}: a pretraining checkpoint; "
                              f"fine-tune from it with --pretrained_path {path}")
        raise ConfigError(f"--resume {path}: a {kind} checkpoint, which {_SCRIPTS.get(kind, 'another script')} "
                          f"continues; this run is {task.kind} ({_SCRIPTS[task.kind]}"
                          f"{' --task_type ' + task.kind if task.kind != 'pretrain' else ''})")
    return ckpt


def _check_select_metric(args: RunConfig, task: Task, has_val: bool, val_records: bool) -> None:
    names = task.metric_names(has_val)
    if has_val and val_records and task.label_kind != "none":
        names |= {f"record_{n}" for n in task.record_metric_names()}
    if args.select_metric not in names:
        where = "validation" if has_val else "training (there is no validation set)"
        raise ConfigError(f"--select_metric {args.select_metric}: not a {where} metric of this run; choose from "
                          f"{', '.join(sorted(names))}")


def _check_finite(args: RunConfig, data: dict[str, Any], env: DistEnv) -> None:
    """The streaming NaN/inf scan (``--check_data``), on rank 0, its verdict shared with every process."""
    if not args.check_data:
        return
    verdict = [find_nonfinite_values(data, args, progress=True) if env.is_main else None]
    if env.distributed:
        dist.broadcast_object_list(verdict, src=0)
    if verdict[0]:
        raise ConfigError(verdict[0])


# --------------------------------------------------------------------------------------------------- training
def _freeze(model: nn.Module, task: Task, args: RunConfig) -> nn.Module:
    """Freeze what this run does not train → the module that is trained (the head alone when probing)."""
    probe = args.freeze_encoder
    trained = feature_head(model) if probe else model
    keep = {id(p) for p in trained.parameters()}
    frozen = set(task.frozen_parameters(model))
    for name, p in model.named_parameters():
        if name in frozen or id(p) not in keep:
            p.requires_grad_(False)
    if isinstance(model, FusionModel):
        model.freeze_branches(args.freeze_branch or [])
    return trained


def train(args: RunConfig, env: DistEnv, task: Task, model: nn.Module, data: dict[str, Any],
          resume: dict[str, Any] | None, precision: Precision, clock: PhaseClock) -> dict[str, Any]:
    """The epochs: train, validate, select, checkpoint, log → the best ``{metric, value, epoch}``; ``clock``
    gets the seconds of each phase (:mod:`.timing`)."""
    out, started = Path(args.output_dir), clock.mark()
    trained = _freeze(model, task, args)
    probe = trained is not model
    sets = _probe_sets(args, env, model, data, precision, clock) if probe else data
    inner = task.wrap(trained)
    net = DDP(inner, device_ids=[env.device.index] if env.device.type == "cuda" else None) if env.distributed else inner
    sampler = TrainSampler(len(data["train"]), env.rank, env.world_size, args.seed)
    num_micro = math.ceil((len(data["train"]) // env.world_size) / args.batch_size)
    steps_per_epoch = math.ceil(num_micro / args.grad_accumulation_steps)
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    optimizer = build_optimizer(named, args, task, getattr(getattr(model, "fusion", None), "modality_logits", None))
    schedule = build_schedule(args, optimizer, steps_per_epoch)
    progress = Progress(args.select_metric)
    if resume is not None:
        progress = restore(resume, args.resume, optimizer, schedule, precision, args.select_metric)
        # the saved partial sums are every process's total; the others start from zeros under the same names
        progress.sums = progress.sums if env.is_main else dict.fromkeys(progress.sums, 0.0)
    logger = RunLogger(out, env.is_main, progress.history)
    logger.text("args", "\n".join(f"    {k}: {v}" for k, v in sorted(vars(args).items())))
    _log(env,
         f"{task.kind}: {data['info']['train_samples']} training samples, {num_micro} batches of {args.batch_size} "
              f"per process × {env.world_size} process(es), {steps_per_epoch} optimizer steps/epoch, "
              f"{_count(named)} trainable of {_count(model.named_parameters())} parameters, "
              f"{precision.name} on {env.device}")

    def save(metrics: dict[str, Any], *names: Path) -> None:
        if env.is_main:
            with clock.phase("checkpoint"):
                write_checkpoint(make_checkpoint(model, optimizer, schedule, precision, args, task, data["info"],
                                                 progress, metrics, logger.history), *names)

    def after_step(micro: int, sums: dict[str, float]) -> None:
        progress.global_step += 1
        if env.is_main and progress.global_step % 10 == 0:
            logger.scalars("step", {"lr": optimizer.param_groups[0]["lr"]}, progress.global_step)
        due = args.save_every_steps and progress.global_step % args.save_every_steps == 0 and micro < num_micro
        signum = stop.agreed()  # every process, after the same step: a signal to any of them stops all here
        if due or signum:
            progress.micro, progress.sums = micro, _sums_to_save(sums, env)
            save({}, out / task.latest_name)
        if signum:
            raise stop.stopped(signum, out / task.latest_name, f"after step {micro} of epoch {progress.epoch + 1}")

    stop = Preemption(parse_signals(args.preempt_signals), env).install()
    clock.add_since("setup", started)
    try:
        for epoch in range(progress.epoch, args.epochs):
            progress.epoch, t0, before = epoch, time.perf_counter(), dict(clock.seconds)
            with clock.phase("data"):  # a probe's training features (their own phase) are this epoch's input
                loader = _train_loader(
                    args, env, sets["train"], sampler, epoch, progress.micro, workers=not probe,
                    refresh=lambda epoch=epoch: _probe_train_set(args, env, model, data, precision, sets, epoch, clock))
            train_metrics = train_one_epoch(
                net, loader, optimizer, schedule, task, env, precision, epoch=epoch, seed=args.seed,
                accum=args.grad_accumulation_steps, grad_clip=args.grad_clip, num_micro=num_micro,
                start_micro=progress.micro, sums=progress.sums, on_step=after_step,
                desc=f"epoch {epoch + 1}/{args.epochs}", clock=clock)
            progress.micro, progress.sums = 0, {}
            metrics = {"train": train_metrics}
            validate = (epoch + 1) % args.val_every == 0 or epoch + 1 == args.epochs
            with clock.phase("eval"):
                val, _ = evaluate_split(args, env, task, inner, sets["val"] if validate else None, precision, {},
                                        model, data["record_ids"]["val"])
            if val is not None:
                metrics["val"] = val
            # an epoch without validation (--val_every) is never selected: the best is among validated epochs
            is_best = _select(args, progress, metrics, schedule, epoch) if validate or sets["val"] is None else False
            spent = {f"time_{k}": clock.seconds[k] - before[k] for k in ("features", "data", "step", "eval")}
            with clock.phase("log"):
                _log_epoch(args, env, task, logger, model, metrics, optimizer, data, epoch, t0, is_best, spent)
            names = [out / task.latest_name] + ([out / "best_model.pth"] if is_best else [])
            if args.save_freq and (epoch + 1) % args.save_freq == 0:
                names.append(out / f"checkpoint_epoch_{epoch + 1}.pth")
            save(metrics, *names)
            if signum := stop.agreed():  # a signal during validation or the save: this epoch's checkpoint is the place
                raise stop.stopped(signum, out / task.latest_name, f"after epoch {epoch + 1}")
    except NonFiniteLossError as err:
        raise NonFiniteLossError(f"{err}. {_nonfinite_facts(args, out / task.latest_name)}") from None
    finally:
        logger.close()
        stop.restore()
    barrier(env)
    return progress.best


def _count(named: Any) -> str:
    return f"{sum(p.numel() for _, p in named):,}"


def _sums_to_save(sums: dict[str, float], env: DistEnv) -> dict[str, float]:
    """Metric sums of the epoch so far for a mid-epoch checkpoint: the total over processes, kept by rank 0 (a
    resumed run's other ranks start from zero, so the epoch's all-reduced total is unchanged)."""
    total = all_reduce_sums(sums, env)
    return total if env.is_main else {}


def _nonfinite_facts(args: RunConfig, latest: Path) -> str:
    """What is known about a non-finite loss: whether the data were checked, and which checkpoint is left."""
    if args.check_data:
        cause = ("The files were checked and hold no NaN/inf, so the optimisation diverged: try a lower --lr, "
                 "--grad_clip 1.0, or fp32 (no --use_amp)")
    else:
        cause = ("The files were not checked (--no-check_data): a NaN/inf in them gives this, as does a diverging "
                 "optimisation (then try a lower --lr or --grad_clip 1.0)")
    if latest.is_file():
        ckpt = read_checkpoint(latest)
        where = f"after epoch {ckpt['epoch'] + 1}" + (f", step {ckpt['micro_in_epoch']} of the next"
                                                     if ckpt.get("micro_in_epoch") else "")
        return f"{cause}. The last checkpoint, {latest} ({where}), is intact"
    return f"{cause}. No checkpoint was written"


def _select(args: RunConfig, progress: Progress, metrics: dict[str, Any], schedule: Any, epoch: int) -> bool:
    """Step the per-epoch schedule on ``--select_metric`` → whether this epoch is the best so far."""
    source, name = metrics.get("val") or metrics["train"], args.select_metric
    if name.startswith("record_") and name not in source:  # a record-level metric
        source, name = source["record"], name.removeprefix("record_")
    value = float(source[name])
    schedule.step_epoch(value)
    best = progress.best.get("value")
    better = math.isfinite(value) and (best is None or (value < best if name in LOWER_IS_BETTER else value > best))
    if better:
        progress.best.update(value=value, epoch=epoch)
    return better


def _log_epoch(args: RunConfig, env: DistEnv, task: Task, logger: RunLogger, model: nn.Module,
               metrics: dict[str, Any], optimizer: torch.optim.Optimizer, data: dict[str, Any], epoch: int, t0: float,
               is_best: bool, spent: dict[str, float]) -> None:
    """One epoch into the history (``spent``: its seconds waiting for data, stepping, evaluating), TensorBoard and
    the console."""
    lr = optimizer.param_groups[0]["lr"]
    val = metrics.get("val") or {}
    weights = model.modality_weights() if isinstance(model, FusionModel) else None
    row = {f"train_{k}": v for k, v in scalars_of(metrics["train"]).items()}
    row.update({f"val_{k}": v for k, v in scalars_of(val).items()})
    row.update({f"val_record_{k}": v for k, v in scalars_of(val.get("record") or {}).items() if k != "records"})
    row.update(learning_rates=lr, epoch=epoch + 1, epoch_time=time.perf_counter() - t0, **spent)
    row.update({f"modality_weight_{name}": w for name, w in (weights or {}).items()})
    logger.record_epoch(row)
    for prefix, values in (("modality_weight", weights or {}), ("train", metrics["train"]), ("val", val),
                           ("lr", {"lr": lr})):
        logger.scalars(prefix, values, epoch + 1)
    if env.is_main:
        sample = (data["val"] or data["train"])[0]
        task.log_figures(logger, model, val, sample.unsqueeze(0).to(env.device) if torch.is_tensor(sample) else None,
                         epoch + 1)
    shown = {k: v for k, v in row.items() if k.endswith(("loss", "acc", "auroc", "f1_macro", "macro_f1"))}
    shown.update({f"weight {name}": w for name, w in (weights or {}).items()})
    _log(env, f"epoch {epoch + 1}/{args.epochs}: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items())
              + f", lr {lr:.3g}{' (best)' if is_best else ''}, {row['epoch_time']:.1f}s")


# --------------------------------------------------------------------------------------------------- data feeding
def _train_loader(args: RunConfig, env: DistEnv, ds: Any, sampler: TrainSampler, epoch: int, skip_micro: int,
                  workers: bool, refresh: Any) -> DataLoader:
    """Epoch ``epoch``'s training batches from micro-batch ``skip_micro`` on (a probe's features refreshed first)."""
    if not workers:
        ds = refresh()
    elif hasattr(ds, "set_epoch"):
        ds.set_epoch(epoch)
    sampler.set_epoch(epoch, skip=skip_micro * args.batch_size)
    return DataLoader(Indexed(ds), batch_size=args.batch_size, sampler=sampler,
                      num_workers=args.num_workers if workers else 0, pin_memory=env.device.type == "cuda",
                      worker_init_fn=dataloader_worker_init)


def _probe_sets(args: RunConfig, env: DistEnv, model: nn.Module, data: dict[str, Any],
                precision: Precision, clock: PhaseClock) -> dict[str, Any]:
    """Linear probing's sets: validation and test features computed once; training features per epoch (below)."""
    info = data["info"]
    stochastic = bool(args.use_augmentation or (args.max_length and info["stored_length"] > args.max_length))
    with clock.phase("features"):
        sets = {split: compute_features(model, data[split], args, env, precision) if data[split] is not None else None
                for split in ("val", "test")}
    return {**sets, "train": None, "stochastic": stochastic}


def _probe_train_set(args: RunConfig, env: DistEnv, model: nn.Module, data: dict[str, Any],
                     precision: Precision, sets: dict[str, Any], epoch: int, clock: PhaseClock) -> Any:
    """The training features: computed once, or every epoch when random crops or augmentation change them."""
    if sets["train"] is None or sets["stochastic"]:
        if hasattr(data["train"], "set_epoch"):
            data["train"].set_epoch(epoch)
        with clock.phase("features"):
            sets["train"] = compute_features(model, data["train"], args, env, precision)
    return sets["train"]


# --------------------------------------------------------------------------------------------------- evaluation
def evaluate_split(args: RunConfig, env: DistEnv, task: Task, net: nn.Module, ds: Any, precision: Precision,
                   state: dict[str, Any], model: nn.Module, record_ids: np.ndarray | None = None
                   ) -> tuple[dict[str, Any] | None, dict[str, np.ndarray] | None]:
    """Metrics of ``net`` on the whole of ``ds`` (None without a set); ``state``: e.g. thresholds to apply. With
    the samples' ``record_ids`` the metrics gain a ``record`` entry (windows aggregated by ``--aggregate``), and
    the per-record arrays are returned beside them."""
    if ds is None:
        return None, None
    loader = eval_loader(ds, args, env, args.batch_size * 2, workers=not hasattr(ds, "features"))
    outputs = evaluate(net, loader, task, env, precision, seed=args.seed, desc="eval")
    result, records = task.metrics(outputs, state), None
    if record_ids is not None:
        result["record"], records = task.record_metrics(outputs, record_ids, args.aggregate, state)
    if isinstance(model, FusionModel) and (weights := model.modality_weights()):
        result["modality_weights"] = weights
    return result, records


def _write_records(out: Path, name: str, records: dict[str, np.ndarray] | None, result: dict[str, Any]) -> None:
    """``{name}_records.npz``: each record's id, aggregated probabilities ``[R, K]``, label and the decision
    thresholds applied (multi-label), for record-level analyses such as bootstrap intervals."""
    if records is None:
        return
    thresholds = (result.get("record") or {}).get("thresholds")
    extra = {"thresholds": np.asarray(thresholds, dtype=np.float64)} if thresholds is not None else {}
    tmp = out / f"{name}_records.tmp.npz"
    np.savez(tmp, **records, **extra)
    os.replace(tmp, out / f"{name}_records.npz")


def test_best_model(args: RunConfig, env: DistEnv, task: Task, model: nn.Module, data: dict[str, Any],
                    precision: Precision) -> dict[str, Any] | None:
    """The test metrics of ``best_model.pth`` (with its validation thresholds), or None without a test set."""
    if data["test"] is None:
        return None
    out = Path(args.output_dir)
    state, epoch = {}, None
    if (out / "best_model.pth").is_file():
        ckpt = read_checkpoint(out / "best_model.pth", map_location="cpu")
        model.load_state_dict(ckpt["model_state_dict"])
        state = {k: ckpt[k] for k in ("thresholds", "record_thresholds") if ckpt.get(k) is not None}
        epoch = ckpt.get("epoch")
    result, records = evaluate_split(args, env, task, task.wrap(model), data["test"], precision, state, model,
                                     data["record_ids"]["test"])
    result["best_epoch"] = None if epoch is None else epoch + 1
    if env.is_main:
        _write_records(out, "test", records, result)
    return result


def evaluate_checkpoint(args: RunConfig, env: DistEnv, task: Task, model: nn.Module, data: dict[str, Any],
                        resume: dict[str, Any], precision: Precision) -> dict[str, Any]:
    """``--eval``: the ``--resume`` checkpoint on the validation and test files; thresholds tuned on validation
    (else the checkpoint's) are applied to test."""
    net, out = task.wrap(model), Path(args.output_dir)
    val, val_records = evaluate_split(args, env, task, net, data["val"], precision, {}, model,
                                      data["record_ids"]["val"])
    state = {"thresholds": (val or {}).get("thresholds") or resume.get("thresholds"),
             "record_thresholds": (((val or {}).get("record") or {}).get("thresholds")
                                   or resume.get("record_thresholds"))}
    test, test_records = evaluate_split(args, env, task, net, data["test"], precision,
                                        {k: v for k, v in state.items() if v is not None}, model,
                                        data["record_ids"]["test"])
    for name, result, records in (("val", val, val_records), ("test", test, test_records)):
        if result is not None and env.is_main:
            write_result(out / f"{name}_results.json", result)
            _write_records(out, name, records, result)
            _log(env, f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in scalars_of(result).items()))
    return {"val": val, "test": test}


def _summary(args: RunConfig, env: DistEnv, model: nn.Module, info: dict[str, Any], best: dict[str, Any],
             test: dict[str, Any] | None, precision: Precision, elapsed: float) -> str:
    loaded = info.get("pretrained") or {}
    source = loaded.get("path") or ", ".join(f"{n} from {r['path']}" for n, r in loaded.items())
    lines = [f"PhysioWave {args.task} run, {time.strftime('%Y-%m-%d %H:%M:%S')}", f"output: {args.output_dir}",
             f"recipe: {args.recipe or 'none'}",
             f"epochs: {args.epochs}", f"best {best.get('metric')}: {best.get('value')} (epoch "
             f"{None if best.get('epoch') is None else best['epoch'] + 1})",
             f"parameters: {sum(p.numel() for p in model.parameters()):,}",
             f"train files: {len(info['train_files'])}, val files: {len(info['val_files'])}",
             f"pretrained: {source or 'none'}", f"freeze encoder: {args.freeze_encoder}",
             f"processes: {env.world_size}, device: {env.device}, precision: {precision.name}",
             f"wall time: {elapsed:.1f} s"]
    if isinstance(model, FusionModel) and (weights := model.modality_weights()):
        lines.append("modality weights: " + ", ".join(f"{n} {w:.4f}" for n, w in weights.items()))
    if test:
        lines += ["test:"] + [f"  {k}: {v:.6g}" for k, v in scalars_of(test).items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------- entry point
def main(script: str, argv: list[str] | None = None) -> int:
    """Entry point of the scripts (``script``: "pretrain", "finetune" or "multilabel"): user errors are one line
    and exit status 1; unexpected errors keep their traceback."""
    args = parse_args(script, argv)
    try:
        try:
            env = init_distributed(args.device, args.world_size)
        except RuntimeError as err:
            raise ConfigError(str(err)) from err
        torch.manual_seed(args.seed)
        with contextlib.ExitStack() as lock:
            _lock_output_dir(args, env, lock)
            return _run_and_report(args, env)
    except (ConfigError, NonFiniteLossError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Preempted as err:  # the step checkpoint is written: the same command with --resume auto continues
        if err.report:
            print(f"stopped: {err}", file=sys.stderr, flush=True)
        return err.status
    finally:
        cleanup()


def _lock_output_dir(args: RunConfig, env: DistEnv, stack: contextlib.ExitStack) -> None:
    """Rank 0 of a run that writes holds ``--output_dir``'s lock until the run ends; every rank learns whether it
    got it, so a refused run stops on all ranks at once."""
    error = None
    if env.is_main and not args.dry_run:
        try:
            stack.enter_context(lock_output_dir(Path(args.output_dir)))
        except ConfigError as err:
            error = err
    if env.distributed and all_reduce_sums({"failed": float(error is not None)}, env)["failed"] and error is None:
        raise ConfigError(f"--output_dir {args.output_dir}: rank 0 could not lock it (see its message)")
    if error is not None:
        raise error


def _run_and_report(args: RunConfig, env: DistEnv) -> int:
    """:func:`run`; with ``--dry_run`` its report as one JSON object on stdout."""
    if args.dry_run:  # stdout carries the one JSON object; the run's messages go to stderr
        with contextlib.redirect_stdout(sys.stderr):
            report = run(args, env)
        if env.is_main:
            print(json.dumps(to_jsonable(report)), flush=True)
        return 0
    run(args, env)
    return 0
