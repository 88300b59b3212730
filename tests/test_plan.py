"""The pure decisions, table by table: what push does with an experiment given its ledger record, one decision
for a pack from its members', and which runs the report pools as seeds of one experiment."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from kagglerun.report import Result, pool_seeds
from kagglerun.runs.ledger import Record, Version
from kagglerun.runs.plan import combine, decide, resume_decision
from kagglerun.states import PlanAction

KERNEL = "ann/kagglerun-a"
S, C = "s" * 16, "c" * 16  # the settings and core hashes rendered now


def version(n: int, state: str = "complete", run_state: str = "complete", *, settings: str = S, core: str = C,
            checkpoint: bool = True) -> Version:
    return Version(version=n, settings_hash=settings, core_hash=core, pushed_at="2026-01-01T00:00:00+00:00",
                   state=state, run_state=run_state, has_checkpoint=checkpoint)


DECISIONS = [
    # (what the ledger holds, force, expected action, words in the reason, version resumed)
    (None, False, PlanAction.PUSH, "never pushed", None),
    (Record("ann/other-kernel", [version(1)]), False, PlanAction.PUSH, "never pushed", None),
    (Record(KERNEL, [version(1)]), True, PlanAction.PUSH, "--force", None),
    (Record(KERNEL, [version(1, settings="x" * 16)]), False, PlanAction.PUSH, "settings changed since v1", None),
    (Record(KERNEL, [version(1, core="x" * 16)]), False, PlanAction.PUSH, "code changed since v1 (the training core or a models/ file)", None),
    (Record(KERNEL, [version(1, state="running", run_state="")]), False, PlanAction.SKIP, "v1 is running", None),
    (Record(KERNEL, [version(1)]), False, PlanAction.SKIP, "unchanged since v1 (complete)", 1),
    (Record(KERNEL, [version(1, checkpoint=False)]), False, PlanAction.SKIP, "unchanged since v1", None),
    # Kaggle says complete, the run stopped on its time budget: resume from its checkpoint
    (Record(KERNEL, [version(1, run_state="stopped")]), False, PlanAction.RESUME, "v1 ended stopped; resuming", 1),
    # a failed session without a checkpoint starts over; with one (an earlier version's), resumes from it
    (Record(KERNEL, [version(1, "error", "", checkpoint=False)]), False, PlanAction.PUSH, "no checkpoint", None),
    (Record(KERNEL, [version(1, "error", ""), version(2, "error", "", checkpoint=False)]), False,
     PlanAction.RESUME, "v2 ended error; resuming from its checkpoint", 1),
    # a checkpoint of other settings is never resumed
    (Record(KERNEL, [version(1, "error", "", settings="x" * 16), version(2, "error", "", checkpoint=False)]), False,
     PlanAction.PUSH, "no checkpoint, starting over", None),
    # a pack member that completed in a kernel that failed is complete
    (Record(KERNEL, [version(1, "error", "complete")]), False, PlanAction.SKIP, "unchanged since v1", 1),
]


@pytest.mark.parametrize(("record", "force", "action", "reason", "resumes"), DECISIONS)
def test_decide(record, force, action, reason, resumes):
    got = decide(record, KERNEL, S, C, force)
    assert (got[0], got[2]) == (action, resumes) and reason in got[1], got


COMBINATIONS = [
    # (member decisions, expected action, words in the reason, version resumed)
    ({"a": (PlanAction.PUSH, "never pushed", None)}, PlanAction.PUSH, "never pushed", None),
    ({"a": (PlanAction.SKIP, "unchanged", 3), "b": (PlanAction.SKIP, "unchanged", None)}, PlanAction.SKIP,
     "a: unchanged; b: unchanged", None),
    # b must go again; a completed with a checkpoint and is carried over from it: the pack resumes
    ({"a": (PlanAction.SKIP, "unchanged", 3), "b": (PlanAction.PUSH, "settings changed", None)}, PlanAction.RESUME,
     "b: settings changed; a complete, carried over from its checkpoint", 3),
    ({"a": (PlanAction.SKIP, "unchanged", None), "b": (PlanAction.PUSH, "settings changed", None)}, PlanAction.PUSH,
     "b: settings changed", None),
    ({"a": (PlanAction.RESUME, "stopped", 2), "b": (PlanAction.RESUME, "stopped", 4)}, PlanAction.RESUME,
     "a: stopped; b: stopped", 4),
]


@pytest.mark.parametrize(("decisions", "action", "reason", "resumes"), COMBINATIONS)
def test_combine(decisions, action, reason, resumes):
    got = combine(decisions)
    assert (got[0], got[2]) == (action, resumes) and reason in got[1], got


def test_resume_decision_takes_the_newest_checkpoint_of_the_same_settings():
    record = Record(KERNEL, [version(1, "error", ""), version(2, "error", ""), version(3, "error", "", checkpoint=False)])
    assert resume_decision(record, S)[0::2] == (PlanAction.RESUME, 2)


def _result(name: str, seed: int, lr: float = 1e-3, group: str = "", label: str = "", **extra) -> Result:
    flat = {"name": name, "training.seed": seed, "training.lr": lr, "report.group": group, "report.label": label,
            "kaggle.slug": f"k-{name}", **extra}
    history = pd.DataFrame(columns=["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"])
    return Result(name, Path(name), {}, flat, {"state": "complete"}, history, None)


POOLINGS = [
    # (runs, expected columns as lists of run names)
    ([_result("a", 0), _result("b", 1)], [["a", "b"]]),  # seeds only: one column
    ([_result("a", 0), _result("b", 1, lr=1e-2)], [["a"], ["b"]]),  # another setting: two
    ([_result("a", 0), _result("b", 0)], [["a"], ["b"]]),  # same seed twice is a repeat, not a spread
    ([_result("a", 0, label="x"), _result("b", 1, label="y")], [["a", "b"]]),  # labels are presentation
    ([_result("b", 0, group="G"), _result("a", 0, group="")], [["b"], ["a"]]),  # grouped first, ungrouped last
    ([_result("a", 0, **{"kaggle.gpu": True}), _result("b", 1, **{"kaggle.gpu": False})], [["a", "b"]]),
]


@pytest.mark.parametrize(("runs", "columns"), POOLINGS)
def test_pool_seeds(runs, columns):
    assert [[r.name for r in column.runs] for column in pool_seeds(runs)] == columns
