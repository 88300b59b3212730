"""data.val_split: a stratified, seeded holdout of train; the best epoch and checkpoint_best.pt chosen on it;
the summary's result is the test accuracy at that epoch; early stopping watches it; the report says which."""

from __future__ import annotations

import json

import pytest
import torch

from kagglerun.core import torch_engine  # noqa: F401  (registers the torch engine)
from kagglerun.core.contract import VAL_COLUMNS, load_checkpoint, read_history
from kagglerun.core.data import load_data
from kagglerun.core.engine import register_engine
from kagglerun.core.train import run
from kagglerun.experiments import Settings
from kagglerun.report import build_report


def tiny(val_split=0.25, seed=0, epochs=2, **training):
    return Settings.model_validate_json(json.dumps({
        "name": "v", "model": {"name": "c5l3", "batchnorm": True, "width": 0.0625},
        "data": {"dataset": "synthetic", "synthetic_like": "mnist", "synthetic_train": 160, "synthetic_test": 40,
                 "mean": [0.5], "std": [0.5], "val_split": val_split, "augment": False},
        "training": {"epochs": epochs, "batch_size": 32, "lr": 3e-3, "seed": seed, "device": "cpu", **training},
    })).as_dict()


def test_the_validation_set_is_a_stratified_holdout_fixed_by_the_seed():
    full = load_data(tiny(val_split=0.0))
    data = load_data(tiny(val_split=0.25))
    assert len(data.val_y) + len(data.train_y) == len(full.train_y) == 160
    assert torch.equal(data.test_y, full.test_y)  # the test set is not touched
    counts, val_counts = full.train_y.bincount(minlength=10), data.val_y.bincount(minlength=10)
    assert ((val_counts - counts * 0.25).abs() <= 0.5 + 1e-9).all()  # a quarter of every class, rounded
    # train and val are disjoint parts of the training images
    rows = {tuple(x.flatten().tolist()) for x in full.train_x}
    val_rows = {tuple(x.flatten().tolist()) for x in data.val_x}
    train_rows = {tuple(x.flatten().tolist()) for x in data.train_x}
    assert val_rows <= rows and train_rows <= rows and not val_rows & train_rows
    assert torch.equal(load_data(tiny(seed=0)).val_x, data.val_x)
    assert not torch.equal(load_data(tiny(seed=1)).val_x, data.val_x)


# Validation and test accuracy per epoch: validation peaks at epoch 2, test at epoch 3.
VAL = [50.0, 70.0, 65.0, 60.0, 72.0, 90.0]
TEST = [55.0, 60.0, 80.0, 62.0, 61.0, 95.0]


@register_engine("scripted")
class Scripted:
    """An engine whose accuracies are given: what the epoch loop makes of them is under test."""

    name, device, precision = "scripted", "cpu", "fp32"

    def __init__(self, settings, data):
        self.lr = settings["training"]["lr"]
        self.trained = 0

    def param_count(self):
        return 1

    def train_epoch(self, epoch, progress=None):
        self.trained = epoch
        return 1.0, 50.0

    def evaluate(self, split="test"):
        acc = (VAL if split == "val" else TEST)[self.trained - 1]
        return 100.0 - acc, acc

    def current_lr(self):
        return self.lr

    def state_dict(self):
        return {"trained": self.trained}

    def load_state_dict(self, state):
        self.trained = state["trained"]

    def weights(self):
        return {"w": torch.tensor([float(self.trained)])}


def scripted(**kw):
    s = tiny(**kw)
    s["engine"] = "scripted"
    return s


