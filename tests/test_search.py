"""The quota-aware search: its table, the halving and budget decisions as pure functions, and (slow) a
search of six trials with two rungs through the emulator that stops at its budget, is interrupted and
continued without training a finished trial again, its study readable by Optuna."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from helpers import TINY_DIGITS, client_env, ledger_json, make_workspace, start_emulator

from kagglerun.cli import main
from kagglerun.errors import ExperimentError
from kagglerun.search import driver, halving
from kagglerun.search.spec import parse_spec
from kagglerun.workspace import Workspace

SEARCH = TINY_DIGITS.format(epochs=2) + """
[search]
trials = 6
gpu_hours = {hours}
metric = "val_acc"
rungs = [1, 2]
keep = 0.5
[search.space]
"training.lr" = {{ log = [1e-3, 3e-2] }}
"model.batchnorm" = {{ choice = [true, false] }}
"""


def cli(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("values, keep, kept", [
    ({0: 50.0, 1: 70.0, 2: 60.0, 3: 40.0}, 0.5, [1, 2]),
    ({0: 50.0, 1: 70.0, 2: 60.0}, 0.5, [1, 2]),  # half of three, rounded up
    ({0: 50.0, 1: None, 2: 60.0}, 0.5, [2]),  # a failed trial never continues
    ({0: 50.0, 1: 50.0}, 0.5, [0]),  # a tie: the earlier trial
    ({0: 10.0}, 0.1, [0]),  # at least one
    ({0: None}, 0.5, []),
    ({0: 1.0, 1: 2.0, 2: 3.0}, 1.0, [0, 1, 2]),
])
def test_promote(values, keep, kept):
    assert halving.promote(values, keep) == kept


@pytest.mark.parametrize("n, rungs, keep, sizes, seconds", [
    (6, [2, 8], 0.5, [6, 3], 6 * (10 + 2) + 3 * (10 + 6)),
    (4, [1, 2, 4], 0.5, [4, 2, 1], 4 * 11 + 2 * 11 + 1 * 12),
    (1, [5], 0.5, [1], 15),
])
def test_schedule(n, rungs, keep, sizes, seconds):
    assert halving.rung_sizes(n, rungs, keep) == sizes
    assert halving.schedule_seconds(n, rungs, keep, 1.0, 10.0) == seconds


@pytest.mark.parametrize("budget, trials", [(0, 0), (27, 0), (28, 1), (71, 3), (119, 5), (6 * 12 + 3 * 16, 6), (1e9, 6)])
def test_trials_within_the_budget(budget, trials):
    assert halving.trials_within(budget, 6, [2, 8], 0.5, 1.0, 10.0) == trials


@pytest.mark.parametrize("costs, spent, budget, n", [([10, 10, 10], 0, 25, 2), ([10], 20, 25, 0), ([], 0, 1, 0),
                                                     ([5, 5], 0, 10, 2)])
def test_affordable(costs, spent, budget, n):
    assert halving.affordable(costs, spent, budget) == n


@pytest.mark.parametrize("table, message", [
    ({"trials": 6, "gpu_hours": 1, "rungs": [8, 2], "space": {"a": {"log": [1, 2]}}}, "search: Value error, rungs"),
    ({"trials": 6, "gpu_hours": 1, "rungs": [2], "space": {"a": {"lg": [1, 2]}}}, "search.space.a.lg: unknown key"),
    ({"trials": 6, "rungs": [2], "space": {"a": {"log": [1, 2]}}}, "search.gpu_hours: required key is missing"),
    ({"trials": 6, "gpu_hours": 1, "rungs": [2], "space": {"a": {"log": [0, 2]}}}, "log: the range must be positive"),
    ({"trials": 6, "gpu_hours": 1, "rungs": [2], "metric": "acc", "space": {"a": {"int": [1, 2]}}}, "search.metric"),
])
def test_bad_search_tables_are_one_line(table, message):
    with pytest.raises(ExperimentError, match=r"^f\.toml: ") as e:
        parse_spec(table, "f.toml")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_the_issue_table_parses():
    spec = parse_spec({"trials": 6, "gpu_hours": 2.0, "metric": "val_acc", "rungs": [2, 8], "keep": 0.5, "space": {
        "training.lr": {"log": [1e-4, 1e-1]}, "training.weight_decay": {"uniform": [0.0, 0.01]},
        "model.width": {"choice": [0.25, 0.5]}, "training.batch_size": {"int": [32, 128]}}}, "f.toml")
    assert [p.kind for p in spec.space.values()] == ["log", "uniform", "choice", "int"] and spec.max_running == 2


def test_a_searched_key_is_checked_against_the_settings(tmp_path):
    root = make_workspace(tmp_path / "ws", {"srch": SEARCH.format(hours=1).replace("model.batchnorm", "model.bogus")})
    with pytest.raises(ExperimentError, match="model.bogus: unknown key"):
        driver.load_search(Workspace(root), "srch")
    assert "srch" not in Workspace(root).store().names()  # a search file is not itself an experiment


@pytest.mark.slow
def test_search_through_the_emulator_stops_at_its_budget_and_continues(tmp_path, monkeypatch):
    import optuna

    monkeypatch.setenv("COLUMNS", "200")
    # One trial's schedule: 90 s start-up and about half a second per epoch per rung; 0.17 h affords four trials
    root = make_workspace(tmp_path / "ws", {"lrs": SEARCH.format(hours=0.17)})
    monkeypatch.chdir(root)
    monkeypatch.delenv("KAGGLERUN_WORKSPACE", raising=False)
    ws = Workspace(root)
    handle = start_emulator(tmp_path / "emu", workers=2, gpu_session_cap=2)
    try:
        client_env(monkeypatch, tmp_path / "home", handle.url)

        def interrupt(state, rung):
            raise KeyboardInterrupt

        monkeypatch.setattr(driver, "_rung_done", interrupt)
        code, out, err = cli("search", "lrs", "--poll", "0.3")
        assert code == 130 and "affords 4 of 6 trials" in out, (out, err)
        state = json.loads((root / "results" / "search" / "lrs" / "search.json").read_text())
        assert [t["rung"] for t in state["trials"]] == [0, 0, 0, 0]
        first = {n: len(e["runs"]) for n, e in ledger_json(root)["experiments"].items()}
        assert first == {f"lrs.t{i}": 1 for i in range(4)}

        monkeypatch.setattr(driver, "_rung_done", lambda state, rung: None)
        code, out, err = cli("search", "lrs", "--poll", "0.3")
        assert code == 0, (out, err)
        state = json.loads((root / "results" / "search" / "lrs" / "search.json").read_text())
        assert state["state"] == "budget" and state["spent_seconds"] <= state["budget_seconds"]
        by_state = {t["name"]: t["state"] for t in state["trials"]}
        assert sorted(by_state.values()) == ["complete", "complete", "pruned", "pruned"]
        ledger = ledger_json(root)["experiments"]
        for name, trial_state in by_state.items():  # no finished trial trained again; continued ones resumed
            runs = ledger[name]["runs"]
            assert len(runs) == (2 if trial_state == "complete" else 1)
            assert runs[-1]["overrides"]["training.epochs"] == (2 if trial_state == "complete" else 1)
            if trial_state == "complete":
                assert runs[-1]["resumes"] == 1
                summary = json.loads((root / "results" / name / "summary.json").read_text())
                assert summary["epochs_done"] == 2 and summary["resumed_from_epoch"] == 1

        study = optuna.load_study(study_name="lrs", storage=f"sqlite:///{root}/results/search/lrs/study.db")
        assert len(study.trials) == 4 and all(t.value is not None for t in study.trials)
        assert {t.number: t.value for t in study.trials} == {t["number"]: t["value"] for t in state["trials"]}

        # A third run does nothing more; status, pull and report know the trials
        code, out, err = cli("search", "lrs", "--poll", "0.3")
        assert code == 0 and {n: len(e["runs"]) for n, e in ledger_json(root)["experiments"].items()} == \
            {n: len(e["runs"]) for n, e in ledger.items()}
        code, out, err = cli("list")
        assert code == 0 and "lrs.* (4 experiments of lrs.toml)" in out, err
        code, out, err = cli("status", "lrs.t*")
        assert code == 0 and "lrs.t3" in out, err
        code, out, err = cli("report")
        assert code == 0, err
        md = (root / "results" / "report" / "report.md").read_text()
        assert "## Search lrs" in md and "training.lr" in md and "◀ best" in md
        assert (root / "results" / "report" / "figures" / "search-lrs.png").is_file()
        assert ws.store().names() == []  # the search file makes no experiment of its own
    finally:
        handle.stop()
