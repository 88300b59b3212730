"""Training options (AdamW, Nesterov, OneCycle, cosine with warmup, label smoothing, gradient clipping) checked
against the same training written in plain torch: same seed, same batches, then equal weights and learning rates.
Also: the history's lr is the one the epoch trained with, and what the scratch engine refuses."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from kagglerun.core import torch_engine
from kagglerun.core.contract import read_history
from kagglerun.core.data import load_data
from kagglerun.core.engine import epoch_seed
from kagglerun.core.models import build_model
from kagglerun.core.train import run
from kagglerun.errors import ExperimentError
from kagglerun.experiments import Settings
from kagglerun.experiments.settings import validate_settings

EPOCHS, BATCH, N = 3, 16, 56  # 4 steps an epoch, the last one short


def settings(engine="torch", **training):
    return {
        "name": "opts", "engine": engine,
        "model": {"name": "c5l3", "batchnorm": True, "width": 0.0625},
        "data": {"dataset": "synthetic", "synthetic_like": "mnist", "synthetic_train": N, "synthetic_test": 16,
                 "augment": False, "mean": [0.5], "std": [0.5]},
        "training": {"epochs": EPOCHS, "batch_size": BATCH, "lr": 1e-2, "seed": 5, "device": "cpu", **training},
    }


def resolved(**training):
    return Settings.model_validate_json(json.dumps(settings(**training))).as_dict()


def plain_torch(s, make_opt, make_sched=None, per_step=False, smoothing=0.0, clip=None):
    """The reference: the training loop as one would write it with torch alone. Returns (weights, lr of each step)."""
    t, data = s["training"], load_data(s)
    torch.manual_seed(t["seed"])
    model = build_model(s["model"], data.channels, data.size, data.num_classes)
    opt = make_opt(model.parameters())
    steps = math.ceil(N / BATCH)
    sched = make_sched(opt, steps) if make_sched else None
    lrs = []
    for epoch in range(1, t["epochs"] + 1):
        model.train()
        g = torch.Generator().manual_seed(epoch_seed(t["seed"], epoch))
        order = torch.randperm(N, generator=g)
        for step in range(steps):
            idx = order[step * BATCH : (step + 1) * BATCH]
            x = data.train_x[idx].float().mul_(torch.tensor(2 / 255)).add_(-1.0)  # (x / 255 - 0.5) / 0.5
            loss = F.cross_entropy(model(x), data.train_y[idx], label_smoothing=smoothing)
            opt.zero_grad()
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            if per_step and sched:
                sched.step()
        if sched and not per_step:
            sched.step()
    return model.state_dict(), lrs


def engine_run(s):
    """The engine's training of the same settings; the lr before each of its steps is recorded."""
    data = load_data(s)
    engine = torch_engine.TorchEngine(s, data)
    lrs: list[float] = []
    engine.opt.register_step_pre_hook(lambda opt, args, kwargs: lrs.append(opt.param_groups[0]["lr"]))
    epoch_lrs = []
    for epoch in range(1, s["training"]["epochs"] + 1):
        epoch_lrs.append(engine.current_lr())
        engine.train_epoch(epoch)
    return engine.weights(), lrs, epoch_lrs


def adam(**kw):
    return lambda p: torch.optim.Adam(p, lr=1e-2, **kw)


