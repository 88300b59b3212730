"""The state vocabularies, in one place: Kaggle's session states, a run's own state, a status row's state,
what push plans and what pull did. Each is a StrEnum, so it reads, compares and serialises as its text.

Imports only the payload's contract (the run states the notebook writes), so every layer may import it.
"""

from __future__ import annotations

from enum import StrEnum

from .core.contract import RUN_STATES


class KernelState(StrEnum):
    """A Kaggle session's state, as `GetKernelSessionStatus` answers it (kagglesdk's KernelWorkerStatus;
    the member's name is the wire value)."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    ERROR = "error"
    CANCEL_REQUESTED = "cancel_requested"
    CANCEL_ACKNOWLEDGED = "cancel_acknowledged"
    NEW_SCRIPT = "new_script"  # a quick save: no session runs
    UNKNOWN = "unknown"  # the answer named no state

    @property
    def finished(self) -> bool:
        return self in FINISHED

    @classmethod
    def parse(cls, text: str) -> KernelState:
        try:
            return cls(str(text).lower())
        except ValueError:
            return cls.UNKNOWN


FINISHED = frozenset({KernelState.COMPLETE, KernelState.ERROR, KernelState.CANCEL_ACKNOWLEDGED})


class RunState(StrEnum):
    """How a run's own training stands, as its summary.json says (the payload writes RUN_STATES)."""

    RUNNING = "running"
    COMPLETE = "complete"
    STOPPED = "stopped"  # by its time budget (Kaggle still says complete): the next push resumes it
    FAILED = "failed"


assert tuple(RunState) == RUN_STATES, "states.RunState and core.contract.RUN_STATES disagree"


class RowState(StrEnum):
    """A status table row's state beyond Kaggle's own (which a row may carry too)."""

    NOT_PUSHED = "not pushed"
    SKIPPED = "skipped"
    TO_PUSH = "to push"
    PUSHING = "pushing: answer unknown"  # the ledger holds the intent of a push whose answer never came
    WAITING = "waiting for slot"
    PUSH_FAILED = "push failed"
    GAVE_UP = "gave up"
    STOPPED = "stopped (time budget)"
    UNKNOWN = "unknown"  # Kaggle has no such kernel, or it is not the user's
    PULLED = "pulled"


ROW_FINISHED = frozenset({RowState.NOT_PUSHED, RowState.SKIPPED, RowState.PULLED, RowState.GAVE_UP, RowState.STOPPED,
                          RowState.UNKNOWN, *FINISHED})


class PlanAction(StrEnum):
    """What push will do with one experiment or pack."""

    PUSH = "push"
    RESUME = "resume"  # push, its next session continuing from a stopped run's checkpoint
    SKIP = "skip"


class PullAction(StrEnum):
    """What pull did with one experiment."""

    PULLED = "pulled"
    UP_TO_DATE = "up to date"
    SKIPPED = "skipped"
    REFUSED = "refused"
