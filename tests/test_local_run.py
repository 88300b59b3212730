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
from helpers import TINY_DIGITS, write_experiment

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


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _start(workspace, *args):
    return subprocess.Popen([sys.executable, "-m", "kagglerun.cli", "run", *args], cwd=workspace.root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for_epoch(out, epoch, proc):
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            if json.loads((out / "summary.json").read_text())["epochs_done"] >= epoch:
                return
        except (OSError, ValueError, KeyError, TypeError):
            pass
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"the run never reached epoch {epoch}")


def _interrupt(proc):
    """Ctrl-C: SIGINT to the CLI's process (the kernel runs in a session of its own, as nbclient starts it)."""
    os.kill(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return proc.returncode, err


def test_ctrl_c_on_a_first_run_exits_130_with_one_line_and_keeps_the_checkpoint(workspace):
    write_experiment(workspace, "long", DEMO.format(epochs=40))
    out = workspace.result_dir("long")
    proc = _start(workspace, "long")
    _wait_for_epoch(out, 1, proc)
    code, err = _interrupt(proc)
    assert code == 130, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("interrupted: long: interrupted after epoch ") and "its checkpoint is kept there" in err
    assert (out / "checkpoint_last.pt").is_file() and len(read_history(out / "history.csv")) >= 1
    assert (out / "long.ipynb").is_file()  # the executed notebook, up to the interrupted cell


def test_a_failed_or_interrupted_run_never_replaces_a_complete_one(workspace):
    out = workspace.result_dir("tiny")
    assert CliRunner().invoke(main, ["run", "tiny"]).exit_code == 0
    (out / "notes.md").write_text("my own notes\n")
    complete = _files(out)
    previous = workspace.results / ".previous"

    # Interrupted while it trains on from the complete run (--epochs resumes it): the complete run is put back.
    proc = _start(workspace, "tiny", "--epochs", "40")
    _wait_for_epoch(out, 3, proc)
    code, err = _interrupt(proc)
    assert code == 130 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "still holds the complete run; this run's files are in" in err, err
    assert _files(out) == complete
    [interrupted] = previous.glob("tiny-*-interrupted")
    assert (interrupted / "checkpoint_last.pt").is_file() and len(read_history(interrupted / "history.csv")) >= 3

    # Failed (other settings than its checkpoint's: the resume key does not match): the same.
    (workspace.experiments / "tiny.toml").write_text(TINY_DIGITS.format(epochs=2).replace("0.125", "0.25"))
    result = CliRunner().invoke(main, ["run", "tiny"])
    assert result.exit_code == 1 and "written by different settings" in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert _files(out) == complete
    assert len(list(previous.glob("tiny-*-failed"))) == 1
    assert sorted(p.name for p in previous.iterdir()) == sorted([interrupted.name, *(p.name for p in
                                                                 previous.glob("tiny-*-failed"))])


def test_notebooks_run_here_get_no_kaggle_credentials(tmp_path, monkeypatch):
    """The emulator's sessions run their notebooks through the same execute_notebook."""
    import nbformat

    from kagglerun.notebook.execute import execute_notebook

    secrets = {"KAGGLE_KEY": "s3cret-key-1", "KAGGLE_USERNAME": "s3cret-user-2", "KAGGLE_API_TOKEN": "s3cret-tok-3",
               "KAGGLE_CONFIG_DIR": "/s3cret/dir-4", "KAGGLE_PROXY": "s3cret-5"}
    for var, value in secrets.items():
        monkeypatch.setenv(var, value)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import os, json\nprint(json.dumps(dict(os.environ)))\nopen('env.json', 'w').write(json.dumps(dict(os.environ)))")])
    path = tmp_path / "env.ipynb"
    nbformat.write(nb, path)
    execute_notebook(path, tmp_path / "work", env={"KAGGLE_KERNEL_RUN_TYPE": "Batch"}, executed_copy=tmp_path / "x.ipynb")
    seen = json.loads((tmp_path / "work" / "env.json").read_text())
    assert not [k for k in seen if k in secrets] and seen["KAGGLE_KERNEL_RUN_TYPE"] == "Batch"
    printed = (tmp_path / "x.ipynb").read_text()
    assert not [v for v in secrets.values() if v in printed] and "PATH" in seen
