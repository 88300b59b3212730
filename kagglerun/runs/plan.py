"""Push planning as pure functions: from the ledger's record of an experiment and what was just rendered,
decide whether to push it, resume it from a checkpoint, or skip it; and one decision for a pack from its
members'. No network, no files: `push` gathers the inputs and carries the decisions out."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..states import KernelState, PlanAction, RunState
from .ledger import Record

DEFAULT_RUN_SECONDS = 2 * 3600.0  # quota estimate for a run never seen: the seed's baselines took 46 min to 2.2 h

Decision = tuple[PlanAction, str, int | None]  # action, reason, the version whose checkpoint it resumes


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
    resumes: int | None = None  # the version whose checkpoint the new one continues from
    estimate_seconds: float = DEFAULT_RUN_SECONDS
    members: dict[str, str] = field(default_factory=dict)  # a pack's experiments and their settings hashes

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
    if last is None:
        return PlanAction.PUSH, "never pushed", None
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
                last.version if last.has_checkpoint else None)
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
    return (PlanAction.RESUME, reason, max(resumes)) if resumes else (PlanAction.PUSH, reason, None)


def resume_decision(record: Record, settings_hash: str, same: frozenset[str] = frozenset()) -> Decision:
    """Push again an experiment whose last version did not finish, resuming from the newest checkpoint
    its earlier versions (with the same settings) left, when there is one."""
    last = record.latest
    assert last is not None
    why = f"v{last.version} ended {last.run_state or last.state}"
    for version in reversed(record.versions):
        if version.settings_hash != settings_hash and version.settings_hash not in same:
            break
        if version.has_checkpoint:
            return PlanAction.RESUME, f"{why}; resuming from its checkpoint", version.version
    return PlanAction.PUSH, f"{why}; no checkpoint, starting over", None
