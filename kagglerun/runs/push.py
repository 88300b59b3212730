"""Push experiments to Kaggle: render and validate, skip what has not changed, resume a stopped run in the
experiment's other kernel given the output that holds its checkpoint, and with `wait` keep at most N sessions
running, pushing the rest as slots free up and pushing again (resuming) runs that die or stop on their time
budget.

Each push is written ahead in the ledger: the intent (state "pushing", with the kernel's version before it)
before SaveKernel, the answer after it. A push is never simply sent again: when its answer is lost, Kaggle
is asked whether the version was made (the kernel's current version and its time) and, if so, it is
recorded instead of pushing a second session. An answer that lists refused sources still made a version:
it is recorded, the refused sources named, and it is cancelled, since it cannot run as planned.

A pack (several experiments in one kernel, notebook.packs) is one plan and one session; the ledger
records each member under its own name, so a pack is unchanged only when every member is. The decisions
themselves are pure functions in plan.py."""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..core.contract import SETTINGS_FILE, full_settings_hash, now_iso, settings_hash
from ..errors import AnswerLost, CredentialsError, KaggleError, KernelError, LedgerError, SessionCapError
from ..experiments import Settings
from ..kaggle import KaggleKernels, PushResult, Quota
from ..notebook.render import METADATA_FILE, default_owner, render_experiments
from ..notebook.resume import retarget
from ..progress import SILENT, Observer, StatusRow
from ..states import KernelState, PlanAction, RowState
from ..workspace import Workspace
from .estimate import run_seconds
from .ledger import PUSHING, Ledger, Record, Version
from .longer import continue_longer
from .plan import (
    Pushed,
    PushPlan,
    combine,
    decide,
    must_cancel,
    partner_title,
    pushed_outcome,
    resume_decision,
    resuming,
)
from .status import POLL_SECONDS, poll_pause, refresh_entry, row_for

STATUS_FAILURES_TOLERATED = 10  # consecutive failed status rounds before `wait` gives up


@dataclass(frozen=True)
class PushOptions:
    """How `push_experiments` pushes (the CLI's options)."""

    force: bool = False  # push even experiments unchanged since their last successful push
    dry_run: bool = False  # render and plan only; no network
    wait: bool = False  # keep at most max_running sessions, push the rest as slots free, until all finish
    max_running: int = 2  # Kaggle allows two GPU sessions at a time
    retries: int = 2  # with wait: pushes again (resuming) of a run that dies or stops
    poll_seconds: float = POLL_SECONDS  # with wait: between status rounds, each pause 1-2x this (poll_pause)
    # with wait: how long Kaggle's session cap may keep refusing pushes (sessions we cannot see, started
    # elsewhere) before giving up; Kaggle's longest session is 12 h
    cap_wait_seconds: float = 12.5 * 3600


@dataclass
class PushReport:
    """What a push did: the plans, each experiment's final row, the quota and any warnings."""

    plans: list[PushPlan]
    rows: list[StatusRow] = field(default_factory=list)
    quota: Quota | None = None
    needed_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def not_complete(self) -> list[StatusRow]:
        done = (KernelState.COMPLETE, RowState.SKIPPED, KernelState.QUEUED, KernelState.RUNNING)
        return [r for r in self.rows if r.state not in done]


def _kernel_of(folder: Path) -> str:
    return json.loads((folder / METADATA_FILE).read_text())["id"]


def _rendered(folder: Path) -> dict:
    """The notebook's own record of what it runs (experiment, hashes, a pack's members): the plan is
    judged on exactly what was rendered."""
    return json.loads((folder / f"{folder.name}.ipynb").read_text())["metadata"]["kagglerun"]


def _estimate_seconds(ws: Workspace, s: Settings) -> float:
    """Expected session time from the model's cost or a measured epoch time (runs.estimate)."""
    return run_seconds(ws, s)


