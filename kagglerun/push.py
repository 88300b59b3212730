"""Push experiments to Kaggle: render and validate, skip what has not changed, attach a stopped run's own
output so the new version resumes from its checkpoint, and with `wait` keep at most N sessions running,
pushing the rest as slots free up and pushing again (resuming) runs that die or stop on their time budget.

A pack (several experiments in one kernel, render.pack_settings) is one plan and one session; the ledger
records each member under its own name, so a pack is unchanged only when every member is."""

from __future__ import annotations

import json
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .core.contract import now_iso, read_summary
from .errors import CredentialsError, KaggleError, KernelError, SessionCapError
from .experiments import Settings
from .follow import UNKNOWN, StatusRow, refresh_entry, row_for
from .kaggle_api import KaggleKernels, Quota, validate_kernel_folder
from .ledger import Entry, Ledger, Run
from .render import METADATA_FILE, default_owner, render_experiments
from .workspace import Workspace

DEFAULT_RUN_SECONDS = 2 * 3600.0  # quota estimate for a run never seen: the seed's baselines took 46 min to 2.2 h
STATUS_FAILURES_TOLERATED = 10  # consecutive failed status rounds before `wait` gives up


@dataclass
class PushPlan:
    """What `push` will do with one experiment, and why."""

    name: str
    folder: Path
    kernel: str
    settings_hash: str
    core_hash: str
    action: str  # "push", "resume" (push with the previous output attached) or "skip"
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
        return [r for r in self.rows if r.state not in ("complete", "skipped", "queued", "running")]


def _kernel_of(folder: Path) -> str:
    return json.loads((folder / METADATA_FILE).read_text())["id"]


def _rendered(folder: Path) -> dict:
    """The notebook's own record of what it runs (experiment, hashes, a pack's members): the plan is
    judged on exactly what was rendered."""
    return json.loads((folder / f"{folder.name}.ipynb").read_text())["metadata"]["kagglerun"]


def _estimate_seconds(ws: Workspace, s: Settings) -> float:
    """Expected session time: the per-epoch time of an earlier run in results/, else a default."""
    summary = read_summary(ws.result_dir(s.name)) or {}
    try:
        per_epoch = float(summary["total_seconds"]) / int(summary["epochs_done"])
        return per_epoch * s.training.epochs
    except (ValueError, KeyError, TypeError, ZeroDivisionError):
        return DEFAULT_RUN_SECONDS


def _decide(entry: Entry | None, kernel: str, settings_hash: str, core: str, force: bool) -> tuple[str, str, int | None]:
    last = entry.latest if entry and entry.kernel == kernel else None
    if last is None:
        return "push", "never pushed", None
    if force:
        return "push", "--force", None
    if last.settings_hash != settings_hash:
        return "push", f"settings changed since v{last.version}", None
    if last.core_hash != core:
        return "push", f"training core changed since v{last.version}", None
    if not last.finished:
        return "skip", f"v{last.version} is {last.state}", None
    # A run stopped by its time budget ends COMPLETE on Kaggle; a pack member may complete in a kernel that failed
    # (its version is kept, with a checkpoint, so that a pack pushed again for another member carries it on)
    if last.run_state == "complete" or (last.state == "complete" and last.run_state != "stopped"):
        return ("skip", f"unchanged since v{last.version} (complete); --force pushes it again",
                last.version if last.has_checkpoint else None)
    return resume_decision(entry, settings_hash)


def _combine(decisions: dict[str, tuple[str, str, int | None]]) -> tuple[str, str, int | None]:
    """One decision for a pack from its members': it is pushed when any member must be, resuming (with
    its own output attached, where each member finds its checkpoint) when any member can resume or has
    completed with a checkpoint: a completed member then finds its finished run there and trains nothing."""
    if len(decisions) == 1:
        return next(iter(decisions.values()))
    todo = {n: d for n, d in decisions.items() if d[0] != "skip"}
    if not todo:
        return "skip", "; ".join(f"{n}: {d[1]}" for n, d in decisions.items()), None
    resumes = [d[2] for d in decisions.values() if d[0] != "push" and d[2] is not None]
    reason = "; ".join(f"{n}: {d[1]}" for n, d in todo.items())
    done = [n for n, d in decisions.items() if d[0] == "skip" and d[2] is not None]
    if done:
        reason += f"; {', '.join(done)} complete, carried over from its checkpoint"
    return ("resume", reason, max(resumes)) if resumes else ("push", reason, None)


def resume_decision(entry: Entry, settings_hash: str) -> tuple[str, str, int | None]:
    """Push again an experiment whose last version did not finish, resuming from the newest checkpoint
    its earlier versions (with the same settings) left, when there is one."""
    last = entry.latest
    why = f"v{last.version} ended {last.run_state or last.state}"
    for run in reversed(entry.runs):
        if run.settings_hash != settings_hash:
            break
        if run.has_checkpoint:
            return "resume", f"{why}; resuming from its checkpoint", run.version
    return "push", f"{why}; no checkpoint, starting over", None


