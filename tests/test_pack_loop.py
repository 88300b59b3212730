"""Packed runs through the user's loop against the emulator: one kernel trains two experiments, the ledger
records each under its own name, status shows both, and pull splits the kernel's output into results/<member>/."""

from __future__ import annotations

import dataclasses
import json

import nbformat
import pytest
from click.testing import CliRunner
from helpers import USER, check_contract, client_env, ledger_json, make_workspace, snapshot, start_emulator, tiny_toml

from kagglerun.cli import main
from kagglerun.core.pack import PACK_PROCESSES_ENV
from kagglerun.errors import PullError
from kagglerun.experiments import ExperimentStore
from kagglerun.kaggle import connect
from kagglerun.runs.ledger import Ledger, Record
from kagglerun.runs.pull import pull_experiments, pull_one
from kagglerun.workspace import Workspace

pytestmark = pytest.mark.slow  # trains, runs notebooks or waits on the emulator

PACK = "pack_tiny_a_tiny_b"
KERNEL = f"{USER}/kagglerun-pack-tiny-a-tiny-b"
KERNEL_FAILED = f"{USER}/kagglerun-pack-tiny-a-nodata-b"


def cli(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def pair(tmp_path, monkeypatch):
    """A workspace with two tiny experiments; cwd is it."""
    monkeypatch.setenv("COLUMNS", "160")  # CliRunner's 80 columns fold the long pack kernel id
    ws = make_workspace(tmp_path / "ws", {"tiny_a": tiny_toml(seed=1, epochs=1), "tiny_b": tiny_toml(seed=2)})
    monkeypatch.chdir(ws)
    monkeypatch.delenv("KAGGLERUN_WORKSPACE", raising=False)
    return ws


def test_render_pack_from_the_command_line(pair):
    code, out, err = cli("render", "--pack", "tiny_a,tiny_b")
    assert code == 0, err
    folder = pair / "build" / PACK
    nb = nbformat.read(folder / f"{PACK}.ipynb", as_version=4)
    store = ExperimentStore(pair / "experiments")
    assert nb.metadata["kagglerun"]["pack"] == {n: store.load(n).hash for n in ("tiny_a", "tiny_b")}
    assert json.loads((folder / "kernel-metadata.json").read_text())["id"].endswith("/kagglerun-pack-tiny-a-tiny-b")
    assert sorted(p.name for p in (pair / "build").iterdir() if not p.name.startswith(".")) == [PACK]

    # An experiment goes into one kernel at a time; the failed render leaves build/ as it was.
    before = snapshot(pair / "build")
    code, out, err = cli("render", "tiny_a", "--pack", "tiny_a,tiny_b")
    assert code != 0 and "tiny_a: named twice" in err and len(err.strip().splitlines()) == 1
    assert snapshot(pair / "build") == before

    # --pack-all pairs the selection in order; an odd one out goes alone.
    (pair / "experiments" / "tiny_c.toml").write_text(tiny_toml(seed=3))
    code, out, err = cli("push", "--all", "--pack-all", "--dry-run")
    assert code == 0 and out.count("would push") == 3 and "in pack_tiny_a_tiny_b" in out, err
    assert (pair / "build" / "tiny_c").is_dir() and not (pair / "results" / "ledger.json").exists()


def test_push_a_pack_follow_it_and_pull_each_member(pair, tmp_path, monkeypatch):
    handle = start_emulator(tmp_path / "emu", workers=1, gpu_session_cap=2)
    try:
        client_env(monkeypatch, tmp_path / "home", handle.url)
        monkeypatch.setenv(PACK_PROCESSES_ENV, "0")  # one after another inside the kernel: fastest on this CPU
        store = ExperimentStore(pair / "experiments")
        hashes = {n: store.load(n).hash for n in ("tiny_a", "tiny_b")}

        code, out, err = cli("push", "--pack", "tiny_a,tiny_b", "--wait", "--poll", "0.3")
        assert code == 0, err
        assert f"pushed {PACK} as {KERNEL} v1" in out
        ledger = ledger_json(pair)["experiments"]
        assert sorted(ledger) == ["tiny_a", "tiny_b"]  # the members, never the pack
        for name, entry in ledger.items():
            assert entry["kernel"] == KERNEL and entry["pack"] == {"name": PACK, "members": ["tiny_a", "tiny_b"]}
            assert [(r["version"], r["state"], r["settings_hash"]) for r in entry["runs"]] == [(1, "complete", hashes[name])]

        code, out, err = cli("status", "tiny_a")
        assert code == 0 and "tiny_a" in out and f"in {PACK}" in out and "complete" in out and "│ tiny_b" not in out

        code, out, err = cli("pull", "--all")
        assert code == 0 and out.count("pulled") == 2 and f"v1 of {PACK}" in out, err
        results = pair / "results"
        check_contract(results / "tiny_a", hashes["tiny_a"], 1)
        check_contract(results / "tiny_b", hashes["tiny_b"], 2)
        assert {p.name for p in results.iterdir() if not p.name.startswith(".")} <= {"tiny_a", "tiny_b", "ledger.json",
                                                                                       "ledger.json.bak"}
        assert "epoch    2/2" in (results / "tiny_b" / "log.txt").read_text()

        # Idempotent, and a pack is unchanged while every member is.
        before = snapshot(results)
        assert cli("pull", "--all")[1].count("up to date") == 2
        code, out, err = cli("push", "--pack", "tiny_a,tiny_b")
        assert code == 0 and out.count("skipped") >= 2 and "unchanged since v1" in out, err
        assert snapshot(results) == before
        (pair / "experiments" / "tiny_b.toml").write_text(tiny_toml(seed=3))
        code, out, err = cli("push", "--pack", "tiny_a,tiny_b", "--dry-run")
        # tiny_b starts over; tiny_a, unchanged and complete, is carried over from its checkpoint in v1
        assert code == 0 and out.count("would resume") == 2 and "tiny_b: settings changed since v1" in out, err
        assert "tiny_a complete" in out and "carried over" in out

        # Each member is checked against its own settings hash: a member whose output does not match the
        # ledger is refused and left as it was, without touching the other.
        with Ledger(results).update() as entries:
            entries["tiny_b"].latest.settings_hash = "0" * 16
        ws, api = Workspace(pair), connect()
        with pytest.raises(PullError, match="stale output: its settings hash"):
            pull_one(ws, api, "tiny_b", force=True, attempts=2, sleep=lambda s: None)
        assert pull_one(ws, api, "tiny_a", force=True).action == "pulled"
        assert snapshot(results / "tiny_b") == {k[len("tiny_b/"):]: v for k, v in before.items() if k.startswith("tiny_b/")}
    finally:
        handle.stop()


def test_a_member_that_fails_spares_the_one_that_completed(tmp_path, monkeypatch):
    """One member's data set is missing (CIFAR-10 without internet or data): the pack's kernel ends in error,
    yet the member that completed is pulled, verified, and the failed one is reported with its own reason,
    at once: a member with no output to wait for is never retried."""
    monkeypatch.setenv("COLUMNS", "200")
    no_data = tiny_toml(seed=4, epochs=1).replace('dataset = "synthetic"', 'dataset = "cifar10"')
    ws_root = make_workspace(tmp_path / "ws", {"tiny_a": tiny_toml(seed=1, epochs=1), "nodata_b": no_data})
    monkeypatch.chdir(ws_root)
    handle = start_emulator(tmp_path / "emu", workers=1, gpu_session_cap=2)
    try:
        client_env(monkeypatch, tmp_path / "home", handle.url)
        monkeypatch.setenv(PACK_PROCESSES_ENV, "0")
        code, out, err = cli("push", "--pack", "tiny_a,nodata_b", "--wait", "--retries", "0", "--poll", "0.3")
        assert code != 0 and "1 of 2 experiments did not complete: nodata_b" in err, err
        assert "data set 'cifar10' not found" in err

        code, out, err = cli("status")
        table = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 4}
        assert "complete" in table["tiny_a"] and "not found" not in table["tiny_a"], out
        assert "error" in table["nodata_b"] and "DataNotFound: data set 'cifar10' not found" in table["nodata_b"], out

        ws, api = Workspace(ws_root), connect()
        sleeps: list[float] = []
        results = {r.experiment: r for r in pull_experiments(ws, ["tiny_a", "nodata_b"], api=api, sleep=sleeps.append)}
        assert results["tiny_a"].action == "pulled" and "of pack_tiny_a_nodata_b" in results["tiny_a"].detail
        assert results["nodata_b"].action == "skipped" and "failed: DataNotFound" in results["nodata_b"].detail
        check_contract(ws.results / "tiny_a", ExperimentStore(ws.experiments).load("tiny_a").hash, 1)
        assert not (ws.results / "nodata_b").exists() and sleeps == []
        entries = Ledger(ws.results).load()
        assert entries["tiny_a"].latest.state == "error" and entries["tiny_a"].latest.run_state == "complete"
        # The pack is pushed again for the failed member; the completed one is carried over from its
        # checkpoint in the attached output of v1 (the partner kernel's input), and trains nothing.
        code, out, err = cli("push", "--pack", "tiny_a,nodata_b", "--dry-run")
        assert code == 0 and "would resume" in out and "nodata_b: v1 ended failed" in out, out
        assert "tiny_a complete" in out and "carried over" in out and "tiny_a:" not in out, out
        code, out, err = cli("push", "--pack", "tiny_a,nodata_b", "--wait", "--retries", "0", "--poll", "0.3")
        assert code != 0 and "1 of 2 experiments did not complete: nodata_b" in err, err
        assert pull_one(ws, api, "tiny_a").action == "pulled"
        carried = json.loads((ws.results / "tiny_a" / "summary.json").read_text())
        assert carried["resumed_from_epoch"] == 1 and carried["epochs_done"] == 1 and carried["state"] == "complete"
        # resumed in the pack's partner kernel, given the output of its first: no kernel is its own source
        latest = Ledger(ws.results).entry("tiny_a").latest
        assert (latest.kernel, latest.version, latest.source) == (KERNEL_FAILED + "-b", 1, KERNEL_FAILED)
        check_contract(ws.results / "tiny_a", ExperimentStore(ws.experiments).load("tiny_a").hash, 1)

        # A member that left no output at all (its process died before writing) fails at once, with the
        # kernel's failure as its reason: no listing asked again, no sleep.
        with Ledger(ws.results).update() as entries:
            ghost = dataclasses.replace(entries["nodata_b"].latest, run_state="", failure="Kernel failed")
            entries["ghost_c"] = Record(KERNEL_FAILED, [ghost], entries["nodata_b"].pack)
        result = pull_one(ws, api, "ghost_c", sleep=sleeps.append)
        assert result.action == "skipped" and "ghost_c failed: Kernel failed" in result.detail and sleeps == []
        assert Ledger(ws.results).entry("ghost_c").latest.run_state == "failed"
    finally:
        handle.stop()