def equal_hashes(ws: Workspace, s: Settings) -> frozenset[str]:
    """Recorded settings hashes that mean "unchanged" besides `s.hash`: ledgers written before presentation
    (description, report.*) was left out of the hash hold full hashes, either of today's settings or of the
    pulled run's own settings.json when that differs from today's in presentation only."""
    same = {s.full_hash}
    try:
        recorded = json.loads((ws.result_dir(s.name) / SETTINGS_FILE).read_text())
        if settings_hash(recorded) == s.hash:
            same.add(full_settings_hash(recorded))
    except (OSError, ValueError, AttributeError, TypeError):  # never pulled, or not a settings object
        pass
    return frozenset(same)


class InvalidSources(KaggleError):
    """Kaggle made the version but refused some of its sources; it was recorded and cancelled."""


class PushUnknown(KaggleError):
    """A push's answer was lost and Kaggle could not be asked whether it made the version: the ledger keeps
    the intent ("pushing: answer unknown") for the next command to settle."""


def plan_push(ws: Workspace, names: list[str], owner: str, force: bool = False,
              packs: list[list[str]] | tuple[()] = ()) -> list[PushPlan]:
    """Render every experiment and pack for `owner` (all or nothing) and decide, from the ledger, what to push."""
    folders = render_experiments(ws, names, owner=owner, packs=packs)
    store = ws.store()
    entries = Ledger(ws.results).load()
    plans = []
    for folder in folders:
        kernel, rendered = _kernel_of(folder), _rendered(folder)
        members = rendered.get("pack") or {}
        hashes = members or {rendered["experiment"]: rendered["settings_hash"]}
        core = rendered["core_hash"]
        decisions = {n: continue_longer(ws, n, entries.get(n), store.load(n),
                                        decide(entries.get(n), kernel, h, core, force,
                                               equal_hashes(ws, store.load(n))))
                     for n, h in hashes.items()}
        action, reason, resumes = combine(decisions)
        # A pack's members run side by side, one GPU each
        estimate = max(_estimate_seconds(ws, store.load(n)) for n in hashes)
        plans.append(PushPlan(folder.name, folder, kernel, rendered["settings_hash"], core, action, reason, resumes,
                              estimate, members, resuming(decisions, action)))
    return plans


def _prepare(plan: PushPlan, base: dict) -> None:
    """Point the rendered folder at the plan's target kernel, with the resume it plans (notebook/resume.py)."""
    target = plan.target
    title = base["title"] if target == plan.kernel else partner_title(base["title"], plan.kernel)
    source = plan.resumes.kernel if plan.action == PlanAction.RESUME and plan.resumes else ""
    retarget(plan.folder, base, target, title, source, plan.resumes.version if source and plan.resumes else 0,
             plan.resuming)