def test_the_best_epoch_is_chosen_on_validation_and_the_result_is_its_test_accuracy(tmp_path):
    summary = run(scripted(epochs=4), tmp_path, log=lambda _: None)
    assert summary["selection"] == "val" and summary["best_epoch"] == 2
    assert summary["best_val_acc"] == 70.0 and summary["test_acc_at_best"] == 60.0
    assert summary["best_test_acc"] == 80.0  # the best test accuracy of any epoch, kept for comparison
    sizes = summary["data_sizes"]
    assert sizes["train"] + sizes["val"] == 160 and 36 <= sizes["val"] <= 44 and sizes["test"] == 40
    assert summary["num_classes"] == 10
    best = load_checkpoint(tmp_path / "checkpoint_best.pt")
    assert best["epoch"] == 2 and best["weights"]["w"].item() == 2.0 and best["selection"] == "val"
    history = read_history(tmp_path / "history.csv")
    assert [r["val_acc"] for r in history] == VAL[:4] and set(VAL_COLUMNS) <= set(history[0])


def test_without_a_split_the_best_epoch_is_chosen_on_test_as_before(tmp_path):
    summary = run(scripted(val_split=0.0, epochs=4), tmp_path, log=lambda _: None)
    assert summary["selection"] == "test" and summary["best_epoch"] == 3 and summary["best_val_acc"] is None
    assert summary["best_test_acc"] == summary["test_acc_at_best"] == 80.0
    assert "val_acc" not in read_history(tmp_path / "history.csv")[0]


def test_early_stopping_ends_the_run_complete_and_says_why(tmp_path):
    lines: list[str] = []
    summary = run(scripted(epochs=6, early_stopping_patience=2), tmp_path, log=lines.append)
    # no better val accuracy in epochs 3 and 4 after epoch 2: stop before epoch 5
    assert summary["state"] == "complete" and summary["epochs_done"] == 4 and summary["stopped_early"] is True
    assert "epoch 2" in summary["stop_reason"] and "2 epochs" in summary["stop_reason"]
    assert any(line.startswith("early stopping") for line in lines)
    again = run(scripted(epochs=6, early_stopping_patience=2), tmp_path, log=lambda _: None)
    assert again["epochs_done"] == 4 and again["stopped_early"] is True  # resuming does not train on
    longer = run(scripted(epochs=6, early_stopping_patience=3), tmp_path, log=lambda _: None)
    assert longer["epochs_done"] == 6 and longer["best_epoch"] == 6 and not longer["stopped_early"]


def test_a_real_run_with_a_validation_split(tmp_path):
    summary = run(tiny(epochs=2), tmp_path, log=lambda _: None)
    history = read_history(tmp_path / "history.csv")
    assert summary["state"] == "complete" and summary["selection"] == "val"
    chosen = max(history, key=lambda r: (r["val_acc"], -r["epoch"]))
    assert summary["best_epoch"] == chosen["epoch"] and summary["test_acc_at_best"] == pytest.approx(chosen["test_acc"])
    assert all(0 <= r["val_acc"] <= 100 and r["val_loss"] > 0 for r in history)
    assert load_checkpoint(tmp_path / "checkpoint_best.pt")["epoch"] == chosen["epoch"]


def test_the_report_gives_the_val_chosen_result_and_says_when_test_chose(tmp_path):
    results = tmp_path / "results"
    run(scripted(epochs=4), results / "with_val", log=lambda _: None)
    run(scripted(val_split=0.0, epochs=4), results / "no_val", log=lambda _: None)
    report = build_report(results)
    table = report.groups[next(iter(report.groups))]
    assert table.loc["TestAccAtBestVal", "with_val"] == "60.00" and table.loc["BestValEpoch", "with_val"] == "2"
    assert table.loc["BestTestAcc", "with_val"] == "80.00" and table.loc["BestEpoch", "with_val"] == "3"
    assert table.loc["TestAccAtBestVal", "no_val"] == "–" and table.loc["BestEpoch", "no_val"] == "3"
    main = report.table.set_index("experiment")
    assert main.loc["with_val", "test acc at best val (%)"] == "60.00 @ 2"
    markdown = report.markdown.read_text()
    assert "was chosen on the test set" in markdown and "TestAccAtBestVal" in markdown
    assert "10 classes: 0, 1, 2, 3" in markdown and "10 classes: 0, 1" in report.html.read_text()
    summary = report.summary.set_index("experiment")
    assert summary.loc["with_val", "test_acc_at_best_val"] == 60.0 and summary.loc["no_val", "selection"] == "test"
