"""Push planning as pure functions: from the ledger's record of an experiment and what was just rendered,
decide whether to push it, resume it from a checkpoint, or skip it; one decision for a pack from its
members'; which of the experiment's two kernels a push goes to; and what a push whose answer was lost did.
No network, no files: `push` gathers the inputs and carries the decisions out.

Resuming alternates between two kernels, the experiment's own (owner/slug) and its partner (owner/slug-b):
Kaggle does not let a kernel list itself as a kernel source (its answer lists it in invalidKernelSources and
the new version runs without it), so a run continues in the other kernel, given the output of the one that
holds its checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple

from ..core.contract import RESUME_MISSING
from ..states import KernelState, PlanAction, RunState
from .ledger import Record, Version

DEFAULT_RUN_SECONDS = 2 * 3600.0  # quota estimate for a run never seen: the seed's baselines took 46 min to 2.2 h
PARTNER_SUFFIX = "-b"
MAX_SLUG = 50  # Kaggle's longest kernel slug
# An intent younger than this whose version Kaggle does not show may still be in flight in another process
# (a request times out after 60 s): it stays "pushing: answer unknown" rather than being dropped.
IN_FLIGHT_SECONDS = 180.0
CLOCK_SKEW_SECONDS = 300.0  # between this machine's clock and Kaggle's


class Resume(NamedTuple):
    """The version whose checkpoint a push continues from, and the kernel that holds it."""

    kernel: str
    version: int
    pushed_at: str


Decision = tuple[PlanAction, str, Resume | None]  # action, reason, the version whose checkpoint it resumes


def _resume(record: Record, run: Version) -> Resume:
    return Resume(record.kernel_of(run), run.version, run.pushed_at)


@dataclass
class PushPlan:
    """What `push` will do with one experiment, and why."""

    name: str
    folder: Path
    kernel: str
    settings_hash: str
    core_hash: str
    action: PlanAction
    reason: str
    resumes: Resume | None = None  # the version whose checkpoint the new one continues from
    estimate_seconds: float = DEFAULT_RUN_SECONDS
    members: dict[str, str] = field(default_factory=dict)  # a pack's experiments and their settings hashes
    resuming: tuple[str, ...] = ()  # the experiments that must find a checkpoint (the others start afresh)
    metadata: dict = field(default_factory=dict)  # kernel-metadata.json as rendered, before `push` points it

    @property
    def target(self) -> str:
        """The kernel this push goes to: the experiment's own, or its partner when resuming from its own."""
        return target_kernel(self.kernel, self.action, self.resumes)

    @property
    def recorded(self) -> dict[str, str]:
        """The ledger names this plan pushes, with their settings hashes: the experiment, or each member."""
        return self.members or {self.name: self.settings_hash}

    @property
    def pack(self) -> dict | None:
        """The ledger's `pack` field of each member (None for a single experiment)."""
        return {"name": self.name, "members": list(self.members)} if self.members else None


def decide(record: Record | None, kernel: str, settings_hash: str, core: str, force: bool,
           same: frozenset[str] = frozenset()) -> Decision:
    """The decision for one experiment from its ledger record and what was rendered for it now. `same`:
    further recorded hashes that count as `settings_hash` (a ledger written before presentation left the hash
    holds full hashes: those of today's settings, or of recorded ones that differ only in presentation)."""
    last = record.latest if record and record.kernel == kernel else None
    if record is None or last is None:
        return PlanAction.PUSH, "never pushed", None
    if last.pushing:  # never pushed over: the version may exist and be running
        return PlanAction.SKIP, f"a push to {last.kernel} has no answer yet (pushing: answer unknown)", None
    if force:
        return PlanAction.PUSH, "--force", None
    if last.settings_hash != settings_hash and last.settings_hash not in same:
        return PlanAction.PUSH, f"settings changed since v{last.version}", None
    if last.core_hash != core:
        return PlanAction.PUSH, f"code changed since v{last.version} (the training core or a models/ file)", None
    if not last.finished:
        return PlanAction.SKIP, f"v{last.version} is {last.state}", None
    # A run stopped by its time budget ends COMPLETE on Kaggle; a pack member may complete in a kernel that failed
    # (its version is kept, with a checkpoint, so that a pack pushed again for another member carries it on)
    if last.run_state == RunState.COMPLETE or (last.state == KernelState.COMPLETE and last.run_state != RunState.STOPPED):
        return (PlanAction.SKIP, f"unchanged since v{last.version} (complete); --force pushes it again",
                _resume(record, last) if last.has_checkpoint else None)
    assert record is not None
    return resume_decision(record, settings_hash, same)