def push_one(ws: Workspace, api: KaggleKernels, plan: PushPlan, *, sleep: Callable[[float], None] = time.sleep) -> Version:
    """Push one planned experiment or pack and record the new version in the ledger (under each member's
    name for a pack), written ahead: the intent before SaveKernel, the answer after it; returns the new
    version's run. Raises InvalidSources (after recording and cancelling it) when Kaggle refused sources."""
    if not plan.metadata:  # the metadata as rendered: a plan pushed again is pointed from it, not from the last push
        plan.metadata = json.loads((plan.folder / METADATA_FILE).read_text())
    _prepare(plan, plan.metadata)
    target, ledger = plan.target, Ledger(ws.results)
    store = ws.store()
    overrides = {name: store.overrides_of(name) for name in plan.recorded}  # so status and pull know sweep points
    current = api.current_version(target)
    intent = Version(version=0, settings_hash="", core_hash=plan.core_hash, pushed_at=now_iso(), state=PUSHING,
                     kernel=target, prior_version=current.version if current else 0)
    try:
        replaced = _record(ledger, plan, intent, overrides)
    except OSError as e:
        raise LedgerError(f"{ledger.path}: cannot record the push of {plan.name} ({e.strerror or e}); "
                          "nothing was pushed") from None
    try:
        result = _push_once(api, plan, intent, sleep)
    except PushUnknown:
        raise
    except KaggleError:  # refused outright (cap, quota, permission), or lost and not made: no version exists
        _forget_intent(ledger, plan, intent, replaced)
        raise
    run = Version(version=result.version, settings_hash="", core_hash=plan.core_hash, pushed_at=intent.pushed_at,
                  resumes=plan.resumes.version if plan.action == PlanAction.RESUME and plan.resumes else None,
                  kernel=result.kernel or target,
                  source=plan.resumes.kernel if plan.action == PlanAction.RESUME and plan.resumes else "")
    refused = "; ".join(f"{kind} sources {', '.join(names)}" if kind != "tags" else f"tags {', '.join(names)}"
                        for kind, names in sorted(result.invalid.items()))
    cancel = must_cancel(result.invalid)
    if refused:
        run.failure = f"Kaggle refused {refused}" + ("; cancelled: it cannot run without them" if cancel else "")
    try:
        _record(ledger, plan, run, overrides)
    except (OSError, LedgerError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else e
        raise LedgerError(f"Kaggle made {run.label} of {plan.name}, but the ledger could not record it ({why}); "
                          "the next command finds it on Kaggle") from None
    if cancel:
        cancelled = _cancel(api, run)
        if not cancelled:
            run.failure = f"Kaggle refused {refused}; it cannot run without them and {cancelled.why}"
            _record(ledger, plan, run, overrides)
        raise InvalidSources(f"{plan.name}: Kaggle made {run.label} but refused {refused}; "
                             + ("it was cancelled, as it cannot run without them" if cancelled else
                                f"it cannot run without them and {cancelled.why}"))
    return run


def _push_once(api: KaggleKernels, plan: PushPlan, intent: Version, sleep: Callable[[float], None]) -> PushResult:
    """SaveKernel, never simply repeated: after a lost answer, Kaggle is asked whether the version was made
    (the target's current version against the one before the push) and the push is sent again only if not."""
    for attempt in range(1, api.retry.attempts + 1):
        try:
            return api.push(plan.folder)
        except AnswerLost as e:
            lost = e
        try:
            current = api.current_version(intent.kernel)
        except KaggleError as e:
            raise PushUnknown(f"{plan.name}: {lost}, and Kaggle could not be asked whether it made the version "
                              f"({e}); 'kagglerun status' asks again") from None
        outcome = pushed_outcome(intent, current.version if current else None, current.time if current else "",
                                 now_iso(), in_flight=False)
        if outcome == Pushed.CREATED and current is not None:
            api.counters["push_found_after_lost_answer"] += 1
            # the lost answer would have listed refused sources: a kernel source missing from the version is one
            given = {k.lower() for k in current.kernel_sources}
            sent = json.loads((plan.folder / METADATA_FILE).read_text()).get("kernel_sources") or []
            missing = [k for k in sent if k.lower() not in given]
            return PushResult(intent.kernel, current.version, "", {"kernel": missing} if missing else {})
        api.counters["push_sent_again"] += 1
        if attempt < api.retry.attempts:
            sleep(api.retry.backoff(attempt))
    raise KaggleError(f"the push of {plan.name} kept losing its answer ({lost}); Kaggle shows no new version "
                      f"of {intent.kernel}; try again later")


def _record(ledger: Ledger, plan: PushPlan, run: Version,
            overrides: dict[str, dict] | None = None) -> dict[str, Record]:
    """Write `run` (an intent or an answer) as the latest version of each experiment the plan records; returns
    the records it replaced (of another kernel: the experiment's slug changed)."""
    replaced = {}
    with ledger.update(backup=False) as entries:
        for name, settings_hash in plan.recorded.items():
            entry = entries.get(name)
            if entry is None or entry.kernel != plan.kernel:
                if entry is not None:
                    replaced[name] = entry
                entry = entries[name] = Record(plan.kernel)
            entry.pack = plan.pack
            entry.record(dataclasses.replace(run, settings_hash=settings_hash,
                                             overrides=(overrides or {}).get(name, {})))
    return replaced


def _forget_intent(ledger: Ledger, plan: PushPlan, intent: Version, replaced: dict[str, Record]) -> None:
    """Take back the intent of a push that made no version, and any record it replaced."""
    with ledger.update(backup=False) as entries:
        for name in plan.recorded:
            entry = entries.get(name)
            if entry is not None:
                entry.versions = [r for r in entry.versions if not (r.pushing and r.pushed_at == intent.pushed_at)]
                if not entry.versions:
                    del entries[name]
            if name in replaced and name not in entries:
                entries[name] = replaced[name]


class _Cancelled:
    """Whether a cancel went through (truthy), and why not."""

    def __init__(self, why: str = ""):
        self.why = why

    def __bool__(self) -> bool:
        return not self.why


def _cancel(api: KaggleKernels, run: Version) -> _Cancelled:
    """Cancel a version that cannot run; a failure to do so is returned, not raised."""
    try:
        if not run.session_id:  # SaveKernel's answer names none (ApiSaveKernelResponse; kaggle-cli issue #388)
            raise KaggleError("Kaggle's push answer names no session to cancel")
        api.cancel(run.session_id)
        return _Cancelled()
    except KaggleError as e:
        return _Cancelled(f"could not be cancelled ({e}): cancel it on kaggle.com")


def _plan_rows(plan: PushPlan, run: Version | None = None, attempt: int = 0, **fields) -> dict[str, StatusRow]:
    """The status rows of a plan, one per recorded experiment: from its pushed run, else from `fields`."""
    pack = plan.name if plan.members else ""
    if run is None:
        return {n: StatusRow(n, plan.kernel, pack=pack, **fields) for n in plan.recorded}
    rows = {n: row_for(n, run.kernel or plan.kernel, run, pack) for n in plan.recorded}
    for row in rows.values():
        row.attempt = attempt
    return rows


def push_experiments(ws: Workspace, names: list[str], *, api: KaggleKernels | None,
                     packs: list[list[str]] | tuple[()] = (), options: PushOptions = PushOptions(),
                     observer: Observer = SILENT, sleep: Callable[[float], None] = time.sleep) -> PushReport:
    """Render, plan and push `names`, and each group of `packs` as one packed kernel.

    Without `options.wait`, push each planned experiment once; Kaggle's session cap stops the batch with
    SessionCapError (what was pushed is in the ledger). With `wait`, keep at most `max_running` sessions
    (those already running count too), push the rest as slots free up, wait out cap rejections, and push
    again, resuming, an experiment whose session dies or whose run stops on its time budget (its summary says
    "stopped" though Kaggle says complete), up to `retries` times; return when all have finished.
    `dry_run` renders and plans only, with no network (`api` may then be None)."""
    owner = api.username if api is not None else default_owner()
    if api is not None and not options.dry_run:
        Ledger(ws.results).check_writable()  # before anything is pushed: a push that Kaggle runs must reach the ledger
    if api is not None:  # decide on current states: a run the ledger last saw running may have ended
        with Ledger(ws.results).update() as entries:
            for name in [*names, *(m for group in packs for m in group)]:
                if name in entries:
                    refresh_entry(api, name, entries[name])
    plans = plan_push(ws, names, owner, options.force, packs)
    report = PushReport(plans)
    todo = [p for p in plans if p.action != PlanAction.SKIP]
    for p in plans:
        if p.action == PlanAction.SKIP:
            observer.event(f"skipped {p.name}: {p.reason}")
    report.needed_seconds = sum(p.estimate_seconds for p in todo)
    for warning in _weights_warnings(ws, todo):
        report.warnings.append(warning)
        observer.event("warning: " + warning)
    if options.dry_run or api is None:
        if todo:
            observer.event(f"this batch needs about {report.needed_seconds / 3600:.1f} GPU hours")
        report.rows = [row for p in plans for row in _plan_rows(
            p, state="would " + p.action if p.action != PlanAction.SKIP else RowState.SKIPPED,
            failure=p.reason).values()]
        return report
    _check_quota(api, report, todo, observer)
    rows = {n: row for p in plans for n, row in _plan_rows(
        p, state=RowState.SKIPPED if p.action == PlanAction.SKIP else RowState.TO_PUSH, failure=p.reason).items()}
    if options.wait:
        _Waiter(ws, api, todo, rows, options, observer, sleep).run()
    else:
        _push_each(ws, api, todo, rows, observer, sleep)
    report.rows = list(rows.values())
    return report


def _weights_warnings(ws: Workspace, todo: list[PushPlan]) -> list[str]:
    """Experiments that ask for pretrained weights in a kernel with no internet and nothing attached to hold them."""
    store = ws.store()
    warnings = []
    for name in [n for p in todo for n in p.recorded]:
        s = store.load(name)
        k = s.kaggle
        if s.model.pretrained and not (k.internet or k.model_sources or k.dataset_sources or k.kernel_sources):
            warnings.append(f"{name}: model.pretrained, but kaggle.internet is false and nothing is attached: the run "
                            f"will not find {s.model.name}'s weights (attach them with kaggle.model_sources or "
                            "kaggle.dataset_sources, or set kaggle.internet = true)")
    return warnings


def _check_quota(api: KaggleKernels, report: PushReport, todo: list[PushPlan], observer: Observer) -> None:
    """Say how much GPU quota is left, and warn when the batch needs more than that."""
    report.quota = api.gpu_quota()
    if report.quota is None:
        return
    observer.event(f"GPU quota: {report.quota.left_seconds / 3600:.1f} h of {report.quota.total_seconds / 3600:.1f} h "
                   f"left this week; this batch needs about {report.needed_seconds / 3600:.1f} h")
    if todo and report.needed_seconds > report.quota.left_seconds:
        warning = (f"this batch needs about {report.needed_seconds / 3600:.1f} h of GPU time but only "
                   f"{report.quota.left_seconds / 3600:.1f} h of quota are left; Kaggle refuses new GPU sessions "
                   "once it is used up")
        report.warnings.append(warning)
        observer.event("warning: " + warning)


def _push_each(ws: Workspace, api: KaggleKernels, todo: list[PushPlan], rows: dict[str, StatusRow],
               observer: Observer, sleep: Callable[[float], None]) -> None:
    """Push every plan once; the session cap stops the batch, saying what was pushed."""
    pushed: list[str] = []
    for plan in todo:
        try:
            run = push_one(ws, api, plan, sleep=sleep)
        except SessionCapError as e:
            done = f" (pushed: {', '.join(pushed)})" if pushed else ""
            raise SessionCapError(f"{e}{done}; use --wait to push the rest as slots free up") from None
        pushed.append(plan.name)
        rows.update(_plan_rows(plan, run, attempt=1))
        observer.event(f"pushed {plan.name} as {run.label} ({plan.reason})")


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _sessions(entries: dict[str, Record]) -> dict[str, list[str]]:
    """The sessions still running, by plan name (the experiment, or its pack), with their ledger names."""
    active: dict[str, list[str]] = {}
    for name, entry in sorted(entries.items()):
        if entry.latest and not entry.latest.finished:
            active.setdefault(entry.pack_name or name, []).append(name)
    return active


class _Waiter:
    """`push --wait`: at most `max_running` sessions at once; the rest pushed as slots free up; runs that
    die or stop pushed again, resuming, up to `retries` times."""

    def __init__(self, ws: Workspace, api: KaggleKernels, todo: list[PushPlan], rows: dict[str, StatusRow],
                 options: PushOptions, observer: Observer, sleep: Callable[[float], None]):
        self.ws, self.api, self.rows, self.options, self.observer, self.sleep = ws, api, rows, options, observer, sleep
        self.ledger = Ledger(ws.results)
        self.queue = deque(todo)
        self.plans = {p.name: p for p in todo}
        self.attempts: Counter[str] = Counter()
        # Sessions already running (pushed earlier, in this batch or not) hold slots until they finish.
        self.active = _sessions(self.ledger.load())
        self.failed_rounds = 0
        self.capped_for: float | None = None  # seconds the session cap has refused pushes, None while it does not

    def run(self) -> None:
        while self.queue or self.active:
            if self.active:
                self._refresh()
                self._settle_finished()
            self._push_while_free()
            self.observer.rows(list(self.rows.values()), "kagglerun push --wait")
            if self.queue or self.active:
                self.sleep(poll_pause(self.options.poll_seconds))

    def _refresh(self) -> None:
        try:
            self._refresh_active()
            self.failed_rounds = 0
        except CredentialsError:
            raise
        except KaggleError as e:  # a long outage must not lose hours of running sessions: keep waiting
            self.failed_rounds += 1
            if self.failed_rounds >= STATUS_FAILURES_TOLERATED:
                raise
            self.observer.event(f"status check failed ({e}); trying again in {self.options.poll_seconds:.0f} s")

    def _settle_finished(self) -> None:
        """Sessions that ended: done, pushed again (resuming) or given up."""
        rows = self.rows
        for unit in [u for u, names in self.active.items() if all(rows.get(n) and rows[n].finished for n in names)]:
            names = self.active.pop(unit)
            failed = [rows[n] for n in names if rows[n].state != KernelState.COMPLETE]
            if unit not in self.plans or not failed:
                continue
            why = failed[0].failure or failed[0].state
            if self.attempts[unit] <= self.options.retries:
                plan = self.plans[unit]
                entries = self.ledger.load()
                decisions = {n: resume_decision(entries[n], h, equal_hashes(self.ws, self.ws.store().load(n)))
                             for n, h in plan.recorded.items()}
                plan.action, plan.reason, plan.resumes = combine(decisions)
                plan.resuming = resuming(decisions, plan.action)
                self.queue.append(plan)
                self.observer.event(f"{unit}: {why}; pushing again ({plan.reason})")
            else:
                for row in failed:
                    row.state = RowState.GAVE_UP
                self.observer.event(f"{unit}: {why or 'failed'}; gave up after {self.attempts[unit]} attempts")

    def _push_while_free(self) -> None:
        while self.queue and len(self.active) < self.options.max_running:
            plan = self.queue[0]
            try:
                run = push_one(self.ws, self.api, plan, sleep=self.sleep)
            except SessionCapError as e:  # Kaggle counts sessions we cannot see (another machine): wait for one to end
                for name in plan.recorded:
                    self.rows[name].state = RowState.WAITING
                self._capped(plan, e)
                return
            except CredentialsError:
                raise
            except KaggleError as e:
                self.queue.popleft()
                for name in plan.recorded:
                    self.rows[name].state, self.rows[name].failure = RowState.PUSH_FAILED, str(e)
                self.observer.event(f"{plan.name}: {e}")
                continue
            self.queue.popleft()
            self.capped_for = None
            self.attempts[plan.name] += 1
            self.active[plan.name] = list(plan.recorded)
            self.rows.update(_plan_rows(plan, run, attempt=self.attempts[plan.name]))
            self.observer.event(f"pushed {plan.name} as {run.label} ({plan.reason})")

    def _capped(self, plan: PushPlan, e: SessionCapError) -> None:
        """Say once what the batch waits for, and give up (one line) after `cap_wait_seconds` of refusals,
        counted in the polls waited so that no clock is read."""
        limit = self.options.cap_wait_seconds
        if self.capped_for is None:
            self.capped_for = 0.0
            self.observer.event(f"{plan.name}: {e}; waiting for a session to end (giving up after {_hours(limit)})")
            return
        self.capped_for += self.options.poll_seconds
        if self.capped_for >= limit:
            left = ", ".join(p.name for p in self.queue)
            raise SessionCapError(f"gave up after {_hours(self.capped_for)} of Kaggle refusing to start a session "
                                  f"({e}); not pushed: {left}")

    def _refresh_active(self) -> None:
        with self.ledger.update() as entries:
            for unit, names in sorted(self.active.items()):
                for name in names:
                    entry = entries.get(name)
                    if entry is None or entry.latest is None:
                        continue
                    try:
                        refresh_entry(self.api, name, entry)
                    except KernelError as e:  # not on Kaggle (deleted there, or another account's): holds no slot
                        if unit in self.plans:
                            self.rows[name] = StatusRow(name, entry.kernel_of(entry.latest), entry.latest.version,
                                                        RowState.UNKNOWN, failure=str(e))
                        else:
                            self.active.pop(unit, None)
                            self.observer.event(f"{name}: not counted as running: {e}")
                            break
                        continue
                    row = row_for(name, entry.kernel_of(entry.latest), entry.latest, entry.pack_name)
                    row.attempt = self.attempts[unit]
                    self.rows[name] = row
