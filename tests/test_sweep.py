"""Sweeps and `--set` overrides: point names, expansion, collisions, bad sweeps as one line, adding a value
without pushing the others again, and (slow) a 2 x 2 sweep pushed as two packed kernels through the emulator."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from helpers import REPO, TINY_DIGITS, client_env, ledger_json, make_workspace, start_emulator

from kagglerun.cli import main
from kagglerun.errors import ExperimentError
from kagglerun.experiments.sweep import expand_sweep, parse_overrides, point_name, value_token
from kagglerun.runs.plan import Resume
from kagglerun.workspace import Workspace

GRID = TINY_DIGITS.format(epochs=2) + """
[sweep]
"training.lr" = [{lrs}]
"training.seed" = [0, 1]
"""


def cli(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def grid(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    root = make_workspace(tmp_path / "ws", {"lr_grid": GRID.format(lrs="1e-3, 3e-3")})
    monkeypatch.chdir(root)
    monkeypatch.delenv("KAGGLERUN_WORKSPACE", raising=False)
    return Workspace(root)


@pytest.mark.parametrize("value, token", [(1e-3, "1e-3"), (3e-4, "3e-4"), (0.01, "0.01"), (0.5, "0.5"), (1.0, "1.0"),
                                          (100.0, "1e2"), (3, "3"), (True, "true"), ("Adam W", "adam-w"),
                                          ([0.9, 0.99], "0.9_0.99")])
def test_value_tokens(value, token):
    assert value_token(value) == token


def test_point_names_are_readable_valid_and_short():
    assert point_name("lr_grid", {"training.lr": 1e-3, "training.seed": 0}) == "lr_grid.lr1e-3.s0"
    assert point_name("g", {"model.width": 0.5, "data.width": 1}) == "g.model_width0.5.data_width1"
    long = point_name("a_rather_long_experiment_name", {"training.weight_decay": 1e-5, "model.linear_dropout": 0.25,
                                                        "training.seed": 12})
    assert len(long) <= 49 and long.startswith("a_rather_long_experiment_name.") and ".h" in long
    assert long == point_name("a_rather_long_experiment_name", {"training.weight_decay": 1e-5,
                                                                "model.linear_dropout": 0.25, "training.seed": 12})


def test_expansion_grid_and_cases():
    points = expand_sweep("g", {"training.lr": [1e-3, 3e-3], "training": {"seed": [0, 1]}}, "g.toml")
    assert [n for n, _ in points] == ["g.lr1e-3.s0", "g.lr1e-3.s1", "g.lr3e-3.s0", "g.lr3e-3.s1"]
    assert points[1][1] == {"training.lr": 1e-3, "training.seed": 1}
    cases = expand_sweep("g", {"training.seed": [0, 1], "cases": [{"model.name": "c5l3", "training.lr": 1e-3},
                                                                  {"model.name": "resnet18", "training.lr": 3e-4}]}, "x")
    assert [n for n, _ in cases] == ["g.namec5l3.lr1e-3.s0", "g.namec5l3.lr1e-3.s1",
                                     "g.nameresnet18.lr3e-4.s0", "g.nameresnet18.lr3e-4.s1"]


@pytest.mark.parametrize("table, message", [
    ({"training.lr": []}, "g.toml: sweep: training.lr: empty list"),
    ({"training.lr": 0.1}, "g.toml: sweep: training.lr: must be a list"),
    ({"data.dataset": ["a b", "a-b"]}, "g.toml: sweep: data.dataset: two points are both named g.dataseta-b"),
])
def test_bad_sweeps_name_file_and_key(table, message):
    with pytest.raises(ExperimentError, match="^" + message.replace(".", r"\.")):
        expand_sweep("g", table, "g.toml")


def test_parse_overrides():
    assert parse_overrides(["training.lr=1e-3,3e-3", "training.betas=[0.9, 0.99]", "training.optimizer=sgd",
                            "model.batchnorm=false"]) == {
        "training.lr": [1e-3, 3e-3], "training.betas": [[0.9, 0.99]], "training.optimizer": ["sgd"],
        "model.batchnorm": [False]}
    with pytest.raises(ExperimentError, match="--set lr: expected KEY=VALUE"):
        parse_overrides(["lr"])


def test_sweep_points_are_experiments_everywhere(grid):
    store = grid.store()
    names = ["lr_grid.lr1e-3.s0", "lr_grid.lr1e-3.s1", "lr_grid.lr3e-3.s0", "lr_grid.lr3e-3.s1"]
    assert store.names() == names
    assert store.select(["lr_grid"]) == names and store.select(["lr_grid*s1"]) == names[1::2]
    s = store.load("lr_grid.lr3e-3.s1")
    assert (s.training.lr, s.training.seed, s.name) == (3e-3, 1, "lr_grid.lr3e-3.s1")
    assert s.slug == "kagglerun-lr-grid-lr3e-3-s1"
    code, out, err = cli("list")
    assert code == 0 and "lr_grid.* (4 experiments of lr_grid.toml)" in out and all(n in out for n in names), err
    code, out, err = cli("show", "lr_grid.lr1e-3.s1")
    assert code == 0 and "seed = 1" in out and "overrides: training.lr = 0.001, training.seed = 1" in out
    code, out, err = cli("show", "lr_grid")
    assert code == 1 and "lr_grid is a sweep of 4 experiments" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("sweep, key", [('"training.bogus" = [1, 2]', "training.bogus: unknown key"),
                                        ('"training.lr" = ["fast", "slow"]', "training.lr: Input should be a valid number"),
                                        ('"training.lr" = []', "sweep: training.lr: empty list")])
def test_bad_sweep_files_are_one_line(grid, sweep, key):
    (grid.experiments / "bad.toml").write_text(TINY_DIGITS.format(epochs=1) + "[sweep]\n" + sweep + "\n")
    code, out, err = cli("push", "--dry-run", "bad*")
    assert code == 1 and str(grid.experiments / "bad.toml") in err and key in err, err
    assert len(err.strip().splitlines()) == 1
    code, out, err = cli("list")
    assert code == 0 and "bad" in out  # listed, in red, with its error; the others still listed


def test_a_point_colliding_with_a_file(grid):
    (grid.experiments / "lr_grid.lr1e-3.s0.toml").write_text(TINY_DIGITS.format(epochs=1))
    code, out, err = cli("push", "--dry-run", "lr_grid")
    assert code == 1 and "sweep: point lr_grid.lr1e-3.s0 collides with the file" in err, err
    assert len(err.strip().splitlines()) == 1


def test_set_overrides_on_show_and_render(grid):
    code, out, err = cli("show", "lr_grid.lr1e-3.s0", "--set", "training.epochs=5", "--set", "model.batchnorm=false")
    assert code == 0 and "epochs = 5" in out and "batchnorm = false" in out and "lr = 0.001" in out, err
    code, out, err = cli("show", "lr_grid.lr1e-3.s0", "--set", "training.bogus=1")
    assert code == 1 and "training.bogus: unknown key" in err and len(err.strip().splitlines()) == 1
    code, out, err = cli("show", "lr_grid.lr1e-3.s0", "--set", "training.epochs=many")
    assert code == 1 and "training.epochs: Input should be a valid integer" in err
    code, out, err = cli("render", "lr_grid.lr1e-3.s0", "--set", "training.epochs=3")
    assert code == 0, err
    nb = json.loads((grid.build / "lr_grid.lr1e-3.s0" / "lr_grid.lr1e-3.s0.ipynb").read_text())
    assert nb["metadata"]["kagglerun"]["settings_hash"] == grid.with_points(
        {"lr_grid.lr1e-3.s0": {"training.lr": 1e-3, "training.seed": 0, "training.epochs": 3}}
    ).store().load("lr_grid.lr1e-3.s0").hash != grid.store().load("lr_grid.lr1e-3.s0").hash


def test_push_set_sweep_dry_run_is_packed(grid):
    code, out, err = cli("push", "--dry-run", "lr_grid.lr1e-3.s0", "--set", "training.batch_size=16,32,64")
    assert code == 0, err
    for bs in (16, 32, 64):
        assert f"lr_grid.lr1e-3.s0.bs{bs}" in out
    assert out.count("would push") == 3 and out.count("in pack_") == 2  # two packed, the third alone


def _hashes(ws: Workspace) -> dict[str, str]:
    return {n: ws.store().load(n).hash for n in ws.store().names()}


def test_adding_a_value_changes_no_existing_point(grid):
    before = _hashes(grid)
    (grid.experiments / "lr_grid.toml").write_text(GRID.format(lrs="1e-3, 2e-3, 3e-3"))
    after = _hashes(grid)
    assert len(after) == 6 and {n: after[n] for n in before} == before


@pytest.mark.slow
def test_sweep_through_the_emulator_packed_and_reported(grid, tmp_path, monkeypatch):
    """2 x 2 lr x seed on digits: four experiments, two packed kernels, pulled, reported per lr; a third lr
    then pushes only its two new points."""
    handle = start_emulator(tmp_path / "emu", workers=1, gpu_session_cap=2)
    try:
        client_env(monkeypatch, tmp_path / "home", handle.url)
        monkeypatch.setenv("KAGGLERUN_PACK_PROCESSES", "0")
        code, out, err = cli("push", "lr_grid*", "--wait", "--poll", "0.3")
        assert code == 0, err
        assert out.count("pushed pack_") == 2, out
        ledger = ledger_json(grid.root)["experiments"]
        assert sorted(ledger) == grid.store().names()
        assert ledger["lr_grid.lr1e-3.s1"]["runs"][-1]["overrides"] == {"training.lr": 0.001, "training.seed": 1}
        code, out, err = cli("pull", "lr_grid*")
        assert code == 0, err
        assert all((grid.results / n / "summary.json").is_file() for n in ledger)
        code, out, err = cli("report")
        assert code == 0, err
        md = (grid.results / "report" / "report.md").read_text()
        assert "lr_grid" in md and "± " in md and "training.lr" in md
        assert (grid.results / "report" / "figures").is_dir()
        assert any("sweep" in p.name and "lr" in p.name for p in (grid.results / "report" / "figures").iterdir())

        # A third learning rate: only its points are pushed, the others are unchanged and skipped
        (grid.experiments / "lr_grid.toml").write_text(GRID.format(lrs="1e-3, 3e-3, 1e-2"))
        code, out, err = cli("push", "lr_grid*", "--dry-run")
        assert code == 0, err
        assert out.count("would push") == 2 and out.count("unchanged since v1 (complete)") >= 4, out
        assert "lr_grid.lr0.01.s0: never pushed; lr_grid.lr0.01.s1: never pushed" in out

        # A --set sweep pushed from the command line: status and pull know its experiments from the ledger
        code, out, err = cli("push", "lr_grid.lr1e-3.s0", "--set", "training.epochs=1,3", "--wait", "--poll", "0.3")
        assert code == 0 and out.count("pushed pack_") == 1, err
        code, out, err = cli("status", "lr_grid.lr1e-3.s0.ep*")
        assert code == 0 and "lr_grid.lr1e-3.s0.ep3" in out, err
        code, out, err = cli("pull", "lr_grid.lr1e-3.s0.ep1")
        assert code == 0 and (grid.results / "lr_grid.lr1e-3.s0.ep1" / "summary.json").is_file(), err
    finally:
        handle.stop()


def test_nine_short_digits_runs_are_not_estimated_at_eighteen_hours(grid):
    (grid.experiments / "lr_grid.toml").write_text(
        GRID.format(lrs="1e-3, 3e-3, 1e-2").replace('"training.seed" = [0, 1]', '"training.seed" = [0, 1, 2]'))
    code, out, err = cli("push", "--dry-run", "lr_grid", "--no-pack")
    assert code == 0 and out.count("would push") == 9, err
    hours = float(out.split("this batch needs about ")[1].split()[0])
    assert 0 < hours < 0.5  # nine sessions of a start-up and two epochs of a tiny network, not 9 x 2 h


def test_run_set_bogus_key_is_one_line(grid):
    (grid.experiments / "demo_bn.toml").write_text(TINY_DIGITS.format(epochs=1))
    code, out, err = cli("run", "demo_bn", "--set", "training.bogus=1", "--epochs", "1")
    assert code == 1 and "training.bogus: unknown key" in err and len(err.strip().splitlines()) == 1
    assert not grid.results.exists()


@pytest.mark.slow
def test_run_with_set_trains_with_that_value(grid):
    (grid.experiments / "demo_bn.toml").write_text((REPO / "experiments" / "demo_bn.toml").read_text())
    code, out, err = cli("run", "demo_bn", "--set", "training.lr=0.01", "--epochs", "1")
    assert code == 0, err
    history = (grid.results / "demo_bn" / "history.csv").read_text().splitlines()
    assert len(history) == 2 and float(history[1].split(",")[history[0].split(",").index("lr")]) == 0.01
    assert json.loads((grid.results / "demo_bn" / "settings.json").read_text())["training"]["lr"] == 0.01


def _fake_result(ws: Workspace, name: str, acc: float) -> None:
    folder = ws.results / name
    folder.mkdir(parents=True)
    (folder / "settings.json").write_text(json.dumps(ws.store().load(name).as_dict()))
    (folder / "summary.json").write_text(json.dumps({"experiment": name, "state": "complete", "best_test_acc": acc,
                                                     "best_epoch": 2, "epochs_done": 2, "epochs_total": 2}))
    (folder / "history.csv").write_text("epoch,train_loss,train_acc,test_loss,test_acc,lr,seconds\n"
                                        f"1,1.0,50,1.0,{acc - 5},0.001,1\n2,0.5,60,0.8,{acc},0.001,1\n")


def test_the_report_of_a_sweep(grid):
    from kagglerun.report.write import build_report

    accs = {"lr_grid.lr1e-3.s0": 80.0, "lr_grid.lr1e-3.s1": 82.0, "lr_grid.lr3e-3.s0": 90.0, "lr_grid.lr3e-3.s1": 91.0}
    for name, acc in accs.items():
        _fake_result(grid, name, acc)
    report = build_report(grid.results)
    md = report.markdown.read_text()
    assert "## Sweep lr_grid" in md
    rows = [line for line in md.splitlines() if line.startswith("| 0.00")]
    assert rows == ["| 0.001 | 81.00 ± 1.41 | 2 | lr_grid.lr1e-3.s0, lr_grid.lr1e-3.s1 |  |",
                    "| 0.003 | 90.50 ± 0.71 | 2 | lr_grid.lr3e-3.s0, lr_grid.lr3e-3.s1 | ◀ best |"]
    names = {p.name for p in report.figures}
    assert {"sweep-lr-grid-training-lr.png", "sweep-lr-grid-curves.png"} <= names
    html = report.html.read_text()
    assert "Sweep lr_grid" in html and "90.50 ± 0.71" in html

    # Two swept keys: a heat map
    (grid.experiments / "lr_grid.toml").write_text(GRID.format(lrs="1e-3, 3e-3").replace(
        '"training.seed" = [0, 1]', '"training.seed" = [0]\n"model.batchnorm" = [true, false]'))
    for name in grid.store().names():
        if not (grid.results / name).exists():
            _fake_result(grid, name, 70.0)
    report = build_report(grid.results, names=["lr_grid.*.s0.*"])
    assert "sweep-lr-grid-model-batchnorm-training-lr.png" in {p.name for p in report.figures}


def test_the_estimate_uses_a_measured_epoch_of_the_same_model_and_data(grid):
    from kagglerun.runs.estimate import STARTUP_SECONDS, epoch_seconds, flop_epoch_seconds, run_seconds

    store = grid.store()
    a, b = store.load("lr_grid.lr1e-3.s0"), store.load("lr_grid.lr3e-3.s1")
    assert epoch_seconds(grid, b) == flop_epoch_seconds(b) > 0  # nothing measured yet: the model's FLOPs
    folder = grid.results / a.name
    folder.mkdir(parents=True)
    (folder / "settings.json").write_text(json.dumps(a.as_dict()))
    summary = {"state": "complete", "total_seconds": 30.0, "epochs_done": 10, "device": "cpu"}
    (folder / "summary.json").write_text(json.dumps(summary))
    assert epoch_seconds(grid, b) == flop_epoch_seconds(b)  # a CPU run says nothing of a GPU's time
    (folder / "summary.json").write_text(json.dumps({**summary, "device": "cuda:0"}))
    assert epoch_seconds(grid, b) == 3.0 and run_seconds(grid, b) == STARTUP_SECONDS + 3.0 * b.training.epochs
    wider = grid.with_points({"lr_grid.lr1e-3.s0": {"model.width": 0.5}}).store().load("lr_grid.lr1e-3.s0")
    assert epoch_seconds(grid, wider) == flop_epoch_seconds(wider) > flop_epoch_seconds(b)  # another model


def test_more_epochs_resume_a_pulled_run_other_changes_start_over(grid):
    from kagglerun.runs.ledger import Record, Version
    from kagglerun.runs.longer import continue_longer
    from kagglerun.states import PlanAction

    name = "lr_grid.lr1e-3.s0"
    before = grid.store().load(name)
    (grid.results / name).mkdir(parents=True)
    (grid.results / name / "settings.json").write_text(json.dumps(before.as_dict()))
    record = Record("u/k", [Version(1, before.hash, "core", "t", state="complete", has_checkpoint=True)])
    changed = (PlanAction.PUSH, "settings changed since v1", None)

    def decide(overrides):
        s = grid.with_points({name: {**grid.store().overrides_of(name), **overrides}}).store().load(name)
        return continue_longer(grid, name, record, s, changed)

    assert decide({"training.epochs": 5}) == (PlanAction.RESUME, "only its length changed since v1; resuming from "
                                                                 "its checkpoint", Resume("u/k", 1, "t"))
    assert decide({"training.epochs": 5, "training.lr": 0.5}) == changed
    record.versions[0].has_checkpoint = False
    assert decide({"training.epochs": 5}) == changed
