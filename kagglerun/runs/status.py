"""`kagglerun status`: ask Kaggle for each session's state, record it in the ledger, give one row per experiment.

A pack's members each have a row, with the pack's kernel and its session's state. A row names the kernel its
latest version went to (a resumed run alternates between the experiment's two kernels). A push whose answer
never came (the ledger's intent, "pushing: answer unknown") is settled first by asking Kaggle for the
kernel's current version: the version it made is recorded, or the intent dropped when there is none.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime

from ..core.contract import now_iso
from ..errors import KernelError, PullError
from ..kaggle import KaggleKernels, session_cause
from ..kaggle.logs import failure_tail
from ..progress import SILENT, Observer, StatusRow
from ..states import KernelState, RowState, RunState
from ..workspace import Workspace
from .ledger import Ledger, Record, Version
from .outcome import Unverified, read_outcome
from .plan import Pushed, pushed_outcome

LOG_TAIL_LINES = 12
OUTCOME_ATTEMPTS = 3  # listings of an ended run's output read before its outcome is left unknown
POLL_SECONDS = 30.0  # between status rounds, by default: each pause is 30-60 s (`poll_pause`)


def poll_pause(seconds: float) -> float:
    """The pause before the next status round: `seconds` to twice that, at random, so that many clients
    started together do not ask Kaggle together, and a long wait asks Kaggle about once a minute at most
    (tests pass a short `seconds`)."""
    return seconds * random.uniform(1.0, 2.0)


def _seconds_between(start: str, end: str = "") -> float | None:
    try:
        t0 = datetime.fromisoformat(start)
        t1 = datetime.fromisoformat(end) if end else datetime.now(UTC)
    except ValueError:
        return None
    return max(0.0, (t1 - t0).total_seconds())


def row_for(name: str, kernel: str, run: Version | None, pack: str = "") -> StatusRow:
    """The row of experiment `name`'s run: Kaggle's state of its session, unless the run's own summary
    (once read) says more: stopped by its time budget, or, in a pack whose kernel failed, complete or failed."""
    if run is None:
        return StatusRow(name, kernel, pack=pack)
    state, failure = run.state, run.failure
    if run.finished and run.run_state == RunState.STOPPED:
        state = RowState.STOPPED
    elif run.finished and pack and run.run_state in (RunState.COMPLETE, RunState.FAILED):
        state, failure = ((KernelState.COMPLETE, "") if run.run_state == RunState.COMPLETE
                          else (KernelState.ERROR, failure))
    cause = session_cause(state, failure) if state in (KernelState.ERROR, KernelState.CANCEL_ACKNOWLEDGED) else ""
    return StatusRow(name, kernel, run.version, state, _seconds_between(run.pushed_at, run.finished_at),
                     failure, pack=pack, cause=cause)


def refresh_entry(api: KaggleKernels, name: str, entry: Record) -> bool:
    """`refresh_run` for experiment `name`'s latest version (in a pack, its checkpoint is in `name/`), once
    a push without an answer is settled (`resolve_pushing`)."""
    if entry.latest is not None and entry.latest.pushing:
        resolve_pushing(api, entry)
    latest = entry.latest
    if latest is None or latest.pushing:
        return False
    return refresh_run(api, entry.kernel_of(latest), latest, entry.output_prefix(name))


def resolve_pushing(api: KaggleKernels, entry: Record) -> Pushed:
    """Settle the intent of a push whose answer never came: Kaggle's current version of its kernel, newer than
    the one before the push, is the version it made (recorded, queued until asked); no newer version means
    none was made (the intent is dropped), unless the push may still be in flight (left as it is)."""
    intent = entry.last
    current = api.current_version(entry.kernel_of(intent))
    outcome = pushed_outcome(intent, current.version if current else None, current.time if current else "", now_iso())
    if outcome == Pushed.CREATED and current is not None:
        intent.version, intent.state, intent.prior_version = current.version, KernelState.QUEUED, None
        entry.record(entry.versions.pop())
    elif outcome == Pushed.ABSENT:
        entry.versions.pop()
    return outcome


def refresh_run(api: KaggleKernels, kernel: str, run: Version, prefix: str = "") -> bool:
    """Ask Kaggle for `run`'s state and update it in place; True when it has just finished.

    Its output is read once it has ended (`outcome.read_outcome`, up to OUTCOME_ATTEMPTS tries, for a listing
    may be stale): a run that ends without completing is checked for a verified checkpoint, so that a later
    push can resume it (nothing else settles that: pull skips such a run); one that completes, and a pack's
    member whatever the kernel's end, has its summary.json read: a run stopped by its time budget ends
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
    try:
        read_outcome(api, kernel, run, prefix, attempts=OUTCOME_ATTEMPTS)
    except (Unverified, PullError):  # not verifiable now: `pull` settles a completed one, with retries
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
                if not entries[name].versions:  # its only push made no version on Kaggle
                    del entries[name]
        rows = [_row(n, entries[n]) if n in entries else row_for(n, "", None) for n in wanted]
    for row in rows:
        if row.experiment in unknown:
            row.state, row.failure = RowState.UNKNOWN, unknown[row.experiment]
        elif row.state in (KernelState.ERROR, KernelState.CANCEL_ACKNOWLEDGED) and log_lines:
            try:
                row.log_tail = failure_tail(api.log(row.kernel, row.version), log_lines)
            except KernelError:
                pass
    return rows


def _row(name: str, entry: Record) -> StatusRow:
    latest = entry.latest
    if latest is not None and latest.pushing:
        return StatusRow(name, entry.kernel_of(latest), None, RowState.PUSHING, _seconds_between(latest.pushed_at),
                         "Kaggle does not show the version yet; ask again with `kagglerun status`",
                         pack=entry.pack_name)
    return row_for(name, entry.kernel_of(latest), latest, entry.pack_name)


def watch(ws: Workspace, api: KaggleKernels, names: list[str] | None = None, *, interval: float = POLL_SECONDS,
          observer: Observer = SILENT, sleep: Callable[[float], None] = time.sleep) -> list[StatusRow]:
    """`refresh` every `interval` to twice `interval` seconds (`poll_pause`) until every run has finished,
    showing the rows to `observer`; returns the final rows."""
    while True:
        rows = refresh(ws, api, names, log_lines=0)
        observer.rows(rows)
        if all(r.finished for r in rows):
            return refresh(ws, api, names)
        sleep(poll_pause(interval))


def failure_details(rows: list[StatusRow]) -> list[tuple[str, str, list[str]]]:
    """(experiment, reason, last log lines) of every failed or stopped run, for printing under the table;
    the reason starts with its cause in words."""
    return [(r.experiment, ": ".join(filter(None, [r.cause, r.failure])) or r.state, r.log_tail) for r in rows
            if r.log_tail or r.state in (KernelState.ERROR, KernelState.CANCEL_ACKNOWLEDGED)]

