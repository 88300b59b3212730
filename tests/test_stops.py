"""A run that stops on its own time budget ends COMPLETE on Kaggle: status shows it stopped, pull takes the
partial results and records the stop, the next push resumes it, and `push --wait` pushes it again by itself
until it completes, never losing what was pulled."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from helpers import USER, check_contract, client_env, ledger_json, make_workspace, snapshot, start_emulator, tiny_toml

from kagglerun.cli import main
from kagglerun.experiments import ExperimentStore

pytestmark = pytest.mark.slow  # trains, runs notebooks or waits on the emulator

# Every session trains at least one epoch, then stops: one epoch per version
BUDGETED = tiny_toml(epochs=3, extra="time_budget_minutes = 0.0001")


def cli(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_a_budget_stop_is_pulled_recorded_and_resumed(tmp_path, monkeypatch):
    # The width as a terminal would give it: setting console.width instead outlives the test (monkeypatch
    # restores it by setting the width it read, which then stays fixed for every later test)
    monkeypatch.setenv("COLUMNS", "200")
    ws = make_workspace(tmp_path / "ws", {"stop_a": BUDGETED})
    monkeypatch.chdir(ws)
    handle = start_emulator(tmp_path / "emu", workers=1)
    try:
        client_env(monkeypatch, tmp_path / "home", handle.url)
        assert cli("push", "stop_a")[0] == 0
        code, out, err = cli("status", "--watch", "--interval", "0.3")
        assert code == 0 and "stopped (time budget)" in out, out

        code, out, err = cli("pull", "stop_a")
        assert code == 0 and "pulled" in out and "stopped by its time budget after 1 epochs" in out, out
        folder = ws / "results" / "stop_a"
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["state"] == "stopped" and summary["epochs_done"] == 1 and (folder / "checkpoint_last.pt").is_file()
        (v1,) = ledger_json(ws)["experiments"]["stop_a"]["runs"]
        assert (v1["state"], v1["run_state"], v1["has_checkpoint"]) == ("complete", "stopped", True)
        partial = snapshot(folder)

        code, out, err = cli("push", "stop_a", "--dry-run")
        assert code == 0 and "would resume" in out and "v1 ended stopped; resuming from its checkpoint" in out, out
        # The partner kernel's v1 resumes v1 and stops after epoch 2; --wait pushes it again, to the first kernel
        # (its v2, given the partner's output), which completes epoch 3: no kernel lists itself as a source
        code, out, err = cli("push", "stop_a", "--wait", "--retries", "2", "--poll", "0.3")
        assert code == 0, err
        assert "stop_a: stopped (time budget); pushing again (v1 ended stopped; resuming from its checkpoint)" in out
        kernel = f"{USER}/kagglerun-stop-a"
        runs = ledger_json(ws)["experiments"]["stop_a"]["runs"]
        assert [(r["kernel"], r["version"], r["run_state"], r["source"], r["resumes"]) for r in runs] == [
            (kernel, 1, "stopped", "", None), (kernel + "-b", 1, "stopped", kernel, 1),
            (kernel, 2, "complete", kernel + "-b", 1)]
        build = json.loads((ws / "build" / "stop_a" / "kernel-metadata.json").read_text())
        assert build["id"] == kernel and build["kernel_sources"] == [kernel + "-b"]
        assert snapshot(folder) == partial  # the partial results stay until the complete run is pulled

        code, out, err = cli("pull", "stop_a")
        assert code == 0 and "pulled" in out and "stopped" not in out, out
        summary = check_contract(folder, ExperimentStore(ws / "experiments").load("stop_a").hash, 3)
        assert summary["resumed_from_epoch"] == 2
        code, out, err = cli("push", "stop_a")
        assert code == 0 and "unchanged since v2" in out
    finally:
        handle.stop()
