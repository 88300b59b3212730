"""The Kaggle emulator's model of Kaggle: kernels, versions, sessions, quota, the GPU cap, and persistence.

Each push is a new version (1, 2, ...) and a new session, whose id is also given as `?scriptVersionId=`
in the push's url (CancelKernelSession needs it). A session goes QUEUED, RUNNING, then COMPLETE or ERROR
with a failure message (CANCEL_REQUESTED / CANCEL_ACKNOWLEDGED when cancelled; NEW_SCRIPT for a quick
save). A GPU push while `gpu_session_cap` GPU sessions are queued or running is refused in the response's
`error` ("Maximum batch GPU session count of 2 reached."), like Kaggle, with HTTP 200. GPU time counts
against a weekly quota (`timeUsed`: ended sessions this week; `timeReserved`: running sessions so far).
A session is stopped at its time limit (12 h, or the push's sessionTimeoutSeconds) with ERROR, keeping
its outputs so far. Without a version label, ListKernelSessionOutput serves the latest *ended* version,
as Kaggle does while a newer one runs.

Scheduling. `workers` sessions run at once, each in its own process (emulator_sessions), with
KAGGLERUN_INPUT=`sessions/<id>/input` (/kaggle/input): `kernel_sources` "owner/slug" get that kernel's
latest COMPLETE version's outputs (else its latest ended one) copied to input/<slug>/, `dataset_sources`
"owner/slug" are copied from `datasets_dir/owner/slug` when given, else reported in
invalidDatasetSources. KAGGLERUN_DATA is `data_dir` or this process's own.

State. `state_dir/state.json` (kernels, sessions, the signing secret), rewritten atomically after every
change, and one folder per session. After a restart, QUEUED sessions run; sessions that were RUNNING
are ERROR ("lost when the emulator stopped") with the time they ran charged, and their orphaned
processes are killed.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .emulator_faults import FaultInjector
from .emulator_sessions import kill_group, kill_orphan, notebook_log, output_files, start_session_process
from .errors import KaggleError

if TYPE_CHECKING:
    from .emulator import EmulatorConfig

log = logging.getLogger("kagglerun.emulator")

FILES_PREFIX = "/emulator/files/"  # where the signed output links point (served by emulator_http)

QUEUED, RUNNING, COMPLETE, ERROR = "QUEUED", "RUNNING", "COMPLETE", "ERROR"
CANCEL_REQUESTED, CANCEL_ACKNOWLEDGED, NEW_SCRIPT = "CANCEL_REQUESTED", "CANCEL_ACKNOWLEDGED", "NEW_SCRIPT"
ACTIVE = (QUEUED, RUNNING, CANCEL_REQUESTED)
ENDED = (COMPLETE, ERROR, CANCEL_ACKNOWLEDGED)

CANCEL_MESSAGE = "The kernel was killed due to a requested cancel."
LOST_MESSAGE = "The session was lost when the emulator stopped while it ran; push it again."
STOPPED_MESSAGE = "The emulator was stopped while this session ran; push it again."
CRASH_MESSAGE = "The kernel died unexpectedly while the notebook was running."
QUOTA_MESSAGE = "The session was stopped because the weekly GPU quota is used up."
_KILL_GRACE_S = 5.0  # after SIGTERM, how long a session process may take to save its notebook before SIGKILL
_SLUG_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class ApiError(Exception):
    """An HTTP error answer in Kaggle's JSON shape."""

    def __init__(self, code: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.code, self.message, self.headers = code, message, headers or {}


@dataclasses.dataclass
class Kernel:
    id: int
    owner: str
    slug: str
    title: str
    is_private: bool
    sessions: list[int]  # version N is sessions[N - 1]


@dataclasses.dataclass
class Session:
    id: int
    owner: str
    slug: str
    version: int
    status: str
    gpu: bool
    created_at: float
    time_limit_s: float
    kernel_inputs: dict[str, int]  # input folder name -> id of the session whose outputs it gets
    dataset_inputs: dict[str, str]  # input folder name -> local folder
    failure_message: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    heartbeat: float | None = None
    charged_s: float = 0.0
    pid: int | None = None


@dataclasses.dataclass
class _Run:
    """A session process the scheduler watches, and why (if at all) it is being stopped."""

    proc: subprocess.Popen
    crash_at: float | None = None
    fault_timeout_at: float | None = None
    stop_reason: str | None = None  # "cancel", "timeout", "crash", "quota", "shutdown"
    stop_message: str | None = None
    term_sent_at: float | None = None


class Emulator:
    """Kaggle's kernels service in one process: state, push rules, quota, and the scheduler that runs sessions."""

    def __init__(self, config: EmulatorConfig):
        self.config = config
        self.faults = FaultInjector(config.faults)
        self.state_dir = Path(config.state_dir).expanduser()
        self._lock = threading.RLock()
        self._runs: dict[int, _Run] = {}
        self._stop = threading.Event()
        self._scheduler: threading.Thread | None = None
        self.peak_running = 0
        self._load()

    # ---------- state ----------
    def _load(self) -> None:
        path = self.state_dir / "state.json"
        self.kernels: dict[str, Kernel] = {}
        self.sessions: dict[int, Session] = {}
        self.secret = secrets.token_hex(16)
        self.next_id = 1
        if path.exists():
            try:
                data = json.loads(path.read_text())
                self.secret, self.next_id = data["secret"], data["next_id"]
                self.kernels = {k: Kernel(**v) for k, v in data["kernels"].items()}
                self.sessions = {int(k): Session(**v) for k, v in data["sessions"].items()}
            except (ValueError, KeyError, TypeError) as e:
                raise KaggleError(f"the emulator's state {path} is unreadable ({type(e).__name__}: {e}); "
                                  "move it aside or use another --state folder") from None
            self._recover()
        self._save()

    def _recover(self) -> None:
        """Sessions that were running when the last server died cannot be resumed: mark them ended."""
        for s in self.sessions.values():
            if s.status in (RUNNING, CANCEL_REQUESTED):
                kill_orphan(s.pid)
                s.ended_at = s.heartbeat or s.started_at or s.created_at
                s.charged_s = max(0.0, s.ended_at - (s.started_at or s.ended_at)) if s.gpu else 0.0
                if s.status == CANCEL_REQUESTED:
                    s.status, s.failure_message = CANCEL_ACKNOWLEDGED, CANCEL_MESSAGE
                else:
                    s.status, s.failure_message = ERROR, LOST_MESSAGE
                self._write_log(s)
                log.warning("session %s (%s/%s v%s) was running at the last stop: now ERROR",
                            s.id, s.owner, s.slug, s.version)

    def _save(self) -> None:
        from .core.contract import atomic_write_json

        data = {
            "secret": self.secret, "next_id": self.next_id,
            "kernels": {k: dataclasses.asdict(v) for k, v in self.kernels.items()},
            "sessions": {str(k): dataclasses.asdict(v) for k, v in self.sessions.items()},
            "peak_running": self.peak_running, "faults_injected": self.faults.snapshot(),
        }
        atomic_write_json(self.state_dir / "state.json", data)

    def session_dir(self, session_id: int) -> Path:
        return self.state_dir / "sessions" / str(session_id)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            counts = {st: sum(1 for s in self.sessions.values() if s.status == st) for st in (QUEUED, RUNNING)}
            return {
                "peak_running": self.peak_running, "running": counts[RUNNING], "queued": counts[QUEUED],
                "sessions": len(self.sessions), "workers": self.config.workers,
                "gpu_session_cap": self.config.gpu_session_cap, "faults_injected": self.faults.snapshot(),
            }

    # ---------- auth and lookup ----------
    def authenticate(self, authorization: str | None) -> str:
        """The user named by an Authorization header (basic username:key, or bearer key), else 401."""
        scheme, _, value = (authorization or "").partition(" ")
        user = None
        if scheme.lower() == "basic":
            try:
                name, _, key = base64.b64decode(value.strip()).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                name, key = "", ""
            expected = self.config.credentials.get(name)
            if expected is not None and hmac.compare_digest(expected.encode(), key.encode()):
                user = name
        elif scheme.lower() == "bearer":
            for name, key in self.config.credentials.items():
                if hmac.compare_digest(key.encode(), value.strip().encode()):
                    user = name
        if user is None:
            raise ApiError(401, "Unauthenticated: send a Kaggle username and API key (basic auth) or an API token.",
                           {"WWW-Authenticate": 'Basic realm="kaggle"'})
        return user

    def _kernel_for_read(self, user: str, owner: str, slug: str) -> Kernel:
        kernel = self.kernels.get(f"{owner}/{slug}".lower())
        # Kaggle answers 403 for a kernel that does not exist too, so names cannot be probed.
        if kernel is None or (kernel.is_private and kernel.owner != user):
            raise ApiError(403, "Permission 'kernels.get' was denied")
        return kernel

    def _session_for(self, user: str, body: dict[str, Any], *, ended_only: bool = False) -> Session | None:
        if body.get("kernelSessionId") and not body.get("kernelSlug"):
            s = self.sessions.get(int(body["kernelSessionId"]))
            if s is None:
                raise ApiError(404, "Kernel session not found")
            self._kernel_for_read(user, s.owner, s.slug)
            return s
        kernel = self._kernel_for_read(user, body.get("userName") or user, body.get("kernelSlug") or "")
        label = body.get("versionLabel")
        if label:
            number = label[1:] if label[:1] in ("v", "V") else ""
            if not number.isdigit() or not 1 <= int(number) <= len(kernel.sessions):
                raise ApiError(404, f"Version {label!r} of {kernel.owner}/{kernel.slug} not found")
            return self.sessions[kernel.sessions[int(number) - 1]]
        candidates = [self.sessions[i] for i in kernel.sessions]
        if ended_only:  # like Kaggle, outputs come from the latest version that has ended
            candidates = [s for s in candidates if s.status in ENDED]
        return candidates[-1] if candidates else None

    def log_session_id(self, user: str, body: dict[str, Any]) -> int:
        """The session whose log a request asks for (by session id, or kernel and optional version)."""
        with self._lock:
            s = self._session_for(user, body)
        if s is None:
            raise ApiError(404, "The kernel has no versions")
        return s.id

    # ---------- RPCs ----------
    def save_kernel(self, user: str, body: dict[str, Any], base_url: str) -> dict[str, Any]:
        import nbformat

        with self._lock:
            kernel = None
            if body.get("id") and not body.get("slug"):
                kernel = next((k for k in self.kernels.values() if k.id == int(body["id"])), None)
                if kernel is None:
                    return {"error": "Kernel not found"}
                owner, name = kernel.owner, kernel.slug
            else:
                owner, _, name = (body.get("slug") or "").partition("/")
                if not name:
                    owner, name = user, owner
                if not name or not set(name) <= _SLUG_CHARS or len(name) > 100:
                    return {"error": f"Invalid kernel slug {body.get('slug')!r}"}
                kernel = self.kernels.get(f"{owner}/{name}".lower())
            if owner.lower() != user.lower():
                verb = "update" if kernel is not None else "create"
                raise ApiError(403, f"Permission 'kernels.{verb}' was denied: {owner}/{name} is not owned by {user}")
            language, kernel_type = body.get("language") or "python", body.get("kernelType") or "notebook"
            if language != "python" or kernel_type not in ("notebook", "script"):
                return {"error": f"The emulator runs Python notebooks and scripts only, not {language} {kernel_type}"}
            text = body.get("text") or ""
            try:
                if kernel_type == "notebook":
                    nb = nbformat.reads(text, as_version=4)
                else:
                    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(text)])
                    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
            except Exception as e:  # nbformat raises several kinds for bad JSON or schema
                return {"error": f"The kernel source is not a valid notebook: {e}"}
            gpu = bool(body.get("enableGpu")) or any(
                word in (body.get("machineShape") or "").lower() for word in ("gpu", "nvidia"))
            quick_save = body.get("kernelExecutionType") in ("QUICK_SAVE", "KERNEL_EXECUTION_TYPE_QUICK_SAVE")
            if gpu and not quick_save:
                active = sum(1 for s in self.sessions.values() if s.owner == user and s.gpu and s.status in ACTIVE)
                if active >= self.config.gpu_session_cap or self.faults.roll("cap_reject"):
                    return {"error": f"Maximum batch GPU session count of {self.config.gpu_session_cap} reached."}
                if self._quota_exhausted(user):
                    hours = self.config.gpu_quota_hours
                    return {"error": f"You have used your weekly GPU quota of {hours:g} hours."}
            response: dict[str, Any] = {}
            kernel_inputs = self._resolve_kernel_sources(user, body.get("kernelDataSources") or [], response)
            dataset_inputs = self._resolve_dataset_sources(body.get("datasetDataSources") or [], response)
            for field in ("competitionDataSources", "modelDataSources"):
                if body.get(field):  # nothing to mount them from here
                    response["invalid" + field[0].upper() + field[1:]] = list(body[field])
            if kernel is None:
                title = body.get("newTitle") or name
                kernel = Kernel(self._new_id(), owner, name, title, body.get("isPrivate", True) is not False, [])
                self.kernels[f"{owner}/{name}".lower()] = kernel
            elif body.get("newTitle"):
                kernel.title = body["newTitle"]
            if body.get("isPrivate") is not None:
                kernel.is_private = bool(body["isPrivate"])
            limit = self.config.session_limit_s
            if body.get("sessionTimeoutSeconds"):
                limit = min(limit, float(body["sessionTimeoutSeconds"]))
            session = Session(
                id=self._new_id(), owner=kernel.owner, slug=kernel.slug, version=len(kernel.sessions) + 1,
                status=NEW_SCRIPT if quick_save else QUEUED, gpu=gpu, created_at=time.time(), time_limit_s=limit,
                kernel_inputs=kernel_inputs, dataset_inputs=dataset_inputs,
            )
            folder = self.session_dir(session.id)
            (folder / "working").mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, folder / "source.ipynb")
            kernel.sessions.append(session.id)
            self.sessions[session.id] = session
            self._save()
            log.info("push %s/%s -> version %s, session %s%s", kernel.owner, kernel.slug, session.version,
                     session.id, " (GPU)" if gpu else "")
            response.update({
                "ref": f"/code/{kernel.owner}/{kernel.slug}",
                "url": f"{base_url}/code/{kernel.owner}/{kernel.slug}?scriptVersionId={session.id}",
                "versionNumber": session.version, "kernelId": kernel.id,
            })
            return response

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def _resolve_kernel_sources(self, user: str, refs: list[str], response: dict[str, Any]) -> dict[str, int]:
        """Each "owner/slug" -> the session whose outputs it mounts: its latest COMPLETE version, else latest ended."""
        found: dict[str, int] = {}
        for ref in refs:
            kernel = self.kernels.get(ref.lower())
            ended = [] if kernel is None or (kernel.is_private and kernel.owner != user) else [
                self.sessions[i] for i in kernel.sessions if self.sessions[i].status in ENDED]
            complete = [s for s in ended if s.status == COMPLETE]
            if not ended:
                response.setdefault("invalidKernelSources", []).append(ref)
                continue
            found[kernel.slug] = (complete or ended)[-1].id
        return found

    def _resolve_dataset_sources(self, refs: list[str], response: dict[str, Any]) -> dict[str, str]:
        found: dict[str, str] = {}
        root = Path(self.config.datasets_dir).expanduser() if self.config.datasets_dir else None
        for ref in refs:
            owner, _, name = ref.partition("/")
            folder = root / owner / name if root and name and set(owner + name) <= _SLUG_CHARS else None
            if folder is None or not folder.is_dir():
                log.warning("dataset source %s is not available locally (datasets_dir=%s)", ref, root)
                response.setdefault("invalidDatasetSources", []).append(ref)
                continue
            found[name] = str(folder)
        return found

    def session_status(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            s = self._session_for(user, body)
            if s is None:
                raise ApiError(404, "The kernel has no versions")
            answer: dict[str, Any] = {"status": s.status}
            if s.failure_message:
                answer["failureMessage"] = s.failure_message
            return answer

    def list_output(self, user: str, body: dict[str, Any], base_url: str) -> dict[str, Any]:
        with self._lock:
            s = self._session_for(user, body, ended_only=True)
            if s is None or s.status not in ENDED:  # nothing ended yet: no outputs, no log
                return {"files": []}
            if self.config.faults.stale:
                kernel = self.kernels[f"{s.owner}/{s.slug}".lower()]
                older = [self.sessions[i] for i in kernel.sessions
                         if i < s.id and self.sessions[i].status in ENDED]
                if older and self.faults.roll("stale"):
                    log.info("fault: serving version %s's outputs for version %s", older[-1].version, s.version)
                    s = older[-1]
            sid = s.id
        names = output_files(self.session_dir(sid) / "working")
        try:
            size = int(body.get("pageSize") or 20)
            start = int(base64.urlsafe_b64decode(body["pageToken"].encode()).decode()) if body.get("pageToken") else 0
        except (ValueError, TypeError):
            raise ApiError(400, "Invalid pageSize or pageToken") from None
        if size < 1 or start < 0:
            raise ApiError(400, "Invalid pageSize or pageToken")
        page = names[start:start + min(size, 1000)]
        answer: dict[str, Any] = {"files": [
            {"fileName": name, "url": f"{base_url}{FILES_PREFIX}{sid}/{self._sign(sid, name)}/{urllib.parse.quote(name)}"}
            for name in page]}
        if start + len(page) < len(names):
            answer["nextPageToken"] = base64.urlsafe_b64encode(str(start + len(page)).encode()).decode()
        if start == 0:
            answer["log"] = json.dumps(self.log_entries(sid))
        return answer

    def _sign(self, session_id: int, name: str) -> str:
        return hmac.new(self.secret.encode(), f"{session_id}/{name}".encode(), hashlib.sha256).hexdigest()[:32]

    def output_path(self, session_id: int, signature: str, name: str) -> Path | None:
        """The file a signed output link points to, or None when the link is forged or the file is gone."""
        if not hmac.compare_digest(self._sign(session_id, name), signature):
            return None
        working = (self.session_dir(session_id) / "working").resolve()
        path = (working / name).resolve()
        if not path.is_relative_to(working) or not path.is_file():
            return None
        return path

    def log_entries(self, session_id: int) -> list[dict[str, Any]]:
        path = self.session_dir(session_id) / "log.json"
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return []

    def session_ended(self, session_id: int) -> bool:
        with self._lock:
            return self.sessions[session_id].status in ENDED + (NEW_SCRIPT,)

    def cancel(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            s = self.sessions.get(int(body.get("kernelSessionId") or 0))
            if s is None:
                raise ApiError(404, "Kernel session not found")
            if s.owner != user:
                raise ApiError(403, "Permission 'kernels.update' was denied")
            if s.status == QUEUED:
                s.status, s.failure_message, s.ended_at = CANCEL_ACKNOWLEDGED, CANCEL_MESSAGE, time.time()
            elif s.status == RUNNING:
                s.status = CANCEL_REQUESTED
                self._request_stop(s.id, "cancel", CANCEL_MESSAGE)
            else:
                return {"errorMessage": f"The session has already ended ({s.status})"}
            self._save()
            return {}

    def quota(self, user: str) -> dict[str, Any]:
        with self._lock:
            used, reserved, total = self._quota(user)
            has_run = any(s.owner == user and s.gpu and s.started_at for s in self.sessions.values())
        refresh = _week_start(time.time()) + 7 * 86400
        return {
            "quotaRefreshTime": dt.datetime.fromtimestamp(refresh, dt.timezone.utc).replace(tzinfo=None)
            .isoformat(timespec="milliseconds") + "Z",
            "gpuQuota": {
                "timeUsed": _duration(used), "timeReserved": _duration(reserved),
                "totalTimeAllowed": _duration(total), "minimumTimeAllowed": _duration(total),
                "hasEverRun": has_run,
            },
            "tpuQuota": {"timeUsed": "0s", "timeReserved": "0s", "totalTimeAllowed": "72000s",
                         "minimumTimeAllowed": "72000s"},
        }

    def _quota(self, user: str) -> tuple[float, float, float]:
        """(used by ended sessions this week, used so far by running ones, allowed), in seconds."""
        now, week = time.time(), _week_start(time.time())
        used = reserved = 0.0
        for s in self.sessions.values():
            if s.owner != user or not s.gpu:
                continue
            if s.status in ENDED and (s.ended_at or 0) >= week:
                used += s.charged_s
            elif s.status in (RUNNING, CANCEL_REQUESTED) and s.started_at:
                reserved += now - s.started_at
        return used, reserved, self.config.gpu_quota_hours * 3600.0

    def _quota_exhausted(self, user: str) -> bool:
        used, reserved, total = self._quota(user)
        return used + reserved >= total

    # ---------- scheduler ----------
    def start(self) -> None:
        self._scheduler = threading.Thread(target=self._schedule_loop, name="emulator-scheduler", daemon=True)
        self._scheduler.start()

    def stop(self) -> None:
        """Stop every running session (ERROR, outputs kept) and the scheduler; state is saved."""
        self._stop.set()
        if self._scheduler is not None:
            self._scheduler.join(timeout=30)
        with self._lock:
            for sid in list(self._runs):
                self._request_stop(sid, "shutdown", STOPPED_MESSAGE)
        deadline = time.time() + _KILL_GRACE_S + 2
        while self._runs and time.time() < deadline:
            with self._lock:
                self._tick()
            time.sleep(0.05)
        with self._lock:
            for sid, run in list(self._runs.items()):
                kill_group(run.proc, signal.SIGKILL)
                run.proc.wait(timeout=5)
                self._finish(sid, run)
            self._save()

    def _schedule_loop(self) -> None:
        last_beat = 0.0
        while not self._stop.wait(0.1):
            try:
                with self._lock:
                    self._tick()
                    if self._runs and time.time() - last_beat > 5:
                        last_beat = time.time()
                        for sid in self._runs:
                            self.sessions[sid].heartbeat = last_beat
                        self._save()
            except Exception:  # one bad session must not stop the scheduler
                log.exception("scheduler error")

    def _tick(self) -> None:
        now = time.time()
        for sid, run in list(self._runs.items()):
            s = self.sessions[sid]
            if run.proc.poll() is not None:
                self._finish(sid, run)
                continue
            if run.stop_reason is None:
                elapsed = now - (s.started_at or now)
                if elapsed >= s.time_limit_s:
                    self._request_stop(sid, "timeout", _timeout_message(s.time_limit_s))
                elif run.fault_timeout_at is not None and now >= run.fault_timeout_at:
                    self._request_stop(sid, "timeout", _timeout_message(self.config.faults.timeout_after))
                elif run.crash_at is not None and now >= run.crash_at:
                    self._request_stop(sid, "crash", CRASH_MESSAGE)
                elif s.gpu and self._quota_exhausted(s.owner):
                    self._request_stop(sid, "quota", QUOTA_MESSAGE)
            elif run.term_sent_at is not None and now - run.term_sent_at > _KILL_GRACE_S:
                kill_group(run.proc, signal.SIGKILL)
        if self._stop.is_set():
            return
        queued = sorted((s for s in self.sessions.values() if s.status == QUEUED), key=lambda s: s.id)
        for s in queued:
            if len(self._runs) >= self.config.workers:
                break
            if now - s.created_at >= self.config.queue_s:
                self._launch(s)

    def _launch(self, s: Session) -> None:
        folder = self.session_dir(s.id)
        working, inputs = folder / "working", folder / "input"
        shutil.rmtree(inputs, ignore_errors=True)
        inputs.mkdir(parents=True)
        for name, source_id in s.kernel_inputs.items():
            shutil.copytree(self.session_dir(source_id) / "working", inputs / name, dirs_exist_ok=True)
        for name, source in s.dataset_inputs.items():
            shutil.copytree(source, inputs / name, dirs_exist_ok=True)
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
        elif self.faults.roll("timeout"):
            run.fault_timeout_at = now + faults.timeout_after
        self._runs[s.id] = run
        running = sum(1 for x in self.sessions.values() if x.status in (RUNNING, CANCEL_REQUESTED))
        self.peak_running = max(self.peak_running, running)
        self._save()
        log.info("session %s (%s/%s v%s) running", s.id, s.owner, s.slug, s.version)

    def _request_stop(self, sid: int, reason: str, message: str) -> None:
        run = self._runs.get(sid)
        if run is None or run.stop_reason is not None:
            return
        run.stop_reason, run.stop_message, run.term_sent_at = reason, message, time.time()
        if reason == "crash":  # a crash gives no chance to save anything
            kill_group(run.proc, signal.SIGKILL)
        else:  # the session process saves its notebook (outputs so far) on SIGTERM
            kill_group(run.proc, signal.SIGTERM, group=False)
        log.info("session %s: stopping (%s)", sid, reason)

    def _finish(self, sid: int, run: _Run) -> None:
        s = self.sessions[sid]
        del self._runs[sid]
        s.ended_at = time.time()
        s.charged_s = s.ended_at - (s.started_at or s.ended_at) if s.gpu else 0.0
        if run.stop_reason == "cancel":
            s.status, s.failure_message = CANCEL_ACKNOWLEDGED, run.stop_message
        elif run.stop_reason is not None:
            s.status, s.failure_message = ERROR, run.stop_message
        else:
            try:
                result = json.loads((self.session_dir(sid) / "result.json").read_text())
            except (FileNotFoundError, ValueError):
                result = {"ok": False, "error": f"The kernel process exited unexpectedly (code {run.proc.returncode})."}
            s.status = COMPLETE if result.get("ok") else ERROR
            s.failure_message = None if result.get("ok") else result.get("error")
        self._write_log(s)
        self._save()
        log.info("session %s (%s/%s v%s) %s%s", sid, s.owner, s.slug, s.version, s.status,
                 f": {s.failure_message}" if s.failure_message else "")

    def _write_log(self, s: Session) -> None:
        from .core.contract import atomic_write_json

        atomic_write_json(self.session_dir(s.id) / "log.json",
                          notebook_log(self.session_dir(s.id) / "executed.ipynb", s.started_at or s.created_at))


def _week_start(now: float) -> float:
    """Kaggle's GPU week starts on Saturday 00:00 UTC."""
    day = dt.datetime.fromtimestamp(now, dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return (day - dt.timedelta(days=(day.weekday() - 5) % 7)).timestamp()


def _duration(seconds: float) -> str:
    """A protobuf JSON duration. (kagglesdk's own serializer drops whole days; its parser reads this fine.)"""
    return f"{seconds:.3f}s" if seconds % 1 else f"{int(seconds)}s"


def _timeout_message(limit: float) -> str:
    return f"The session exceeded its maximum run time of {limit:g} seconds and was stopped (timed out)."
