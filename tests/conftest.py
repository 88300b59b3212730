"""Fixtures: a throw-away workspace with the repository's base files and a tiny experiment."""

from __future__ import annotations

import shutil

import pytest
from helpers import REPO, TINY_DIGITS


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A workspace in tmp_path: the repository's experiments/bases plus `tiny` (digits, 2 epochs); cwd is it."""
    from kagglerun.workspace import Workspace

    root = tmp_path / "ws"
    (root / "experiments").mkdir(parents=True)
    shutil.copytree(REPO / "experiments" / "bases", root / "experiments" / "bases")
    (root / "experiments" / "tiny.toml").write_text(TINY_DIGITS.format(epochs=2))
    monkeypatch.chdir(root)
    monkeypatch.delenv("KAGGLERUN_WORKSPACE", raising=False)
    return Workspace(root)