def attach_own_output(folder: Path, kernel: str) -> None:
    """Add the kernel itself to kernel_sources: Kaggle then mounts its previous version's output under
    /kaggle/input, where the training core finds checkpoint_last.pt."""
    path = folder / METADATA_FILE
    meta = json.loads(path.read_text())
    sources = list(meta.get("kernel_sources") or [])
    if kernel not in sources:
        meta["kernel_sources"] = sources + [kernel]
        path.write_text(json.dumps(meta, indent=2) + "\n")
    validate_kernel_folder(folder)


def plan_push(ws: Workspace, names: list[str], owner: str, force: bool = False,
              packs: list[list[str]] = ()) -> list[PushPlan]:
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
        action, reason, resumes = _combine({n: _decide(entries.get(n), kernel, h, core, force) for n, h in hashes.items()})
        # A pack's members run side by side, one GPU each
        estimate = max(_estimate_seconds(ws, store.load(n)) for n in hashes)
        plans.append(PushPlan(folder.name, folder, kernel, rendered["settings_hash"], core, action, reason, resumes,
                              estimate, members))
    return plans


def push_one(ws: Workspace, api: KaggleKernels, plan: PushPlan) -> Run:
    """Push one planned experiment or pack and record the new version in the ledger (under each member's
    name for a pack); returns the new version's run."""
    if plan.action == "resume":
        attach_own_output(plan.folder, plan.kernel)
    result = api.push(plan.folder)
    pushed_at = now_iso()
    with Ledger(ws.results).update() as entries:
        for name, settings_hash in plan.recorded.items():
            run = Run(version=result.version, settings_hash=settings_hash, core_hash=plan.core_hash,
                      pushed_at=pushed_at, resumes=plan.resumes, session_id=result.session_id)
            entry = entries.get(name)
            if entry is None or entry.kernel != result.kernel:
                entry = entries[name] = Entry(result.kernel)
            entry.pack = plan.pack
            entry.runs = [r for r in entry.runs if r.version != run.version] + [run]
    return run


def _plan_rows(plan: PushPlan, run: Run | None = None, attempt: int = 0, **fields) -> dict[str, StatusRow]:
    """The status rows of a plan, one per recorded experiment: from its pushed run, else from `fields`."""
    pack = plan.name if plan.members else ""
    if run is None:
        return {n: StatusRow(n, plan.kernel, pack=pack, **fields) for n in plan.recorded}
    rows = {n: row_for(n, plan.kernel, run, pack) for n in plan.recorded}
    for row in rows.values():
        row.attempt = attempt
    return rows


def push_experiments(ws: Workspace, names: list[str], *, api: KaggleKernels | None, packs: list[list[str]] = (),
                     force: bool = False, dry_run: bool = False, wait: bool = False, max_running: int = 2, retries: int = 2,
                     poll_seconds: float = 10.0, on_event: Callable[[str], None] | None = None,
                     on_progress: Callable[[list[StatusRow]], None] | None = None,
                     sleep: Callable[[float], None] = time.sleep) -> PushReport:
    """Render, plan and push `names`, and each group of `packs` as one packed kernel.

    Without `wait`, push each planned experiment once; Kaggle's session cap stops the batch with
    SessionCapError (what was pushed is in the ledger). With `wait`, keep at most `max_running` sessions
    (those already running count too), push the rest as slots free up, wait out cap rejections, and push
    again, resuming, an experiment whose session dies or whose run stops on its time budget (its summary says
    "stopped" though Kaggle says complete), up to `retries` times; return when all have finished.
    `dry_run` renders and plans only, with no network (`api` may then be None)."""
    event = on_event or (lambda message: None)
    owner = api.username if api is not None else default_owner()
    if api is not None:  # decide on current states: a run the ledger last saw running may have ended
        with Ledger(ws.results).update() as entries:
            for name in [*names, *(m for group in packs for m in group)]:
                if name in entries:
                    refresh_entry(api, name, entries[name])
    plans = plan_push(ws, names, owner, force, packs)
    report = PushReport(plans)
    todo = [p for p in plans if p.action != "skip"]
    for p in plans:
        if p.action == "skip":
            event(f"skipped {p.name}: {p.reason}")
    report.needed_seconds = sum(p.estimate_seconds for p in todo)
    if dry_run or api is None:
        report.rows = [row for p in plans for row in _plan_rows(
            p, state="would " + p.action if p.action != "skip" else "skipped", failure=p.reason).values()]
        return report
    report.quota = api.gpu_quota()
    if report.quota is not None:
        event(f"GPU quota: {report.quota.left_seconds / 3600:.1f} h of {report.quota.total_seconds / 3600:.1f} h "
              f"left this week; this batch needs about {report.needed_seconds / 3600:.1f} h")
        if todo and report.needed_seconds > report.quota.left_seconds:
            warning = (f"this batch needs about {report.needed_seconds / 3600:.1f} h of GPU time but only "
                       f"{report.quota.left_seconds / 3600:.1f} h of quota are left; some runs may be stopped")
            report.warnings.append(warning)
            event("warning: " + warning)
    rows = {n: row for p in plans for n, row in _plan_rows(
        p, state="skipped" if p.action == "skip" else "to push", failure=p.reason).items()}
    if not wait:
        pushed: list[str] = []
        for plan in todo:
            try:
                run = push_one(ws, api, plan)
            except SessionCapError as e:
                done = f" (pushed: {', '.join(pushed)})" if pushed else ""
                raise SessionCapError(f"{e}{done}; use --wait to push the rest as slots free up") from None
            pushed.append(plan.name)
            rows.update(_plan_rows(plan, run, attempt=1))
            event(f"pushed {plan.name} as {plan.kernel} v{run.version} ({plan.reason})")
        report.rows = list(rows.values())
        return report
    _wait_loop(ws, api, todo, rows, max_running=max_running, retries=retries, poll_seconds=poll_seconds,
               event=event, on_progress=on_progress, sleep=sleep)
    report.rows = list(rows.values())
    return report


