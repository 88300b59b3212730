"""The pure decisions, table by table: what push does with an experiment given its ledger record, one decision
for a pack from its members', and which runs the report pools as seeds of one experiment."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from kagglerun.core.contract import RESUME_MISSING
from kagglerun.report import Result, pool_seeds
from kagglerun.runs.ledger import PUSHING, Record, Version
from kagglerun.runs.plan import (
    Pushed,
    Resume,
    combine,
    decide,
    must_cancel,
    partner_kernel,
    partner_title,
    pushed_outcome,
    resume_decision,
    resuming,
    target_kernel,
)
from kagglerun.states import PlanAction

KERNEL = "ann/kagglerun-a"
PARTNER = "ann/kagglerun-a-b"
S, C = "s" * 16, "c" * 16  # the settings and core hashes rendered now


def version(n: int, state: str = "complete", run_state: str = "complete", *, settings: str = S, core: str = C,
            checkpoint: bool = True, kernel: str = KERNEL, at: str = "") -> Version:
    return Version(version=n, settings_hash=settings, core_hash=core, pushed_at=at or f"2026-01-01T00:0{n}:00+00:00",
                   state=state, run_state=run_state, has_checkpoint=checkpoint, kernel=kernel)


def resume(n: int, kernel: str = KERNEL) -> Resume:
    return Resume(kernel, n, f"2026-01-01T00:0{n}:00+00:00")


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
    # a push whose answer never came is never pushed over (its version may be running)
    (Record(KERNEL, [version(1), Version(0, S, C, "2026-01-01T00:09:00+00:00", PUSHING, kernel=PARTNER)]), True,
     PlanAction.SKIP, "pushing: answer unknown", None),
    # a run that went on in the partner kernel resumes from the partner's checkpoint
    (Record(KERNEL, [version(1, run_state="stopped"), version(1, run_state="stopped", kernel=PARTNER)]), False,
     PlanAction.RESUME, "resuming from its checkpoint", 1),
]


@pytest.mark.parametrize(("record", "force", "action", "reason", "resumes"), DECISIONS)
def test_decide(record, force, action, reason, resumes):
    got = decide(record, KERNEL, S, C, force)
    assert (got[0], got[2] and got[2].version) == (action, resumes) and reason in got[1], got


ALTERNATIONS = [
    # (versions (kernel, state, run_state, checkpoint), the kernel pushed to, the kernel given as source)
    ([], KERNEL, None),
    ([(KERNEL, "complete", "stopped", True)], PARTNER, KERNEL),
    ([(KERNEL, "complete", "stopped", True), (PARTNER, "complete", "stopped", True)], KERNEL, PARTNER),
    ([(KERNEL, "complete", "stopped", True), (PARTNER, "complete", "stopped", True),
      (KERNEL, "complete", "stopped", True)], PARTNER, KERNEL),
    # the partner's session died before its first checkpoint: resume again from the own kernel's, in the partner
    ([(KERNEL, "complete", "stopped", True), (PARTNER, "error", "", False)], PARTNER, KERNEL),
    # nothing to resume from: a fresh start in the experiment's own kernel
    ([(KERNEL, "error", "", False), (PARTNER, "error", "", False)], KERNEL, None),
]


@pytest.mark.parametrize(("runs", "target", "source"), ALTERNATIONS)
def test_a_resumed_run_goes_to_the_kernel_that_does_not_hold_its_checkpoint(runs, target, source):
    record = Record(KERNEL, [version(i + 1, state, run_state, kernel=k, checkpoint=ck)
                             for i, (k, state, run_state, ck) in enumerate(runs)])
    action, _, resumes = decide(record if runs else None, KERNEL, S, C, False)
    assert target_kernel(KERNEL, action, resumes) == target
    assert (resumes.kernel if action == PlanAction.RESUME and resumes else None) == source
    assert target != source  # never a kernel listing itself as a source


@pytest.mark.parametrize(("kernel", "title", "partner", "partner_title_"), [
    ("ann/kagglerun-a", "kagglerun a", "ann/kagglerun-a-b", "kagglerun a b"),
    ("ann/" + "x" * 50, "x" * 50, "ann/" + "x" * 48 + "-b", "x" * 48 + " b"),
    ("ann/" + "x" * 47 + "-yz", "anything", "ann/" + "x" * 47 + "-b", "x" * 47 + " b"),
])
def test_partner_kernel_keeps_within_kaggles_slug_rules(kernel, title, partner, partner_title_):
    from slugify import slugify

    assert partner_kernel(kernel) == partner and len(partner.partition("/")[2]) <= 50
    assert partner_title(title, kernel) == partner_title_
    assert slugify(partner_title_) == partner.partition("/")[2]  # what the official client checks


def _intent(prior: int | None, at: str = "2026-01-01T10:00:00+00:00") -> Version:
    return Version(0, S, C, at, PUSHING, kernel=KERNEL, prior_version=prior)


OUTCOMES = [
    # (version before the push, Kaggle's current version and time now, now, in flight?, outcome)
    (3, 4, "2026-01-01T10:00:05+00:00", "2026-01-01T10:01:00+00:00", True, Pushed.CREATED),
    (0, 1, "", "2026-01-01T10:01:00+00:00", True, Pushed.CREATED),  # a new kernel; no time said
    (0, None, "", "2026-01-01T10:01:00+00:00", True, Pushed.UNKNOWN),  # may still be in flight elsewhere
    (3, 3, "2026-01-01T09:00:00+00:00", "2026-01-01T10:30:00+00:00", True, Pushed.ABSENT),  # long enough ago
    (3, 3, "2026-01-01T09:00:00+00:00", "2026-01-01T10:00:30+00:00", False, Pushed.ABSENT),  # our own push failed
    # a newer version that ran long before the intent is not this push's
    (3, 4, "2026-01-01T08:00:00+00:00", "2026-01-01T10:30:00+00:00", True, Pushed.ABSENT),
    # clocks a little apart: still this push's
    (3, 4, "2026-01-01T09:58:00+00:00", "2026-01-01T10:01:00+00:00", True, Pushed.CREATED),
]


@pytest.mark.parametrize(("prior", "current", "when", "now", "in_flight", "outcome"), OUTCOMES)
def test_pushed_outcome(prior, current, when, now, in_flight, outcome):
    assert pushed_outcome(_intent(prior), current, when, now, in_flight=in_flight) == outcome


@pytest.mark.parametrize(("invalid", "cancel"), [
    ({}, False),
    ({"tags": ["x"]}, False),
    ({"kernel": ["ann/kagglerun-a"]}, True),
    ({"dataset": ["ann/data"], "tags": ["x"]}, True),
])
def test_must_cancel(invalid, cancel):
    assert must_cancel(invalid) == cancel


COMBINATIONS = [
    # (member decisions, expected action, words in the reason, version resumed, members that must find one)
    ({"a": (PlanAction.PUSH, "never pushed", None)}, PlanAction.PUSH, "never pushed", None, ()),
    ({"a": (PlanAction.SKIP, "unchanged", resume(3)), "b": (PlanAction.SKIP, "unchanged", None)}, PlanAction.SKIP,
     "a: unchanged; b: unchanged", None, ()),
    # b must go again; a completed with a checkpoint and is carried over from it: the pack resumes
    ({"a": (PlanAction.SKIP, "unchanged", resume(3)), "b": (PlanAction.PUSH, "settings changed", None)},
     PlanAction.RESUME, "b: settings changed; a complete, carried over from its checkpoint", 3, ("a",)),
    ({"a": (PlanAction.SKIP, "unchanged", None), "b": (PlanAction.PUSH, "settings changed", None)}, PlanAction.PUSH,
     "b: settings changed", None, ()),
    ({"a": (PlanAction.RESUME, "stopped", resume(2)), "b": (PlanAction.RESUME, "stopped", resume(4))},
     PlanAction.RESUME, "a: stopped; b: stopped", 4, ("a", "b")),
    # the newest is the one pushed last, whichever kernel holds it (version numbers are per kernel)
    ({"a": (PlanAction.RESUME, "stopped", resume(2, PARTNER)), "b": (PlanAction.RESUME, "stopped", resume(1))},
     PlanAction.RESUME, "a: stopped", 2, ("a", "b")),
]


@pytest.mark.parametrize(("decisions", "action", "reason", "resumes", "must_find"), COMBINATIONS)
def test_combine(decisions, action, reason, resumes, must_find):
    got = combine(decisions)
    assert (got[0], got[2] and got[2].version) == (action, resumes) and reason in got[1], got
    assert resuming(decisions, got[0]) == must_find  # the members that fail at once without a checkpoint


def test_resume_decision_takes_the_newest_checkpoint_of_the_same_settings():
    record = Record(KERNEL, [version(1, "error", ""), version(2, "error", ""), version(3, "error", "", checkpoint=False)])
    assert resume_decision(record, S)[0::2] == (PlanAction.RESUME, resume(2))


MISSING = f"RuntimeError: {RESUME_MISSING} {KERNEL} v1, but no checkpoint_last.pt of these settings is in /kaggle/input"


def _resumed(n: int, kernel: str, source: str, resumes: int, failure: str = "", checkpoint: bool = False) -> Version:
    return dataclasses.replace(version(n, "error", "", checkpoint=checkpoint, kernel=kernel), source=source,
                               resumes=resumes, failure=failure)


UNUSABLE = [
    # (versions, expected action, version resumed): a version a resumed session found no checkpoint in is
    # passed over, else every retry would resume from it and fail the same way
    ([version(1, "error", ""), _resumed(1, PARTNER, KERNEL, 1, MISSING)], PlanAction.PUSH, None),
    # a resumed session that died before it could copy the checkpoint: the source is still good
    ([version(1, "error", ""), _resumed(1, PARTNER, KERNEL, 1, "The kernel died")], PlanAction.RESUME, resume(1)),
    # the partner's own checkpoint was missing when A v2 resumed from it: back to A v1's
    ([version(1, "error", ""), _resumed(1, PARTNER, KERNEL, 1, checkpoint=True), _resumed(2, KERNEL, PARTNER, 1, MISSING)],
     PlanAction.RESUME, resume(1)),
]


@pytest.mark.parametrize(("versions", "action", "resumes"), UNUSABLE)
def test_resume_decision_passes_over_a_source_found_without_its_checkpoint(versions, action, resumes):
    assert resume_decision(Record(KERNEL, versions), S)[0::2] == (action, resumes)


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
