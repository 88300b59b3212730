"""The epoch loop: the output contract after every epoch, exact resume, the time budget, damaged checkpoints."""

from __future__ import annotations

import json

import pytest

from kagglerun.core import torch_engine  # noqa: F401  (registers the torch engine)
from kagglerun.core.contract import CONTRACT_FILES, HISTORY_COLUMNS, file_sha256, read_history
from kagglerun.core.train import run
from kagglerun.experiments import Settings


def tiny(epochs=2, **training):
    return Settings.model_validate_json(json.dumps({
        "name": "t",
        "model": {"name": "c5l3", "batchnorm": True, "dropout": "linear", "width": 0.125},
        "data": {"dataset": "synthetic", "synthetic_like": "mnist", "synthetic_train": 128, "synthetic_test": 32,
                 "mean": [0.5], "std": [0.5], "color_jitter": True},
        "training": {"epochs": epochs, "batch_size": 32, "lr": 1e-3, **training},
    })).as_dict()


def test_a_run_leaves_the_output_contract(tmp_path):
    summary = run(tiny(2), tmp_path, log=lambda _: None)
    for name in CONTRACT_FILES:
        assert (tmp_path / name).is_file(), name
    history = read_history(tmp_path / "history.csv")
    assert [r["epoch"] for r in history] == [1, 2] and set(history[0]) == set(HISTORY_COLUMNS)
    assert summary["state"] == "complete" and summary["epochs_done"] == 2
    assert summary["best_test_acc"] == max(r["test_acc"] for r in history)
    assert summary["best_epoch"] in (1, 2) and summary["params"] > 0
    assert json.loads((tmp_path / "settings.json").read_text()) == tiny(2)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["history.csv"]["sha256"] == file_sha256(tmp_path / "history.csv")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    straight = tmp_path / "straight"
    run(tiny(3), straight, log=lambda _: None)
    split = tmp_path / "split"
    run(tiny(2), split, log=lambda _: None)  # "killed" after epoch 2, then started again asking for 3
    summary = run(tiny(3), split, log=lambda _: None)
    assert summary["resumed_from_epoch"] == 2
    a, b = read_history(straight / "history.csv"), read_history(split / "history.csv")
    assert [r["epoch"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b):
        for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-4), (ra["epoch"], key)


def test_resume_from_an_attached_input(tmp_path, monkeypatch):
    previous = tmp_path / "input" / "kagglerun-t"
    run(tiny(1), previous, log=lambda _: None)
    monkeypatch.setenv("KAGGLERUN_INPUT", str(tmp_path / "input"))
    summary = run(tiny(2), tmp_path / "working", log=lambda _: None)
    assert summary["resumed_from_epoch"] == 1
    assert [r["epoch"] for r in read_history(tmp_path / "working" / "history.csv")] == [1, 2]


def test_the_time_budget_stops_cleanly_with_a_checkpoint(tmp_path):
    summary = run(tiny(50, time_budget_minutes=0.0001), tmp_path, log=lambda _: None)
    assert summary["state"] == "stopped" and "time budget" in summary["error"]
    assert summary["epochs_done"] >= 1 and (tmp_path / "checkpoint_last.pt").is_file()


def test_a_damaged_checkpoint_stops_the_run_and_is_kept(tmp_path):
    run(tiny(1), tmp_path, log=lambda _: None)
    (tmp_path / "checkpoint_last.pt").write_bytes(b"not a checkpoint")
    history_before = (tmp_path / "history.csv").read_bytes()
    with pytest.raises(RuntimeError, match="checkpoint_last.pt: corrupt checkpoint"):
        run(tiny(2), tmp_path, log=lambda _: None)
    assert (tmp_path / "checkpoint_last.pt").read_bytes() == b"not a checkpoint"
    assert (tmp_path / "history.csv").read_bytes() == history_before
    assert json.loads((tmp_path / "summary.json").read_text())["state"] == "failed"


def test_a_checkpoint_of_other_settings_is_not_resumed(tmp_path):
    run(tiny(1), tmp_path, log=lambda _: None)
    with pytest.raises(RuntimeError, match="written by different settings"):
        run(tiny(2, lr=0.5), tmp_path, log=lambda _: None)


def test_a_planned_resume_without_its_checkpoint_fails_at_once_in_one_line(tmp_path, monkeypatch):
    """Kaggle refused or dropped the source: no training from epoch 1, the data never loaded."""
    from kagglerun.core import train

    (tmp_path / "input" / "kagglerun-t-b").mkdir(parents=True)
    monkeypatch.setenv("KAGGLERUN_INPUT", str(tmp_path / "input"))
    monkeypatch.setattr(train, "load_data", lambda settings: pytest.fail("loaded data for a run that cannot resume"))
    resume = {"from": "ann/kagglerun-t-b", "version": 3}
    with pytest.raises(RuntimeError) as e:
        run(tiny(2), tmp_path / "working", log=lambda _: None, resume=resume)
    assert "push planned a resume from ann/kagglerun-t-b v3, but no checkpoint_last.pt" in str(e.value)
    assert "\n" not in str(e.value) and not (tmp_path / "working" / "history.csv").exists()
    assert json.loads((tmp_path / "working" / "summary.json").read_text())["state"] == "failed"


def test_the_furthest_of_several_attached_checkpoints_is_resumed(tmp_path, monkeypatch):
    run(tiny(1), tmp_path / "input" / "a-older", log=lambda _: None)
    run(tiny(2), tmp_path / "input" / "b-newer", log=lambda _: None)
    monkeypatch.setenv("KAGGLERUN_INPUT", str(tmp_path / "input"))
    summary = run(tiny(3), tmp_path / "working", log=lambda _: None, resume={"from": "ann/x", "version": 1})
    assert summary["resumed_from_epoch"] == 2
    assert [r["epoch"] for r in read_history(tmp_path / "working" / "history.csv")] == [1, 2, 3]
