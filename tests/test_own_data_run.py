"""A user's own images in ImageFolder layout, trained by `kagglerun run` and through the emulator with AdamW, warmup and cosine, label
smoothing, gradient clipping and a validation split: a real accuracy, and the summary's val-chosen result."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import client_env, make_workspace, start_emulator, write_experiment
from PIL import Image

from kagglerun.cli import main
from kagglerun.core.contract import read_history

pytestmark = pytest.mark.slow  # runs a notebook

OWN = """\
[model]
name = "c5l3"
batchnorm = true
width = 0.25

[data]
dataset = "imagefolder"
path = "stripes"
image_size = 16
test_split = 0.25
val_split = 0.2
augment = false

[training]
optimizer = "adamw"
weight_decay = 0.01
lr = 3e-3
lr_schedule = "cosine"
warmup_epochs = 1
label_smoothing = 0.1
grad_clip_norm = 1.0
epochs = 4
batch_size = 16
"""


def write_stripes(root, per_class=40):
    """Three classes any network tells apart: horizontal stripes, vertical stripes, a checkerboard; noisy."""
    rng = np.random.default_rng(0)
    i, j = np.mgrid[0:20, 0:20]
    patterns = {"horizontal": (i // 2) % 2, "vertical": (j // 2) % 2, "checker": ((i // 2) + (j // 2)) % 2}
    for name, pattern in patterns.items():
        (root / name).mkdir(parents=True)
        for k in range(per_class):
            image = pattern[..., None] * 150 + rng.integers(0, 100, (20, 20, 3))
            Image.fromarray(image.astype(np.uint8), "RGB").save(root / name / f"{k:03d}.png")


def test_own_images_train_to_a_real_accuracy_with_the_expected_options(workspace):
    write_stripes(workspace.data / "stripes")
    write_experiment(workspace, "own", OWN)
    result = CliRunner().invoke(main, ["run", "own"])
    assert result.exit_code == 0, result.output
    out = workspace.result_dir("own")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["state"] == "complete" and summary["selection"] == "val"
    assert summary["class_names"] == ["checker", "horizontal", "vertical"] and summary["num_classes"] == 3
    assert summary["data_sizes"] == {"train": 72, "val": 18, "test": 30}
    history = read_history(out / "history.csv")
    assert summary["best_epoch"] == max(history, key=lambda r: (r["val_acc"], -r["epoch"]))["epoch"]
    assert summary["test_acc_at_best"] == history[summary["best_epoch"] - 1]["test_acc"]
    assert summary["test_acc_at_best"] >= 80.0, summary  # chance is 33 %
    assert history[0]["lr"] < history[1]["lr"]  # warming up in epoch 1
    assert "chosen on validation accuracy" in " ".join(result.output.split())  # the console wraps


def test_own_images_through_the_emulator(tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_stripes(data / "stripes")
    emulator = start_emulator(tmp_path / "emu", workers=1, data_dir=data)
    try:
        ws = make_workspace(tmp_path / "ws", {"own": OWN.replace('epochs = 4', 'epochs = 2\ndevice = "cpu"')})
        client_env(monkeypatch, tmp_path / "home", emulator.url)
        monkeypatch.chdir(ws)
        runner = CliRunner()
        pushed = runner.invoke(main, ["push", "own", "--wait", "--poll", "0.5"], catch_exceptions=False)
        assert pushed.exit_code == 0, pushed.output
        pulled = runner.invoke(main, ["pull", "own"], catch_exceptions=False)
        assert pulled.exit_code == 0, pulled.output
    finally:
        emulator.stop()
    summary = json.loads((ws / "results" / "own" / "summary.json").read_text())
    assert summary["state"] == "complete" and summary["selection"] == "val" and summary["num_classes"] == 3
    history = read_history(ws / "results" / "own" / "history.csv")
    assert summary["test_acc_at_best"] == history[summary["best_epoch"] - 1]["test_acc"] >= 60.0, summary
