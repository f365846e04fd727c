"""LR trajectories of ``build_scheduler`` against closed-form formulas, exact resume, and flag errors."""
from __future__ import annotations

import io
import math

import pytest
import torch

from physiowave.engine.schedule import SCHEDULERS, build_scheduler

BASE = 1e-3


def _optimizer(lrs: tuple[float, ...] = (BASE,)) -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in lrs]
    return torch.optim.AdamW(groups, lr=lrs[0])


def _run(sched, opt, epochs: int, steps: int, metrics=None) -> list[list[float]]:
    """LR of every group seen by each optimizer step, as a training loop would use them."""
    seen = []
    for epoch in range(epochs):
        for _ in range(steps):
            seen.append([g["lr"] for g in opt.param_groups])
            opt.step()
            sched.step_batch()
        sched.step_epoch(None if metrics is None else metrics[epoch])
    return seen


def test_cosine_warmup_then_decay_to_min_lr_per_group():
    opt = _optimizer((BASE, 4 * BASE))
    min_lr, warmup, epochs, steps = 1e-5, 4, 3, 6
    total = epochs * steps
    sched = build_scheduler("cosine", opt, epochs=epochs, steps_per_epoch=steps, warmup_steps=warmup,
                            min_lr=min_lr)
    seen = _run(sched, opt, epochs, steps)
    for g, base in enumerate((BASE, 4 * BASE)):
        assert seen[0][g] == pytest.approx(base / warmup)  # first update is not LR 0
        assert seen[warmup - 1][g] == pytest.approx(base)
        s = 11
        expected = min_lr + (base - min_lr) * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup)))
        assert seen[s][g] == pytest.approx(expected)
        assert opt.param_groups[g]["lr"] == pytest.approx(min_lr)  # after the last step
    assert all(b <= a + 1e-15 for a, b in zip([r[0] for r in seen[warmup:]], [r[0] for r in seen[warmup + 1:]]))
    for _ in range(5):  # stays at the floor past the end
        opt.step()
        sched.step_batch()
    assert opt.param_groups[0]["lr"] == pytest.approx(min_lr)


