"""Follow pushed runs: ask Kaggle for each session's state, record it in the ledger, show it as one table.

A pack's members each have a row, with the pack's kernel and its session's state."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from rich.table import Table

from .errors import KernelError, PullError
from .kaggle_api import KaggleKernels
from .core.contract import now_iso
from .ledger import Entry, Ledger, Run
from .workspace import Workspace

LOG_TAIL_LINES = 12
STOPPED = "stopped (time budget)"  # a row's state: Kaggle says complete, the run's summary says stopped
UNKNOWN = "unknown"  # a row's state: Kaggle has no such kernel, or it is not the user's (the reason says which)


@dataclass
class StatusRow:
    """One line of the status table."""

    experiment: str
    kernel: str = ""
    version: int | None = None
    state: str = "not pushed"
    elapsed: float | None = None  # seconds from push to finish (or to now)
    failure: str = ""
    attempt: int = 0  # how many versions this batch pushed for it (resumes and retries included)
    log_tail: list[str] = field(default_factory=list)
    pack: str = ""  # the pack whose kernel runs it, if any

    @property
    def finished(self) -> bool:
        from .kaggle_api import FINISHED_STATES

        return self.state in FINISHED_STATES or self.state in ("not pushed", "skipped", "pulled", "gave up", STOPPED,
                                                              UNKNOWN)


def _seconds_between(start: str, end: str = "") -> float | None:
    try:
        t0 = datetime.fromisoformat(start)
        t1 = datetime.fromisoformat(end) if end else datetime.now(timezone.utc)
    except ValueError:
        return None
    return max(0.0, (t1 - t0).total_seconds())


def row_for(name: str, kernel: str, run: Run | None, pack: str = "") -> StatusRow:
    """The row of experiment `name`'s run: Kaggle's state of its session, unless the run's own summary
    (once read) says more: stopped by its time budget, or, in a pack whose kernel failed, complete or failed."""
    if run is None:
        return StatusRow(name, kernel, pack=pack)
    state, failure = run.state, run.failure
    if run.finished and run.run_state == "stopped":
        state = STOPPED
    elif run.finished and pack and run.run_state in ("complete", "failed"):
        state, failure = ("complete", "") if run.run_state == "complete" else ("error", failure)
    return StatusRow(name, kernel, run.version, state, _seconds_between(run.pushed_at, run.finished_at),
                     failure, pack=pack)


def refresh_entry(api: KaggleKernels, name: str, entry: Entry) -> bool:
    """`refresh_run` for experiment `name`'s latest version (in a pack, its checkpoint is in `name/`)."""
    return entry.latest is not None and refresh_run(api, entry.kernel, entry.latest, entry.output_prefix(name))


def refresh_run(api: KaggleKernels, kernel: str, run: Run, prefix: str = "") -> bool:
    """Ask Kaggle for `run`'s state and update it in place; True when it has just finished.

    A run that ends without completing is checked for a checkpoint (`prefix` + checkpoint_last.pt in its
    output), so a later push can resume it. One that completes, and a pack's member whatever the kernel's
    end, has its summary.json read (`pull.read_outcome`, one try): a run stopped by its time budget ends
    COMPLETE on Kaggle, and a member may have completed in a pack whose other member failed."""
    if run.finished:
        return False
    status = api.status(kernel, run.version)
    run.state = status.state
    if status.failure:
        run.failure = status.failure
    if not status.finished:
        return False
    run.finished_at = now_iso()
    from .pull import Unverified, read_outcome  # pull builds on this module

    try:
        read_outcome(api, kernel, run, prefix)
    except (Unverified, PullError):  # not verifiable now (e.g. stale output): `pull` settles it, with retries
        pass
    return True