def _sessions(entries: dict[str, Entry]) -> dict[str, list[str]]:
    """The sessions still running, by plan name (the experiment, or its pack), with their ledger names."""
    active: dict[str, list[str]] = {}
    for name, entry in sorted(entries.items()):
        if entry.latest and not entry.latest.finished:
            active.setdefault(entry.pack_name or name, []).append(name)
    return active


def _wait_loop(ws: Workspace, api: KaggleKernels, todo: list[PushPlan], rows: dict[str, StatusRow], *,
               max_running: int, retries: int, poll_seconds: float, event: Callable[[str], None],
               on_progress: Callable[[list[StatusRow]], None] | None, sleep: Callable[[float], None]) -> None:
    ledger = Ledger(ws.results)
    queue = deque(todo)
    plans = {p.name: p for p in todo}
    attempts: Counter[str] = Counter()
    # Sessions already running (pushed earlier, in this batch or not) hold slots until they finish.
    active = _sessions(ledger.load())
    failed_rounds = 0
    while queue or active:
        if active:
            try:
                _refresh_active(ws, api, active, rows, attempts, plans, event)
                failed_rounds = 0
            except CredentialsError:
                raise
            except KaggleError as e:  # a long outage must not lose hours of running sessions: keep waiting
                failed_rounds += 1
                if failed_rounds >= STATUS_FAILURES_TOLERATED:
                    raise
                event(f"status check failed ({e}); trying again in {poll_seconds:.0f} s")
            for unit in [u for u, names in active.items() if all(rows.get(n) and rows[n].finished for n in names)]:
                names = active.pop(unit)
                failed = [rows[n] for n in names if rows[n].state != "complete"]
                if unit in plans and failed:
                    why = failed[0].failure or failed[0].state
                    if attempts[unit] <= retries:
                        plan = plans[unit]
                        entries = ledger.load()
                        plan.action, plan.reason, plan.resumes = _combine(
                            {n: resume_decision(entries[n], h) for n, h in plan.recorded.items()})
                        queue.append(plan)
                        event(f"{unit}: {why}; pushing again ({plan.reason})")
                    else:
                        for row in failed:
                            row.state = "gave up"
                        event(f"{unit}: {why or 'failed'}; gave up after {attempts[unit]} attempts")
        while queue and len(active) < max_running:
            plan = queue[0]
            try:
                run = push_one(ws, api, plan)
            except SessionCapError:  # Kaggle counts sessions we cannot see (another machine): wait for one to end
                for name in plan.recorded:
                    rows[name].state = "waiting for slot"
                break
            except CredentialsError:
                raise
            except KaggleError as e:
                queue.popleft()
                for name in plan.recorded:
                    rows[name].state, rows[name].failure = "push failed", str(e)
                event(f"{plan.name}: {e}")
                continue
            queue.popleft()
            attempts[plan.name] += 1
            active[plan.name] = list(plan.recorded)
            rows.update(_plan_rows(plan, run, attempt=attempts[plan.name]))
            event(f"pushed {plan.name} as {plan.kernel} v{run.version} ({plan.reason})")
        if on_progress:
            on_progress(list(rows.values()))
        if queue or active:
            sleep(poll_seconds)


def _refresh_active(ws: Workspace, api: KaggleKernels, active: dict[str, list[str]], rows: dict[str, StatusRow],
                    attempts: Counter[str], planned: dict[str, PushPlan], event: Callable[[str], None]) -> None:
    with Ledger(ws.results).update() as entries:
        for unit, names in sorted(active.items()):
            for name in names:
                entry = entries.get(name)
                if entry is None or entry.latest is None:
                    continue
                try:
                    refresh_entry(api, name, entry)
                except KernelError as e:  # not on Kaggle (deleted there, or another account's): holds no slot
                    if unit in planned:
                        rows[name] = StatusRow(name, entry.kernel, entry.latest.version, UNKNOWN, failure=str(e))
                    else:
                        active.pop(unit, None)
                        event(f"{name}: not counted as running: {e}")
                        break
                    continue
                row = row_for(name, entry.kernel, entry.latest, entry.pack_name)
                row.attempt = attempts[unit]
                rows[name] = row
