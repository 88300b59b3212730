"""Packing: one notebook trains two experiments, each into its own subfolder (one GPU each on a T4 x2;
one after another, or in processes when asked, on this CPU)."""

from __future__ import annotations

import json

import nbformat
import pytest
from helpers import write_experiment

from kagglerun.core.contract import read_history
from kagglerun.core.pack import PACK_PROCESSES_ENV
from kagglerun.errors import RenderError
from kagglerun.notebook.execute import execute_notebook
from kagglerun.notebook.packs import pack_settings
from kagglerun.notebook.render import render_packs

pytestmark = pytest.mark.slow  # trains, runs notebooks or waits on the emulator

TINY = """\
extends = "digits_base"

[model]
width = 0.125

[training]
epochs = 1
optimizer = "{optimizer}"
lr = {lr}
"""


def tiny_pair(ws):
    write_experiment(ws, "tiny_adam", TINY.format(optimizer="adam", lr=1e-3))
    write_experiment(ws, "tiny_sgd", TINY.format(optimizer="sgd", lr=0.01))
    return ws.store().load_many(["tiny_adam", "tiny_sgd"])


def assert_trained_into_subfolders(out, names):
    for name in names:
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["state"] == "complete" and summary["experiment"] == name
        assert len(read_history(out / name / "history.csv")) == 1
        assert (out / name / "checkpoint_last.pt").is_file() and (out / name / "manifest.json").is_file()
    assert not (out / "summary.json").exists()  # nothing of a single run at the top


def test_a_packed_notebook_runs_both_experiments_into_their_subfolders(workspace, tmp_path, monkeypatch):
    members = tiny_pair(workspace)
    (folder,) = render_packs(workspace, [members])
    assert folder.name == "pack_tiny_adam_tiny_sgd"
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    assert meta["id"].endswith("/kagglerun-pack-tiny-adam-tiny-sgd") and meta["enable_gpu"]
    nb = nbformat.read(folder / "pack_tiny_adam_tiny_sgd.ipynb", as_version=4)
    assert nb.metadata["kagglerun"]["pack"] == {m.name: m.hash for m in members}
    assert "tiny_adam" in nb.cells[0].source and "tiny_sgd" in nb.cells[0].source
    # Two processes at once, as on a T4 x2: the children run the notebook's own inlined core cells
    monkeypatch.setenv(PACK_PROCESSES_ENV, "1")
    out = tmp_path / "working"
    copy = tmp_path / "executed.ipynb"
    try:
        execute_notebook(folder / "pack_tiny_adam_tiny_sgd.ipynb", out, timeout=300, executed_copy=copy)
    finally:  # the children's output, prefixed with their names, is in the last cell
        executed = nbformat.read(copy, as_version=4)
        printed = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
        print(printed)
    assert_trained_into_subfolders(out, ["tiny_adam", "tiny_sgd"])
    assert "[tiny_adam] epoch    1/1" in printed and "[tiny_sgd] epoch    1/1" in printed


def test_without_gpus_the_runs_go_one_after_another_and_a_failure_spares_the_other(workspace, tmp_path, monkeypatch):
    from kagglerun.core import torch_engine  # noqa: F401 (registers the engine)
    from kagglerun.core.train import main

    adam, sgd = tiny_pair(workspace)
    broken = sgd.with_overrides(**{"data.dataset": "mnist"})  # no MNIST here and no internet: fails
    spec = {"experiment": "pack", "runs": [
        {"experiment": m.name, "settings": m.as_dict(), "settings_hash": m.hash} for m in (broken, adam)]}
    run_file = tmp_path / "run.json"
    run_file.write_text(json.dumps(spec))
    monkeypatch.delenv(PACK_PROCESSES_ENV, raising=False)
    monkeypatch.setenv("KAGGLERUN_INPUT", str(tmp_path / "no-inputs"))
    out = tmp_path / "working"
    with pytest.raises(RuntimeError, match="packed runs failed: tiny_sgd: DataNotFound"):
        main(str(run_file), str(out))
    assert_trained_into_subfolders(out, ["tiny_adam"])
    assert json.loads((out / "tiny_sgd" / "summary.json").read_text())["state"] == "failed"


def test_packed_experiments_must_share_a_machine(workspace):
    adam, sgd = tiny_pair(workspace)
    other = sgd.model_copy(update={"kaggle": sgd.kaggle.model_copy(update={"machine_shape": "NvidiaTeslaP100"})})
    with pytest.raises(RenderError, match="kaggle.machine_shape"):
        pack_settings([adam, other])
    with pytest.raises(RenderError, match="two or more"):
        pack_settings([adam, adam])