CASES = {
    "adamw": ({"optimizer": "adamw", "weight_decay": 0.05},
              dict(make_opt=lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.05))),
    "sgd_nesterov": ({"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "lr": 0.05},
                     dict(make_opt=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True))),
    "onecycle": ({"lr_schedule": "onecycle", "warmup_epochs": 1},
                 dict(make_opt=adam(), per_step=True,
                      make_sched=lambda o, steps: torch.optim.lr_scheduler.OneCycleLR(
                          o, max_lr=1e-2, epochs=EPOCHS, steps_per_epoch=steps, pct_start=1 / EPOCHS))),
    "cosine_warmup": ({"lr_schedule": "cosine", "warmup_epochs": 1},
                      dict(make_opt=adam(), per_step=True,
                           make_sched=lambda o, steps: torch.optim.lr_scheduler.SequentialLR(o, [
                               torch.optim.lr_scheduler.LinearLR(o, start_factor=1 / steps, total_iters=steps - 1),
                               torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=(EPOCHS - 1) * steps)],
                               milestones=[steps]))),
    "cosine": ({"lr_schedule": "cosine"},
               dict(make_opt=adam(), make_sched=lambda o, _: torch.optim.lr_scheduler.CosineAnnealingLR(o, EPOCHS))),
    "label_smoothing": ({"label_smoothing": 0.2}, dict(make_opt=adam(), smoothing=0.2)),
    "grad_clip_norm": ({"grad_clip_norm": 0.05, "optimizer": "sgd", "lr": 0.5, "momentum": 0.0},
                       dict(make_opt=lambda p: torch.optim.SGD(p, lr=0.5), clip=0.05)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_option_trains_as_plain_torch_does(case):
    training, reference = CASES[case]
    s = resolved(**training)
    expected_weights, expected_lrs = plain_torch(s, **reference)
    weights, lrs, epoch_lrs = engine_run(s)
    assert lrs == pytest.approx(expected_lrs, rel=1e-6, abs=1e-12)
    steps = math.ceil(N / BATCH)
    assert epoch_lrs == pytest.approx(expected_lrs[::steps], rel=1e-6, abs=1e-12)  # the lr of each epoch's first step
    for name, value in expected_weights.items():
        torch.testing.assert_close(weights[name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_the_options_change_training():
    # each option must do something: unlike the default run, and unlike each other
    base = resolved()
    data = load_data(base)
    finals = {}
    for case, (training, _) in CASES.items():
        engine = torch_engine.TorchEngine(resolved(**training), data)
        engine.train_epoch(1)
        finals[case] = torch.cat([v.flatten().float() for v in engine.weights().values()])
    default = torch_engine.TorchEngine(base, data)
    default.train_epoch(1)
    reference = torch.cat([v.flatten().float() for v in default.weights().values()])
    for case, weights in finals.items():
        if case != "cosine":  # a per-epoch schedule leaves the first epoch at lr
            assert not torch.allclose(weights, reference), case


def test_the_history_lr_is_the_one_the_epoch_trained_with(tmp_path):
    run(resolved(lr_schedule="step", step_size=1, gamma=0.5), tmp_path, log=lambda _: None)
    assert [r["lr"] for r in read_history(tmp_path / "history.csv")] == pytest.approx([1e-2, 5e-3, 2.5e-3])


@pytest.mark.parametrize(("training", "key"), [
    ({"optimizer": "adamw"}, "training.optimizer"),
    ({"optimizer": "sgd", "nesterov": True}, "training.nesterov"),
    ({"lr_schedule": "onecycle"}, "training.lr_schedule"),
    ({"lr_schedule": "cosine", "warmup_epochs": 1}, "training.warmup_epochs"),
    ({"label_smoothing": 0.1}, "training.label_smoothing"),
    ({"grad_clip_norm": 1.0}, "training.grad_clip_norm"),
])
def test_the_scratch_engine_refuses_what_it_lacks_in_one_line(training, key):
    with pytest.raises(ExperimentError) as err:
        validate_settings(settings("scratch", **training), "experiments/x.toml")
    message = str(err.value)
    assert message.startswith(f"experiments/x.toml: {key}: ") and "scratch" in message and "\n" not in message
    from kagglerun.scratch.engine import ScratchEngine

    s = Settings.model_validate_json(json.dumps(settings("scratch", **training))).as_dict()
    with pytest.raises(ValueError, match=f"^{key}: .*not available with engine = 'scratch'"):
        ScratchEngine(s, load_data(s))


@pytest.mark.parametrize(("training", "key"), [
    ({"nesterov": True}, "training.nesterov"),  # Adam
    ({"optimizer": "sgd", "momentum": 0.0, "nesterov": True}, "training.nesterov"),
    ({"warmup_epochs": 1}, "training.warmup_epochs"),  # no schedule to warm up
    ({"lr_schedule": "onecycle", "warmup_epochs": EPOCHS}, "training.warmup_epochs"),
    ({"early_stopping_patience": 2}, "training.early_stopping_patience"),  # no val_split
])
def test_options_that_do_not_fit_together_name_their_key(training, key):
    with pytest.raises(ExperimentError, match=f"^experiments/x.toml: {key}: "):
        validate_settings(settings(**training), "experiments/x.toml")
