"""Data-parallel training (training.devices): two gloo processes on the CPU take the same steps as one process
on the same global batches, resume exactly, write only through rank 0; packs and bad batch sizes are refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
import torch
from click.testing import CliRunner
from helpers import write_as_each_rank, write_experiment

from kagglerun.cli import main as cli
from kagglerun.core import torch_engine  # noqa: F401  (registers the torch engine)
from kagglerun.core.contract import CONTRACT_FILES, MANIFEST_FILE, load_checkpoint, read_history
from kagglerun.core.distributed import Group, launch, processes
from kagglerun.core.train import main, run
from kagglerun.errors import ExperimentError, RenderError
from kagglerun.experiments import Settings
from kagglerun.experiments.settings import validate_settings
from kagglerun.notebook.packs import pack_settings

DDP_DIGITS = """\
extends = "digits_base"

[training]
epochs = 1
devices = 2
device = "cpu"
"""


def tiny(devices=1, epochs=2, model=None, data=None, **training):
    """A run of seconds: synthetic MNIST-shaped images, 117 of them (the last batch of 21 splits 10 / 11)."""
    return Settings.model_validate_json(json.dumps({
        "name": "t",
        "model": {"name": "c5l3", "batchnorm": False, "dropout": "none", "width": 0.125, **(model or {})},
        "data": {"dataset": "synthetic", "synthetic_like": "mnist", "synthetic_train": 117, "synthetic_test": 33,
                 "mean": [0.5], "std": [0.5], "augment": False, **(data or {})},
        "training": {"epochs": epochs, "batch_size": 32, "optimizer": "sgd", "lr": 0.05, "device": "cpu",
                     "devices": devices, **training},
    })).as_dict()


def weights(folder):
    return load_checkpoint(folder / "checkpoint_last.pt")["engine"]["model"]


def assert_same_weights(a, b, atol):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=atol, rtol=0), key


def test_every_global_batch_is_cut_into_the_ranks_parts_in_order():
    order = torch.randperm(117)
    parts = [Group(rank, 2, "gloo", torch.device("cpu")).shard_epoch(order, 32, 0, 1) for rank in (0, 1)]
    assert [b for _, b, _, _ in parts][0] == [(0, 16), (16, 32), (32, 48), (48, 58)]
    for step in range(4):
        union = torch.cat([mine[bounds[step][0]:bounds[step][1]] for mine, bounds, _, _ in parts])
        assert torch.equal(union, order[step * 32:(step + 1) * 32])
        # each image's share of the weighted part means, averaged over the ranks, is 1 / its global batch's size
        for _, b, w, _ in parts:
            assert w[step] / (b[step][1] - b[step][0]) / 2 == pytest.approx(1 / min(32, 117 - step * 32))
    g0, g1 = parts[0][3], parts[1][3]
    assert not torch.equal(torch.rand(4, generator=g0), torch.rand(4, generator=g1))  # each rank augments its own


def test_a_batch_size_the_devices_do_not_divide_is_one_line():
    data = tiny() | {"training": tiny()["training"] | {"devices": 3}}
    with pytest.raises(ExperimentError) as e:
        validate_settings(data, "experiments/t.toml")
    assert str(e.value).startswith("experiments/t.toml: training.devices: 3 does not divide training.batch_size 32")
    assert "\n" not in str(e.value)
    with pytest.raises(ExperimentError, match=r"training.devices: .*from 1 to 64, or \"all\"; got 'two'"):
        validate_settings(tiny() | {"training": tiny()["training"] | {"devices": "two"}}, "t.toml")
    with pytest.raises(ExperimentError, match="training.devices: 2: the scratch engine trains on one device"):
        validate_settings(tiny(2) | {"engine": "scratch"}, "t.toml")
    with pytest.raises(ExperimentError, match="training.devices: 2 needs GPUs: set kaggle.gpu = true"):
        validate_settings(tiny(2, device="auto") | {"kaggle": {"gpu": False}}, "t.toml")


def test_devices_all_and_a_machine_without_the_gpus_asked_for():
    assert processes(tiny("all")) == (1, "gloo")  # on the CPU "all" is one process
    assert processes(tiny(2)) == (2, "gloo")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus >= 2:
        pytest.skip("this machine has the GPUs")
    on_gpus = tiny(2, device="auto")
    with pytest.raises(RuntimeError, match=rf"training.devices = 2: 2 GPUs asked for, {gpus} on this machine"):
        processes(on_gpus)
    assert processes(tiny("all", device="auto"))[0] == 1


def test_packs_and_several_devices_refuse_each_other(tmp_path):
    two = validate_settings(tiny(2) | {"name": "two"}, "two.toml")
    one = validate_settings(tiny(1) | {"name": "one"}, "one.toml")
    with pytest.raises(RenderError, match=r"^two: training.devices = 2 and packing refuse each other"):
        pack_settings([one, two])
    run_file = tmp_path / "run.json"  # and the core, given such a pack anyway
    run_file.write_text(json.dumps({"experiment": "pack_one_two", "runs": [
        {"experiment": s.name, "settings": s.as_dict(), "settings_hash": s.hash} for s in (one, two)]}))
    with pytest.raises(RuntimeError, match="two: training.devices = 2 cannot be packed"):
        main(str(run_file), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_processes_take_the_steps_of_one_on_the_same_global_batches(tmp_path, monkeypatch):
    # No BatchNorm (it normalises each part by its own statistics) and no augmentation (each rank draws its own)
    # The training options that act on the whole batch's gradient act on the same gradient
    options = {"lr_schedule": "onecycle", "label_smoothing": 0.1, "grad_clip_norm": 0.5, "data": {"val_split": 0.2}}
    monkeypatch.chdir(tmp_path)
    run(tiny(1, **options), tmp_path / "one", log=lambda _: None)
    summary = run(tiny(2, **options), tmp_path / "two", log=lambda _: None)
    assert summary["state"] == "complete" and summary["device"] == "cpu x 2 (gloo)"
    assert_same_weights(weights(tmp_path / "one"), weights(tmp_path / "two"), atol=1e-5)
    a, b = read_history(tmp_path / "one" / "history.csv"), read_history(tmp_path / "two" / "history.csv")
    for ra, rb in zip(a, b, strict=True):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-4), (ra["epoch"], key)
    # Only rank 0 wrote, and only the contract: no second copy, no temporary files, nothing in the working folder
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if "one" not in p.parts)
    assert written == sorted(["two", *(f"two/{name}" for name in (*CONTRACT_FILES, MANIFEST_FILE))])


@pytest.mark.slow
def test_a_two_process_run_resumes_where_it_stopped(tmp_path):
    # BatchNorm, dropout and augmentation: every rank's own random state must come back from rank 0's checkpoint
    kw = {"model": {"batchnorm": True, "dropout": "linear"}, "data": {"augment": True, "color_jitter": True},
          "optimizer": "adam", "lr": 1e-3}
    run(tiny(2, 2, **kw), tmp_path / "straight", log=lambda _: None)
    run(tiny(2, 1, **kw), tmp_path / "split", log=lambda _: None)
    summary = run(tiny(2, 2, **kw), tmp_path / "split", log=lambda _: None)
    assert summary["resumed_from_epoch"] == 1 and summary["epochs_done"] == 2
    assert_same_weights(weights(tmp_path / "straight"), weights(tmp_path / "split"), atol=1e-6)
    ckpt = load_checkpoint(tmp_path / "split" / "checkpoint_last.pt")["engine"]
    assert len(ckpt["rank_rng"]) == 2 and not torch.equal(ckpt["rank_rng"][0][0], ckpt["rank_rng"][1][0])


@pytest.mark.slow
def test_only_rank_0_writes_and_a_failing_rank_fails_the_run_in_one_line(tmp_path, monkeypatch):
    # Each process imports the stand-in for train.train from tests/helpers.py
    tests = str(Path(__file__).resolve().parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")])))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RuntimeError) as e:
        launch(write_as_each_rank, tiny(2), str(out), "", 2, "gloo", log=lambda _: None)
    assert str(e.value) == "rank 1: ValueError: rank 1 gives up"
    summary = json.loads((out / "summary.json").read_text())
    # rank 0 was stopped: the launcher wrote its summary
    assert summary["state"] == "failed" and summary["error"] == str(e.value)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "rank-0.json", "rank-0.pt", "summary.json"]


@pytest.mark.slow
def test_a_rendered_notebook_trains_on_two_processes_from_its_own_payload(workspace):
    write_experiment(workspace, "ddp", DDP_DIGITS)
    result = CliRunner().invoke(cli, ["run", "ddp"])
    assert result.exit_code == 0, result.output
    out = workspace.result_dir("ddp")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["state"] == "complete" and summary["device"] == "cpu x 2 (gloo)"
    assert summary["best_test_acc"] > 50.0  # 1,442 digits in one epoch of 2 x 32 images a step
    executed = nbformat.read(out / "ddp.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "data-parallel, 2 processes (gloo), 32 images each a step" in text and "epoch    1/1" in text
    assert "[rank 1]" not in text  # the other rank says nothing
    assert (out / "kagglerun_payload" / "core" / "distributed.py").is_file()  # what the processes ran
