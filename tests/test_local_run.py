"""`kagglerun run`: the rendered notebook executed by nbclient reaches a real accuracy and survives a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from helpers import write_experiment

from kagglerun.cli import main
from kagglerun.core.contract import read_history

pytestmark = pytest.mark.slow  # trains, runs notebooks or waits on the emulator

DEMO = """\
extends = "digits_base"

[training]
epochs = {epochs}
"""


def test_a_demo_run_reaches_a_real_accuracy_on_digits(workspace):
    write_experiment(workspace, "demo", DEMO.format(epochs=4))
    result = CliRunner().invoke(main, ["run", "demo"])
    assert result.exit_code == 0, result.output
    out = workspace.result_dir("demo")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["state"] == "complete" and summary["epochs_done"] == 4
    assert summary["best_test_acc"] >= 90.0  # C5L3 x1/4 with BatchNorm on 355 held-out digits
    assert "best test accuracy" in result.output
    assert (out / "demo.ipynb").is_file()  # the executed notebook, outputs included


def test_a_killed_run_resumes_from_its_last_epoch(workspace):
    write_experiment(workspace, "long", DEMO.format(epochs=6))
    out = workspace.result_dir("long")
    proc = subprocess.Popen([sys.executable, "-m", "kagglerun.cli", "run", "long"], cwd=workspace.root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            try:
                if json.loads((out / "summary.json").read_text())["epochs_done"] >= 2:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.2)
        else:
            raise AssertionError("the run never reached epoch 2")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its kernel, mid-epoch
        proc.wait()
    done_before = len(read_history(out / "history.csv"))
    assert 2 <= done_before < 6
    result = CliRunner().invoke(main, ["run", "long"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["state"] == "complete" and summary["resumed_from_epoch"] == done_before
    assert [r["epoch"] for r in read_history(out / "history.csv")] == [1, 2, 3, 4, 5, 6]


def test_a_missing_data_set_fails_with_one_line_and_keeps_results(workspace):
    write_experiment(workspace, "cifar", 'extends = "cifar10_base"\n[kaggle]\ninternet = false\n')
    keep = workspace.result_dir("other")
    keep.mkdir(parents=True)
    (keep / "summary.json").write_text("{}")
    result = CliRunner().invoke(main, ["run", "cifar", "--epochs", "1"])
    assert result.exit_code == 1
    line = result.stderr.strip()  # stdout holds the progress bar; the error is one line on stderr
    assert len(line.splitlines()) == 1
    assert "cifar: run failed: DataNotFound: data set 'cifar10' not found" in line and "data_batch_1" in line
    assert (keep / "summary.json").read_text() == "{}"
