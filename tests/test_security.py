"""Credentials never leave the client: not in rendered notebooks, results, logs, reports or the emulator's
state; the emulator listens on loopback only and refuses requests without credentials."""

from __future__ import annotations

import pytest
import requests
from helpers import KEY, client_env, make_workspace, start_emulator, tiny_toml

from kagglerun.kaggle import connect
from kagglerun.runs.outcome import safe_output_name
from kagglerun.runs.pull import pull_experiments
from kagglerun.runs.push import PushOptions, push_experiments
from kagglerun.workspace import Workspace

pytestmark = pytest.mark.slow  # trains, runs notebooks or waits on the emulator


def test_no_produced_file_contains_the_credentials(tmp_path, monkeypatch):
    handle = start_emulator(tmp_path / "emu")
    try:
        assert handle.url.startswith("http://127.0.0.1:")
        assert requests.post(f"{handle.url}/api/v1/kernels.KernelsApiService/GetAcceleratorQuotaStatistics",
                             json={}, timeout=10).status_code == 401
        ws = Workspace(make_workspace(tmp_path / "ws", {"leak_a": tiny_toml()}))
        client_env(monkeypatch, tmp_path / "home", handle.url)
        api = connect()
        push_experiments(ws, ["leak_a"], api=api, options=PushOptions(wait=True, poll_seconds=0.3))
        assert pull_experiments(ws, ["leak_a"], api=api)[0].action == "pulled"
        try:
            from kagglerun.report import build_report

            build_report(ws.results, names=["leak_a"])
        except ImportError:
            pass
    finally:
        handle.stop()
    produced = [p for root in (ws.root, tmp_path / "emu", tmp_path / "home") for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "log.txt" for p in produced) and any(p.suffix == ".ipynb" for p in produced)
    leaks = [str(p) for p in produced if KEY.encode() in p.read_bytes()]
    assert leaks == []
    assert not (tmp_path / "home" / ".kaggle").exists()  # nothing is written where real credentials live


def test_output_names_that_escape_are_refused():
    for bad in ("../x", "a/../../x", "/etc/passwd", "..", "C:\\x", "a\\..\\x", "", "x\0y"):
        assert not safe_output_name(bad), bad
    for good in ("summary.json", "sub/dir/file.png", ".hidden"):
        assert safe_output_name(good), good