def refresh(ws: Workspace, api: KaggleKernels, names: list[str] | None = None,
            log_lines: int = LOG_TAIL_LINES) -> list[StatusRow]:
    """The state of every named experiment's latest version (all in the ledger when `names` is None),
    asked of Kaggle for those not yet finished and recorded in the ledger. Failed runs carry their log's
    last lines."""
    ledger = Ledger(ws.results)
    wanted = names if names is not None else sorted(ledger.load())
    unknown: dict[str, str] = {}  # Kaggle has no such kernel, or not the user's: shown, not fatal to the rest
    with ledger.update() as entries:
        for name in wanted:
            if name in entries:
                try:
                    refresh_entry(api, name, entries[name])
                except KernelError as e:
                    unknown[name] = str(e)
        rows = [row_for(n, entries[n].kernel, entries[n].latest, entries[n].pack_name) if n in entries else row_for(n, "", None)
                for n in wanted]
    for row in rows:
        if row.experiment in unknown:
            row.state, row.failure = UNKNOWN, unknown[row.experiment]
        elif row.state in ("error", "cancel_acknowledged") and log_lines:
            try:
                row.log_tail = api.log(row.kernel, row.version).rstrip().splitlines()[-log_lines:]
            except KernelError:
                pass
    return rows


def watch(ws: Workspace, api: KaggleKernels, names: list[str] | None = None, *, interval: float = 15.0,
          on_update: Callable[[list[StatusRow]], None] | None = None,
          sleep: Callable[[float], None] = time.sleep) -> list[StatusRow]:
    """`refresh` every `interval` seconds until every run has finished; returns the final rows."""
    while True:
        rows = refresh(ws, api, names, log_lines=0)
        if on_update:
            on_update(rows)
        if all(r.finished for r in rows):
            return refresh(ws, api, names)
        sleep(interval)


def _elapsed(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


_STATE_STYLE = {"complete": "green", "pulled": "green", "running": "cyan", "queued": "yellow",
                "error": "red", "gave up": "red", "waiting for slot": "yellow", STOPPED: "yellow", UNKNOWN: "red"}


WIDE_STATUS = 100  # columns from which the status table shows the kernel id


def status_table(rows: list[StatusRow], title: str | None = None) -> "_StatusTable":
    """experiment, kernel, version, state, elapsed, failure reason: as wide as the terminal allows."""
    return _StatusTable(rows, title)


@dataclass
class _StatusTable:
    """The status table, laid out when printed: on a terminal narrower than WIDE_STATUS columns the kernel id
    (the owner's slug of the experiment's name, or of its pack's) is left out, so that the failure reason
    keeps room to be read."""

    rows: list[StatusRow]
    title: str | None = None

    def table(self, width: int) -> Table:
        columns = [c for c in ("experiment", "kernel", "version", "state", "elapsed", "failure reason")
                   if c != "kernel" or width >= WIDE_STATUS]
        table = Table(title=self.title, title_justify="left")
        for column in columns:
            # The kernel id and the reason fold; the short columns stay whole.
            table.add_column(column, no_wrap=column not in ("kernel", "failure reason"), overflow="fold")
        for r in self.rows:
            style = _STATE_STYLE.get(r.state, "")
            version = "" if r.version is None else f"v{r.version}"
            if r.attempt > 1:
                version += f" (try {r.attempt})"
            cells = {"experiment": r.experiment + (f"\n[dim]in {r.pack}[/]" if r.pack else ""),  # the pack's own line
                     "kernel": r.kernel, "version": version, "state": f"[{style}]{r.state}[/]" if style else r.state,
                     "elapsed": _elapsed(r.elapsed), "failure reason": r.failure}
            table.add_row(*(cells[c] for c in columns))
        return table

    def __rich_console__(self, console, options):
        yield self.table(options.max_width)


def failure_details(rows: list[StatusRow]) -> list[tuple[str, str, list[str]]]:
    """(experiment, reason, last log lines) of every failed run, for printing under the table."""
    return [(r.experiment, r.failure or r.state, r.log_tail) for r in rows if r.log_tail or r.state == "error"]

