"""The scratch engine behind the Engine interface: it learns, resumes exactly, and honours the output contract."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from kagglerun.core.data import load_data
from kagglerun.core.engine import ENGINES
from kagglerun.core.train import run
from kagglerun.experiments import Settings
from kagglerun.scratch.engine import ScratchEngine


def _settings(**sections) -> dict:
    raw = {
        "name": "scratch_test",
        "engine": "scratch",
        "model": {"name": "c5l3", "batchnorm": True, "dropout": "all", "width": 0.0625},
        "data": {"dataset": "synthetic", "synthetic_like": "mnist", "synthetic_train": 96, "synthetic_test": 32,
                 "mean": [0.5], "std": [0.5], "hflip": False},
        "training": {"optimizer": "adam", "lr": 1e-3, "epochs": 2, "batch_size": 32, "seed": 3, "device": "cpu",
                     "lr_schedule": "step", "step_size": 1, "gamma": 0.5},
    }
    for section, values in sections.items():
        raw[section] = {**raw[section], **values}
    return Settings.model_validate_json(json.dumps(raw)).as_dict()


def test_registered_as_scratch():
    assert ENGINES["scratch"] is ScratchEngine


def test_resume_continues_exactly():
    """Epoch 2 after a checkpoint round trip equals epoch 2 of an uninterrupted run: same batches,
    augmentation, dropout masks, optimizer moments and learning rate."""
    settings = _settings()
    data = load_data(settings)
    straight = ScratchEngine(settings, data)
    first = [straight.train_epoch(1), straight.train_epoch(2)]

    interrupted = ScratchEngine(settings, data)
    assert interrupted.train_epoch(1) == first[0]
    buffer = io.BytesIO()
    torch.save(interrupted.state_dict(), buffer)
    buffer.seek(0)
    resumed = ScratchEngine(settings, data)
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    assert resumed.train_epoch(2) == first[1]
    assert resumed.current_lr() == straight.current_lr() == 1e-3 * 0.5**2
    for name, value in straight.weights().items():
        np.testing.assert_array_equal(resumed.weights()[name], value, err_msg=name)
    assert resumed.evaluate() == straight.evaluate()


@pytest.mark.slow
def test_learns_digits_through_the_training_core(tmp_path):
    """A short real run on scikit-learn's digits: the contract files appear and accuracy is far above chance."""
    settings = _settings(
        model={"width": 0.125, "dropout": "none"},
        data={"dataset": "digits", "augment": False, "mean": [0.3053], "std": [0.3244], "train_limit": 640},
        training={"epochs": 4, "batch_size": 32, "lr_schedule": "none"},
    )
    summary = run(settings, tmp_path, log=lambda _: None)
    assert summary["state"] == "complete" and summary["engine"] == "scratch"
    assert summary["device"] == "cpu (numpy)" and summary["params"] > 0
    assert summary["best_test_acc"] >= 80.0, summary  # chance is 10 %
    for name in ("history.csv", "summary.json", "checkpoint_last.pt", "checkpoint_best.pt", "settings.json"):
        assert (tmp_path / name).is_file(), name
    best = torch.load(tmp_path / "checkpoint_best.pt", weights_only=False)
    assert all(isinstance(v, np.ndarray) for v in best["weights"].values())
