"""The emulator's scheduler: runs QUEUED sessions, `workers` at a time, each in its own process
(sessions.py), and ends them: done, failed, cancelled, at their time limit, or by an injected fault. The GPU
quota running out stops no running session (quota.py). Its thread ticks every 0.1 s under the state's lock.

A session gets KAGGLERUN_INPUT=`sessions/<id>/input` (/kaggle/input) with its kernel and data set sources
copied in where Kaggle mounts them (`input_path`), read-only while it runs, and KAGGLERUN_DATA is `data_dir`
or this process's own. After a restart, sessions that were
RUNNING are ERROR ("lost when the emulator stopped") with the time they ran charged, and their orphaned
processes are killed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from ..core.contract import atomic_write_json
from .config import EmulatorConfig
from .faults import FaultInjector
from .sessions import kill_group, kill_orphan, notebook_log, start_session_process
from .store import (
    CANCEL_ACKNOWLEDGED,
    CANCEL_MESSAGE,
    CANCEL_REQUESTED,
    COMPLETE,
    ERROR,
    LOST_MESSAGE,
    OOM_MESSAGE,
    QUEUED,
    RUNNING,
    TIME_LIMIT_MESSAGE,
    Session,
    State,
)

log = logging.getLogger("kagglerun.emulator")

STOPPED_MESSAGE = "The emulator was stopped while this session ran; push it again."
CRASH_MESSAGE = "The kernel died unexpectedly while the notebook was running."
_KILL_GRACE_S = 5.0  # after SIGTERM, how long a session process may take to save its notebook before SIGKILL


@dataclasses.dataclass
class _Run:
    """A session process the scheduler watches, and why (if at all) it is being stopped."""

    proc: subprocess.Popen
    crash_at: float | None = None
    oom_at: float | None = None
    fault_timeout_at: float | None = None
    stop_reason: str | None = None  # "cancel", "timeout", "crash", "oom", "shutdown"
    stop_message: str | None = None
    term_sent_at: float | None = None


class Scheduler:
    """Starts, watches and ends the sessions of `state`."""

    def __init__(self, state: State, config: EmulatorConfig, faults: FaultInjector):
        self.state, self.config, self.faults = state, config, faults
        self._runs: dict[int, _Run] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._schedule_loop, name="emulator-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop every running session (ERROR, outputs kept) and the scheduler; state is saved."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self.state.lock:
            for sid in list(self._runs):
                self.request_stop(sid, "shutdown", STOPPED_MESSAGE)
        deadline = time.time() + _KILL_GRACE_S + 2
        while self._runs and time.time() < deadline:
            with self.state.lock:
                self._tick()
            time.sleep(0.05)
        with self.state.lock:
            for sid, run in list(self._runs.items()):
                kill_group(run.proc, signal.SIGKILL)
                run.proc.wait(timeout=5)
                self._finish(sid, run)
            self.state.save()

    def _schedule_loop(self) -> None:
        last_beat = 0.0
        while not self._stop.wait(0.1):
            try:
                with self.state.lock:
                    self._tick()
                    if self._runs and time.time() - last_beat > 5:
                        last_beat = time.time()
                        for sid in self._runs:
                            self.state.sessions[sid].heartbeat = last_beat
                        self.state.save()
            except Exception:  # one bad session must not stop the scheduler
                log.exception("scheduler error")

    def _tick(self) -> None:
        now = time.time()
        for sid, run in list(self._runs.items()):
            s = self.state.sessions[sid]
            if run.proc.poll() is not None:
                self._finish(sid, run)
                continue
            if run.stop_reason is None:
                elapsed = now - (s.started_at or now)
                if elapsed >= s.time_limit_s or (run.fault_timeout_at is not None and now >= run.fault_timeout_at):
                    self.request_stop(sid, "timeout", TIME_LIMIT_MESSAGE)
                elif run.crash_at is not None and now >= run.crash_at:
                    self.request_stop(sid, "crash", CRASH_MESSAGE)
                elif run.oom_at is not None and now >= run.oom_at:
                    self.request_stop(sid, "oom", OOM_MESSAGE)
            elif run.term_sent_at is not None and now - run.term_sent_at > _KILL_GRACE_S:
                kill_group(run.proc, signal.SIGKILL)
        if self._stop.is_set():
            return
        queued = sorted((s for s in self.state.sessions.values() if s.status == QUEUED), key=lambda s: s.id)
        for s in queued:
            if len(self._runs) >= self.config.workers:
                break
            if now - s.created_at >= self.config.queue_s:
                self._launch(s)

    def _launch(self, s: Session) -> None:
        folder = self.state.session_dir(s.id)
        working, inputs = folder / "working", folder / "input"
        set_writable(inputs, True)
        shutil.rmtree(inputs, ignore_errors=True)
        inputs.mkdir(parents=True)
        layout = self.config.input_layout
        for ref, source_id in s.kernel_inputs.items():
            shutil.copytree(self.state.session_dir(source_id) / "working", input_path(inputs, "notebooks", ref, layout),
                            dirs_exist_ok=True)
        for ref, source in s.dataset_inputs.items():
            shutil.copytree(source, input_path(inputs, "datasets", ref, layout), dirs_exist_ok=True)
        set_writable(inputs, False)  # Kaggle mounts inputs read-only
        env = {"KAGGLERUN_INPUT": str(inputs), "KAGGLE_KERNEL_RUN_TYPE": "Batch"}
        # Each session gets its share of the CPUs, as each Kaggle session has its own machine: with every
        # session's torch using every core, two sessions on two cores ran 10x slower than one after another.
        share = str(max(1, (os.cpu_count() or 1) // self.config.workers))
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = os.environ.get(var, share)
        if self.config.data_dir is not None:
            env["KAGGLERUN_DATA"] = str(Path(self.config.data_dir).expanduser().resolve())
        job = {"notebook": str(folder / "source.ipynb"), "cwd": str(working), "env": env,
               "executed_copy": str(folder / "executed.ipynb"), "result": str(folder / "result.json")}
        proc = start_session_process(folder, job)
        now = time.time()
        s.status, s.started_at, s.heartbeat, s.pid = RUNNING, now, now, proc.pid
        run = _Run(proc)
        faults = self.config.faults
        if self.faults.roll("crash"):
            run.crash_at = now + faults.crash_after
        elif self.faults.roll("oom"):
            run.oom_at = now + faults.crash_after
        elif self.faults.roll("timeout"):
            run.fault_timeout_at = now + faults.timeout_after
        self._runs[s.id] = run
        running = sum(1 for x in self.state.sessions.values() if x.status in (RUNNING, CANCEL_REQUESTED))
        self.state.peak_running = max(self.state.peak_running, running)
        self.state.save()
        log.info("session %s (%s/%s v%s) running", s.id, s.owner, s.slug, s.version)

    def request_stop(self, sid: int, reason: str, message: str) -> None:
        run = self._runs.get(sid)
        if run is None or run.stop_reason is not None:
            return
        run.stop_reason, run.stop_message, run.term_sent_at = reason, message, time.time()
        if reason in ("crash", "oom"):  # a crash, or the out-of-memory killer, gives no chance to save anything
            kill_group(run.proc, signal.SIGKILL)
        else:  # the session process saves its notebook (outputs so far) on SIGTERM
            kill_group(run.proc, signal.SIGTERM, group=False)
        log.info("session %s: stopping (%s)", sid, reason)

    def _finish(self, sid: int, run: _Run) -> None:
        s = self.state.sessions[sid]
        del self._runs[sid]
        set_writable(self.state.session_dir(sid) / "input", True)  # so the state folder can be removed
        s.ended_at = time.time()
        s.charged_s = s.ended_at - (s.started_at or s.ended_at) if s.gpu else 0.0
        if run.stop_reason in ("cancel", "timeout"):  # Kaggle's time limit cancels the session
            s.status, s.failure_message = CANCEL_ACKNOWLEDGED, run.stop_message
        elif run.stop_reason is not None:
            s.status, s.failure_message = ERROR, run.stop_message
        elif run.proc.returncode == -signal.SIGKILL:  # killed from outside, unasked: what the OOM killer does
            s.status, s.failure_message = ERROR, OOM_MESSAGE
        else:
            result = self._result(sid)
            if not result:
                result = {"ok": False, "error": f"The kernel process exited unexpectedly (code {run.proc.returncode})."}
            s.status = COMPLETE if result.get("ok") else ERROR
            s.failure_message = None if result.get("ok") else result.get("error")
        self._write_log(s)
        self.state.save()
        log.info("session %s (%s/%s v%s) %s%s", sid, s.owner, s.slug, s.version, s.status,
                 f": {s.failure_message}" if s.failure_message else "")

    def _result(self, sid: int) -> dict:
        """What the session process wrote at its end (result.json), {} when it wrote nothing."""
        try:
            result = json.loads((self.state.session_dir(sid) / "result.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return result if isinstance(result, dict) else {}

    def _write_log(self, s: Session) -> None:
        folder = self.state.session_dir(s.id)
        runner_log = str(self._result(s.id).get("runner_log") or "")
        atomic_write_json(folder / "log.json",
                          notebook_log(folder / "executed.ipynb", s.started_at or s.created_at, runner_log))

    def recover(self) -> None:
        """Sessions that were running when the last server died cannot be resumed: mark them ended."""
        for s in self.state.sessions.values():
            if s.status in (RUNNING, CANCEL_REQUESTED):
                kill_orphan(s.pid)
                set_writable(self.state.session_dir(s.id) / "input", True)
                s.ended_at = s.heartbeat or s.started_at or s.created_at
                s.charged_s = max(0.0, s.ended_at - (s.started_at or s.ended_at)) if s.gpu else 0.0
                if s.status == CANCEL_REQUESTED:
                    s.status, s.failure_message = CANCEL_ACKNOWLEDGED, CANCEL_MESSAGE
                else:
                    s.status, s.failure_message = ERROR, LOST_MESSAGE
                self._write_log(s)
                log.warning("session %s (%s/%s v%s) was running at the last stop: now ERROR",
                            s.id, s.owner, s.slug, s.version)


def input_path(inputs: Path, kind: str, ref: str, layout: str) -> Path:
    """Where a source "owner/slug" of `kind` ("notebooks" or "datasets") is mounted under /kaggle/input: as
    Kaggle mounts them now, /kaggle/input/notebooks/OWNER/SLUG and /kaggle/input/datasets/OWNER/SLUG, or in
    the older flat layout /kaggle/input/SLUG (public kernels show both, by the notebook's age)."""
    owner, _, slug = ref.rpartition("/")
    if layout == "flat" or not owner:
        return inputs / slug
    return inputs / kind / owner / slug


def set_writable(root: Path, writable: bool) -> None:
    """Make every file and folder under `root` writable by its owner, or read-only (files 0444, folders 0555)."""
    if not root.exists():
        return
    paths = [root, *root.rglob("*")]
    for path in sorted(paths, key=lambda p: len(p.parts), reverse=not writable):  # folders last when locking
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        if writable:
            path.chmod(mode | 0o200 | (0o100 if path.is_dir() else 0))
        else:
            path.chmod(mode & ~0o222)
