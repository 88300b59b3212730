"""Shared by the tests: tiny workspaces, a loopback emulator, a client environment pointing at it, and checks
on what a run leaves behind. (conftest.py holds only the fixtures.)"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
USER = "loop-tester"
KEY = "k3y-only-for-tests-7f3a9c1e5d"  # distinctive, so a scan for it finds every leak

TINY_DIGITS = """\
description = "a tiny digits run for tests"
extends = "digits_base"

[model]
width = 0.125

[training]
epochs = {epochs}
"""


def write_experiment(ws, name: str, text: str) -> Path:
    path = ws.experiments / f"{name}.toml"
    path.write_text(text)
    return path


def tiny_toml(seed: int = 0, epochs: int = 2, extra: str = "") -> str:
    """A self-contained experiment that trains in a few seconds on CPU: synthetic MNIST-shaped data."""
    return f"""
description = "tiny synthetic run for tests"
[model]
name = "c5l3"
width = 0.125
[data]
dataset = "synthetic"
synthetic_like = "mnist"
synthetic_train = 64
synthetic_test = 32
augment = false
mean = [0.5]
std = [0.5]
[training]
epochs = {epochs}
batch_size = 32
seed = {seed}
device = "cpu"
channels_last = false
{extra}
"""


def make_workspace(root: Path, experiments: dict[str, str]) -> Path:
    """A workspace in `root` with the repository's bases and the given experiment files."""
    (root / "experiments").mkdir(parents=True)
    shutil.copytree(REPO / "experiments" / "bases", root / "experiments" / "bases")
    for name, text in experiments.items():
        (root / "experiments" / f"{name}.toml").write_text(text)
    return root


def start_emulator(state_dir: Path, **config):
    from kagglerun.emulator import EmulatorConfig, start_in_thread

    return start_in_thread(EmulatorConfig(port=0, state_dir=state_dir, credentials={USER: KEY}, **config))


def client_env(monkeypatch: pytest.MonkeyPatch, home: Path, url: str | None) -> None:
    """The environment a user's shell would have: our test credentials, the emulator's endpoint, and a
    home without kaggle.json or access tokens."""
    home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    for var in ("KAGGLE_CONFIG_DIR", "KAGGLE_API_TOKEN", "KAGGLE_API_ENVIRONMENT", "KAGGLERUN_WORKSPACE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    if url:
        monkeypatch.setenv("KAGGLERUN_KAGGLE_ENDPOINT", url)


def ledger_json(ws: Path) -> dict:
    return json.loads((ws / "results" / "ledger.json").read_text())


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative name -> bytes), to show that a failure changed nothing."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".ledger.json.lock")}


def check_contract(folder: Path, settings_hash: str, epochs: int) -> dict:
    """The pulled folder satisfies the output contract and its manifest."""
    from kagglerun.core.contract import CONTRACT_FILES, MANIFEST_FILE, file_sha256

    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert set(CONTRACT_FILES) <= set(manifest)
    for name, expected in manifest.items():
        assert (folder / name).stat().st_size == expected["size"] and file_sha256(folder / name) == expected["sha256"]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["state"] == "complete" and summary["settings_hash"] == settings_hash
    with open(folder / "history.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == list(range(1, epochs + 1))
    return summary


def write_as_each_rank(settings: dict, out_dir: str, *, core_hash: str, log) -> None:
    """A stand-in for train.train in a data-parallel launch (each process imports it from here): every rank
    writes its own file and checkpoint, rank 0 a running summary; then rank 1 fails while rank 0 waits."""
    import torch.distributed as dist

    from kagglerun.core.contract import atomic_write_json, save_checkpoint

    rank = dist.get_rank()
    atomic_write_json(Path(out_dir) / f"rank-{rank}.json", {"rank": rank})
    save_checkpoint(Path(out_dir) / f"rank-{rank}.pt", {"epoch": rank})
    if rank == 0:
        atomic_write_json(Path(out_dir) / "summary.json", {"experiment": settings["name"], "state": "running"})
    dist.barrier()
    if rank == 1:
        raise ValueError(f"rank {rank} gives up\nsecond line")
    dist.barrier()  # rank 0 waits here for good: the launcher stops it