def test_linear_midpoint_and_end():
    opt = _optimizer()
    min_lr, warmup, total = 1e-4, 2, 12
    sched = build_scheduler("linear", opt, epochs=2, steps_per_epoch=6, warmup_steps=warmup, min_lr=min_lr)
    seen = [r[0] for r in _run(sched, opt, 2, 6)]
    assert seen[0] == pytest.approx(BASE / 2)
    assert seen[warmup + (total - warmup) // 2] == pytest.approx((BASE + min_lr) / 2)  # halfway of the decay
    assert opt.param_groups[0]["lr"] == pytest.approx(min_lr)


def test_no_warmup_starts_at_base():
    opt = _optimizer()
    sched = build_scheduler("cosine", opt, epochs=1, steps_per_epoch=4)
    assert _run(sched, opt, 1, 4)[0][0] == pytest.approx(BASE)


def test_cosine_restarts_period_counts_epochs():
    opt = _optimizer()
    min_lr, t0 = 1e-5, 3
    sched = build_scheduler("cosine_restarts", opt, epochs=11, steps_per_epoch=5, T_0=t0, T_mult=2, min_lr=min_lr)
    seen = _run(sched, opt, 11, 5)
    per_epoch = [seen[e * 5][0] for e in range(11)]
    assert all(seen[e * 5 + i][0] == per_epoch[e] for e in range(11) for i in range(5))  # constant within an epoch
    # cycles of 3, 6, 12 epochs: restarts at epochs 0, 3 and 9
    cycle = [(e, 3) for e in range(3)] + [(e, 6) for e in range(6)] + [(e, 12) for e in range(2)]
    for lr, (t_cur, t_i) in zip(per_epoch, cycle, strict=True):
        assert lr == pytest.approx(min_lr + (BASE - min_lr) * 0.5 * (1 + math.cos(math.pi * t_cur / t_i)))
    assert per_epoch[3] == per_epoch[9] == pytest.approx(BASE)


def test_onecycle_peak_and_last_step_do_not_raise():
    opt = _optimizer((BASE, 2 * BASE))
    epochs, steps = 4, 10
    sched = build_scheduler("onecycle", opt, epochs=epochs, steps_per_epoch=steps)
    seen = _run(sched, opt, epochs, steps)
    for g, base in enumerate((BASE, 2 * BASE)):
        lrs = [r[g] for r in seen]
        assert max(lrs) == pytest.approx(10 * base)
        assert lrs.index(max(lrs)) == int(0.1 * epochs * steps) - 1
        assert lrs[0] == pytest.approx(10 * base / 25)  # torch default div_factor
        assert lrs[-1] == pytest.approx(10 * base / 25 / 1e4)
    for _ in range(3):  # extra steps past the end keep the final LR
        opt.step()
        sched.step_batch()
    assert opt.param_groups[0]["lr"] == pytest.approx(seen[-1][0])


def test_step_decays_every_step_size_epochs():
    opt = _optimizer()
    sched = build_scheduler("step", opt, epochs=7, steps_per_epoch=2, step_size=3, gamma=0.5)
    seen = _run(sched, opt, 7, 2)
    assert [seen[2 * e][0] for e in range(7)] == pytest.approx([BASE * 0.5 ** (e // 3) for e in range(7)])


@pytest.mark.parametrize("mode, values", [("min", [1.0, 0.9, 0.9, 0.95, 0.9, 0.8]),
                                          ("max", [0.5, 0.6, 0.6, 0.55, 0.6, 0.7])])
def test_plateau_reduces_after_patience(mode, values):
    opt = _optimizer()
    sched = build_scheduler("plateau", opt, epochs=6, steps_per_epoch=1, patience=2, gamma=0.1, mode=mode)
    lrs = []
    for v in values:
        opt.step()
        sched.step_batch()  # ignored
        sched.step_epoch(v)
        lrs.append(opt.param_groups[0]["lr"])
    # best at epoch 1, epochs 2-4 do not improve: the third bad epoch (> patience) reduces
    assert lrs == pytest.approx([BASE, BASE, BASE, BASE, BASE * 0.1, BASE * 0.1])
    sched.step_epoch(None)  # no metric: no-op
    assert opt.param_groups[0]["lr"] == pytest.approx(BASE * 0.1)


def test_none_is_constant():
    opt = _optimizer()
    sched = build_scheduler("none", opt, epochs=2, steps_per_epoch=3, warmup_steps=2, min_lr=0.0)
    assert {r[0] for r in _run(sched, opt, 2, 3)} == {BASE}


@pytest.mark.parametrize("name", SCHEDULERS)
def test_resume_reproduces_uninterrupted_run(name):
    epochs, steps, split = 6, 5, 4  # after 4 epochs every schedule is mid-cycle, away from its base LR
    metrics = [1.0, 0.8, 0.8, 0.85, 0.9, 0.95]
    kw = dict(epochs=epochs, steps_per_epoch=steps, warmup_steps=3, min_lr=1e-5, T_0=2, step_size=2, patience=1)

    opt = _optimizer((BASE, 3 * BASE))
    full = _run(build_scheduler(name, opt, **kw), opt, epochs, steps, metrics)

    opt = _optimizer((BASE, 3 * BASE))
    first = build_scheduler(name, opt, **kw)
    head = _run(first, opt, split, steps, metrics[:split])
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)

    opt = _optimizer((BASE, 3 * BASE))  # fresh optimizer at the base LRs: the schedule state alone must suffice
    resumed = build_scheduler(name, opt, **kw)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    tail = _run(resumed, opt, epochs - split, steps, metrics[split:])
    assert head + tail == full
    assert name == "none" or len({round(r[0], 12) for r in full}) > 1  # the schedule actually moved


def test_unknown_name_and_mismatched_state():
    with pytest.raises(ValueError, match="--scheduler.*cosine_restarts"):
        build_scheduler("warmup_cosine", _optimizer(), epochs=1, steps_per_epoch=1)
    state = build_scheduler("step", _optimizer(), epochs=1, steps_per_epoch=1).state_dict()
    with pytest.raises(ValueError, match="--scheduler"):
        build_scheduler("cosine", _optimizer(), epochs=1, steps_per_epoch=1).load_state_dict(state)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        build_scheduler("cosine", _optimizer(), epochs=1, steps_per_epoch=0)
