"""Shared fixtures: a throw-away workspace with the repository's base files and tiny experiments."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

TINY_DIGITS = """\
description = "a tiny digits run for tests"
extends = "digits_base"

[model]
width = 0.125

[training]
epochs = {epochs}
"""


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


def write_experiment(ws, name: str, text: str) -> Path:
    path = ws.experiments / f"{name}.toml"
    path.write_text(text)
    return path