def combine(decisions: dict[str, Decision]) -> Decision:
    """One decision for a pack from its members': it is pushed when any member must be, resuming (with
    its own output attached, where each member finds its checkpoint) when any member can resume or has
    completed with a checkpoint: a completed member then finds its finished run there and trains nothing."""
    if len(decisions) == 1:
        return next(iter(decisions.values()))
    todo = {n: d for n, d in decisions.items() if d[0] != PlanAction.SKIP}
    if not todo:
        return PlanAction.SKIP, "; ".join(f"{n}: {d[1]}" for n, d in decisions.items()), None
    resumes = [d[2] for d in decisions.values() if d[0] != PlanAction.PUSH and d[2] is not None]
    reason = "; ".join(f"{n}: {d[1]}" for n, d in todo.items())
    done = [n for n, d in decisions.items() if d[0] == PlanAction.SKIP and d[2] is not None]
    if done:
        reason += f"; {', '.join(done)} complete, carried over from its checkpoint"
    newest = max(resumes, key=lambda r: r.pushed_at) if resumes else None
    return (PlanAction.RESUME, reason, newest) if newest else (PlanAction.PUSH, reason, None)


def resuming(decisions: dict[str, Decision], action: PlanAction) -> tuple[str, ...]:
    """The experiments of a plan (one, or a pack's members) that must find a checkpoint when it runs: those
    that resume or carry a completed run over; a pack member pushed afresh starts at epoch 1."""
    if action != PlanAction.RESUME:
        return ()
    return tuple(n for n, d in decisions.items() if d[0] != PlanAction.PUSH and d[2] is not None)


def resume_decision(record: Record, settings_hash: str, same: frozenset[str] = frozenset()) -> Decision:
    """Push again an experiment whose last version did not finish, resuming from the newest checkpoint
    its earlier versions (with the same settings) left, when there is one. A version that a resumed session
    already failed to find a checkpoint in (Kaggle mounted another version's output, or none) is passed over:
    resuming from it again would fail the same way."""
    last = record.latest
    assert last is not None
    why = f"v{last.version} ended {last.run_state or last.state}"
    unusable = {(v.source, v.resumes) for v in record.versions if RESUME_MISSING in v.failure}
    for version in reversed(record.versions):
        if version.settings_hash != settings_hash and version.settings_hash not in same:
            break
        if version.has_checkpoint and (record.kernel_of(version), version.version) not in unusable:
            return PlanAction.RESUME, f"{why}; resuming from its checkpoint", _resume(record, version)
    return PlanAction.PUSH, f"{why}; no checkpoint, starting over", None


def partner_kernel(kernel: str) -> str:
    """The experiment's second kernel: owner/slug-b (the slug shortened to keep within Kaggle's 50 characters)."""
    owner, _, slug = kernel.partition("/")
    return f"{owner}/{slug[:MAX_SLUG - len(PARTNER_SUFFIX)].rstrip('-')}{PARTNER_SUFFIX}"


def partner_title(title: str, kernel: str) -> str:
    """The partner kernel's title, which must slugify to its slug: the title with " b" added, or the
    slug spelt with spaces where the slug had to be shortened."""
    slug = partner_kernel(kernel).partition("/")[2]
    return f"{title} b" if slug == kernel.partition("/")[2] + PARTNER_SUFFIX else slug.replace("-", " ")


def target_kernel(kernel: str, action: PlanAction, resumes: Resume | None) -> str:
    """Where a push goes: a fresh run to the experiment's own kernel; a resumed one to the kernel that does
    not hold the checkpoint, so that no kernel lists itself as a source."""
    if action != PlanAction.RESUME or resumes is None:
        return kernel
    return partner_kernel(kernel) if resumes.kernel == kernel else kernel


def must_cancel(invalid_sources: dict[str, list[str]]) -> bool:
    """Whether a version that Kaggle created while refusing some of its sources must be cancelled: every
    source it lists is one the notebook reads (its data, its checkpoint), so any data source refused means
    it cannot run as planned. Refused tags do not matter."""
    return any(names for kind, names in invalid_sources.items() if kind != "tags")


class Pushed(StrEnum):
    """What Kaggle shows of a push whose answer was lost."""

    CREATED = "created"  # the kernel's current version is newer than before the push: it is that version
    ABSENT = "absent"  # no new version: the push never reached Kaggle; push again
    UNKNOWN = "unknown"  # no new version yet, but the push may still be in flight: ask again later


def _seconds(later: str, earlier: str) -> float | None:
    try:
        return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()
    except (TypeError, ValueError):
        return None


def pushed_outcome(intent: Version, current: int | None, current_time: str, now: str, *,
                   in_flight: bool = True) -> Pushed:
    """Judge the intent of a push (`prior_version`, `pushed_at`) against the kernel's current version and its
    time on Kaggle (None: Kaggle has no such kernel yet) at `now`. `in_flight=False`: the caller knows the
    request is over (its own push just failed), so no new version means none was made."""
    prior = intent.prior_version or 0
    if current is not None and current > prior:
        age = _seconds(current_time, intent.pushed_at) if current_time else None
        if age is None or age >= -CLOCK_SKEW_SECONDS:
            return Pushed.CREATED
    waited = _seconds(now, intent.pushed_at)
    if not in_flight:
        return Pushed.ABSENT
    return Pushed.ABSENT if waited is None or waited >= IN_FLIGHT_SECONDS else Pushed.UNKNOWN
