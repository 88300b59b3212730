"""Packed runs through the user's loop against the emulator: one kernel trains two experiments, the ledger
records each under its own name, status shows both, and pull splits the kernel's output into results/<member>/."""

from __future__ import annotations

import json

import nbformat
import pytest
from click.testing import CliRunner

from kagglerun import cli as cli_module
from kagglerun.cli import main
from kagglerun.core.pack import PACK_PROCESSES_ENV
from kagglerun.errors import PullError
from kagglerun.experiments import ExperimentStore
from kagglerun.kaggle_api import connect
from kagglerun.ledger import Ledger
from kagglerun.pull import pull_one
from kagglerun.workspace import Workspace

from kaggle_fixtures import USER, check_contract, client_env, ledger_json, make_workspace, snapshot, start_emulator, tiny_toml

PACK = "pack_tiny_a_tiny_b"
KERNEL = f"{USER}/kagglerun-pack-tiny-a-tiny-b"


def cli(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def pair(tmp_path, monkeypatch):
    """A workspace with two tiny experiments; cwd is it."""
    monkeypatch.setattr(cli_module.console, "width", 160)  # CliRunner's 80 columns fold the long pack kernel id
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
        assert code == 0 and out.count("would push") == 2 and "tiny_b: settings changed since v1" in out, err

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
