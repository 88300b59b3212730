"""What long operations report while they work, and the records they report: the observer protocol.

The library never prints. `push`, `status --watch`, `pull`, `run`, `search` and `demo` take an `Observer`
and tell it what happens; the CLI passes one that draws (kagglerun/cli/views.py), tests pass one that
collects. Every method of the base class does nothing, so an observer overrides only what it shows.
Imports only `states`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .states import ROW_FINISHED


@dataclass
class StatusRow:
    """One line of the status table: an experiment's kernel, version and state."""

    experiment: str
    kernel: str = ""
    version: int | None = None
    state: str = "not pushed"  # a KernelState or a RowState
    elapsed: float | None = None  # seconds from push to finish (or to now)
    failure: str = ""
    attempt: int = 0  # how many versions this batch pushed for it (resumes and retries included)
    log_tail: list[str] = field(default_factory=list)
    pack: str = ""  # the pack whose kernel runs it, if any
    cause: str = ""  # why its session ended, in words ("stopped at Kaggle's time limit", "out of memory", …)

    @property
    def finished(self) -> bool:
        return self.state in ROW_FINISHED


@dataclass
class PullResult:
    """What pull did with one experiment."""

    experiment: str
    action: str  # a PullAction
    detail: str = ""
    best_test_acc: float | None = None


@dataclass(frozen=True)
class EpochProgress:
    """A run's progress as its summary.json says: epochs done of the total, and the latest test accuracy."""

    experiment: str
    done: int
    total: int
    test_acc: float | None = None


class Observer:
    """Receives progress; the default does nothing with it."""

    def event(self, message: str) -> None:
        """One line of news: pushed, skipped, waiting, a warning (starting with "warning:")."""

    def rows(self, rows: list[StatusRow], title: str = "") -> None:
        """The current status table (push --wait, status --watch, demo)."""

    def pulled(self, result: PullResult) -> None:
        """One experiment pulled, up to date, skipped or refused."""

    def epochs(self, progress: EpochProgress) -> None:
        """A local run's epochs so far."""


class Collect(Observer):
    """Keeps everything it is told (for tests and for callers that report at the end)."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.tables: list[list[StatusRow]] = []
        self.results: list[PullResult] = []
        self.progress: list[EpochProgress] = []

    def event(self, message: str) -> None:
        self.events.append(message)

    def rows(self, rows: list[StatusRow], title: str = "") -> None:
        self.tables.append(list(rows))

    def pulled(self, result: PullResult) -> None:
        self.results.append(result)

    def epochs(self, progress: EpochProgress) -> None:
        self.progress.append(progress)


SILENT = Observer()
