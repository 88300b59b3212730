"""Presentation is not training: relabelling, regrouping or redescribing an experiment changes the report
(taken from the experiment files as they are now) and leaves `push` saying unchanged, with ledgers written
before presentation left the hash as well as with new ones."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from helpers import write_experiment
from test_report import markdown_table, settings_of, write_run

from kagglerun.core.contract import full_settings_hash, settings_hash
from kagglerun.notebook.payload import core_hash
from kagglerun.report import build_report
from kagglerun.runs.ledger import Ledger, Record, Version
from kagglerun.runs.push import plan_push
from kagglerun.states import PlanAction

OWNER = "ann"
TINY = """\
description = "{description}"
extends = "digits_base"

[model]
width = 0.125

[training]
epochs = {epochs}

[report]
group = "{group}"
label = "{label}"
"""


def tiny(description="first", group="Demo", label="tiny", epochs=2) -> str:
    return TINY.format(description=description, group=group, label=label, epochs=epochs)


def test_the_hash_leaves_out_presentation_and_keeps_training(workspace):
    store = workspace.store()
    before = store.load("tiny")
    write_experiment(workspace, "tiny", tiny("another text", "Elsewhere", "A $caption$"))
    after = store.load("tiny")
    assert after.hash == before.hash and after.full_hash != before.full_hash
    assert settings_hash(after.as_dict()) == after.hash and full_settings_hash(after.as_dict()) == after.full_hash
    write_experiment(workspace, "tiny", tiny(epochs=3))
    assert store.load("tiny").hash != before.hash


def _ledger(ws, settings_hash_recorded: str) -> None:
    run = Version(version=1, settings_hash=settings_hash_recorded, core_hash=core_hash("torch"),
                  pushed_at="2026-01-01T00:00:00+00:00", state="complete", run_state="complete", has_checkpoint=True)
    with Ledger(ws.results).update() as entries:
        entries["tiny"] = Record(f"{OWNER}/kagglerun-tiny", [run])


def _plan(ws):
    (plan,) = plan_push(ws, ["tiny"], OWNER)
    return plan


@pytest.mark.parametrize("ledger", ["new", "old-unpulled", "old-pulled"])
def test_relabelling_and_regrouping_leave_push_unchanged(workspace, ledger):
    write_experiment(workspace, "tiny", tiny())
    pushed = workspace.store().load("tiny")
    # A ledger from before this change holds the full hash; a pulled run keeps the settings it ran with.
    _ledger(workspace, pushed.hash if ledger == "new" else pushed.full_hash)
    if ledger == "old-pulled":
        write_run(workspace.results, pushed.as_dict(), 50.0, 2)
    assert _plan(workspace).action == PlanAction.SKIP

    write_experiment(workspace, "tiny", tiny("a new description", "Table 9", "Better caption"))
    if ledger == "old-unpulled":  # nothing recorded to tell presentation apart: a changed caption is a change
        assert _plan(workspace).action == PlanAction.PUSH
        return
    plan = _plan(workspace)
    assert plan.action == PlanAction.SKIP and "unchanged since v1" in plan.reason, plan.reason

    write_experiment(workspace, "tiny", tiny("a new description", "Table 9", "Better caption", epochs=5))
    plan = _plan(workspace)
    assert plan.action == PlanAction.PUSH and "settings changed" in plan.reason


def test_push_dry_run_says_unchanged_after_a_relabel(workspace, monkeypatch, tmp_path):
    from kagglerun.cli import main

    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-credentials"))  # the placeholder owner
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    write_experiment(workspace, "tiny", tiny())
    run = Version(version=1, settings_hash=workspace.store().load("tiny").full_hash, core_hash=core_hash("torch"),
                  pushed_at="2026-01-01T00:00:00+00:00", state="complete", run_state="complete")
    write_run(workspace.results, workspace.store().load("tiny").as_dict(), 50.0, 2)
    with Ledger(workspace.results).update() as entries:
        entries["tiny"] = Record("kagglerun/kagglerun-tiny", [run])
    write_experiment(workspace, "tiny", tiny(label="Relabelled", group="Moved"))
    result = CliRunner().invoke(main, ["push", "--dry-run", "tiny"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "unchanged since v1" in result.output and "would push" not in result.output


def test_the_report_takes_group_label_and_description_from_the_current_files(workspace):
    write_experiment(workspace, "tiny", tiny(group="Old group", label="old caption"))
    write_run(workspace.results, workspace.store().load("tiny").as_dict(), 61.0, 2)
    # A run whose experiment file is gone keeps the group and label it was trained with.
    write_run(workspace.results, settings_of("gone", {"name": "c5l3"}, {}, {"epochs": 2},
                                             {"group": "Old group", "label": "frozen"}), 55.0, 1)
    write_experiment(workspace, "tiny", tiny(description="now described", group="New group", label="New caption"))
    report = build_report(workspace.results, presentation=workspace.store().presentation())
    assert set(report.groups) == {"New group", "Old group"}
    assert list(report.groups["New group"].columns) == ["New caption"]
    assert list(report.groups["Old group"].columns) == ["frozen"]
    # What the run froze is untouched: only the report reads the current presentation.
    frozen = json.loads((workspace.results / "tiny" / "settings.json").read_text())
    assert frozen["report"]["group"] == "Old group"

    from kagglerun.cli import main

    result = CliRunner().invoke(main, ["report"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    markdown = (workspace.results / "report" / "report.md").read_text()
    assert list(markdown_table(markdown, "New group").columns) == ["New caption"]


def test_report_group_limits_the_report_and_an_unknown_group_is_one_line(workspace):
    from kagglerun.cli import main

    write_run(workspace.results, settings_of("a", {"name": "c5l3"}, {}, {"epochs": 2}, {"group": "G1"}), 50.0, 1)
    write_run(workspace.results, settings_of("b", {"name": "c5l3"}, {}, {"epochs": 3}, {"group": "G2"}), 60.0, 2)
    report = build_report(workspace.results, group="G2")
    assert list(report.groups) == ["G2"] and list(report.summary["experiment"]) == ["b"]
    assert list(report.table["experiment"]) == ["b"]
    result = CliRunner().invoke(main, ["report", "--group", "G3"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "no report group 'G3'" in lines[0] and "'G1', 'G2'" in lines[0]
