"""A loopback server that speaks Kaggle's kernels API and runs pushed notebooks locally.

Protocol. Exactly what the official SDK (kagglesdk) sends: JSON POSTs to
`/api/v1/kernels.KernelsApiService/<Method>` with camelCase fields, errors as `{"code": N, "message": ...}`
(the SDK raises them as HTTPError). Implemented methods: SaveKernel, GetKernelSessionStatus,
ListKernelSessionOutput (paged by pageSize/pageToken; each file's `url` is an unauthenticated signed link
to this server, as Kaggle's are to storage; `log` on the first page), GetKernelSessionLogsStream, plus the
client's `GET /api/v1/kernels/logs/stream/{owner}/{slug}` (SSE while a session runs, the JSON log once it
has ended), CancelKernelSession and GetAcceleratorQuotaStatistics. `GET /emulator/stats` is the emulator's
own: peak of running sessions, fault counts. Other methods answer 404.

Pointing a client at it. `KAGGLE_API_ENVIRONMENT=TEST` makes `kagglesdk.kaggle_env.get_env()` pick
http://localhost:7777, the default port. On another port (tests use port 0 = a free one) build the client
with `KaggleClient(env=KaggleEnv.TEST, username=..., password=key)` and set
`client.http_client()._endpoint = handle.url`. Credentials: HTTP basic auth (username, key) or a bearer
token equal to a key; without them every API call is 401, and a kernel owned by someone else is 403.
The server accepts `EmulatorConfig.credentials` ({username: key}); by default KAGGLE_USERNAME/KAGGLE_KEY
from the environment, else `kagglerun-test` / `kagglerun-test-key`. The key is never logged.

Kaggle's behaviour. Each push is a new version (1, 2, ...) and a new session, whose id is also given as
`?scriptVersionId=` in the push's url (CancelKernelSession needs it). A session goes QUEUED, RUNNING, then
COMPLETE or ERROR with a failure message (CANCEL_REQUESTED / CANCEL_ACKNOWLEDGED when cancelled;
NEW_SCRIPT for a quick save). A GPU push while `gpu_session_cap` GPU sessions are queued or running is
refused in the response's `error` ("Maximum batch GPU session count of 2 reached."), like Kaggle, with
HTTP 200. GPU time counts against a weekly quota (`timeUsed`: ended sessions this week; `timeReserved`:
running sessions so far). A session is stopped at its time limit (12 h, or the push's sessionTimeoutSeconds)
with ERROR, keeping its outputs so far. Without a version label, ListKernelSessionOutput serves the
latest *ended* version, as Kaggle does while a newer one runs.

Execution. `workers` sessions run at once, each in its own process (so cancel and time limits can stop
it) calling `execute.execute_notebook` in `sessions/<id>/working` (stands in for /kaggle/working: its
files are the outputs, named relative to it) with KAGGLERUN_INPUT=`sessions/<id>/input` (/kaggle/input):
`kernel_sources` "owner/slug" get that kernel's latest COMPLETE version's outputs (else its latest ended
one) copied to input/<slug>/, `dataset_sources` "owner/slug" are copied from `datasets_dir/owner/slug`
when given, else reported in invalidDatasetSources. KAGGLERUN_DATA is `data_dir` or this process's own.
The log is the notebook's stream outputs as Kaggle's list of {stream_name, time, data}, built when the
session ends (there is no live log).

State. `state_dir/state.json` (kernels, sessions, the signing secret), rewritten atomically after every
change, and one folder per session. After a restart, QUEUED sessions run; sessions that were RUNNING
are ERROR ("lost when the emulator stopped") with the time they ran charged, and their orphaned
processes are killed. Only 127.0.0.1 is bound.

Faults (emulator_faults.FaultConfig, all off by default): see that module.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import email.utils
import hashlib
import hmac
import http.server
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from .emulator_faults import FaultConfig, FaultInjector
from .errors import KaggleError

log = logging.getLogger("kagglerun.emulator")

DEFAULT_PORT = 7777
TEST_USERNAME = "kagglerun-test"
TEST_KEY = "kagglerun-test-key"
RPC_PREFIX = "/api/v1/kernels.KernelsApiService/"
LOG_STREAM_PREFIX = "/api/v1/kernels/logs/stream/"
FILES_PREFIX = "/emulator/files/"

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
_SKIP_OUTPUT_DIRS = {".ipynb_checkpoints", ".virtual_documents"}


def default_credentials() -> dict[str, str]:
    """{username: key}: KAGGLE_USERNAME/KAGGLE_KEY from the environment when both are set, else the test pair."""
    user, key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    return {user: key} if user and key else {TEST_USERNAME: TEST_KEY}


def default_state_dir() -> Path:
    return Path.home() / ".cache" / "kagglerun" / "emulator"


@dataclasses.dataclass
class EmulatorConfig:
    """Everything the emulator can be told; the defaults mirror Kaggle's free tier."""

    port: int = DEFAULT_PORT  # 0 picks a free port
    workers: int = 2  # notebooks executing at once
    state_dir: Path = dataclasses.field(default_factory=default_state_dir)
    credentials: dict[str, str] = dataclasses.field(default_factory=default_credentials)
    gpu_session_cap: int = 2
    gpu_quota_hours: float = 30.0
    session_limit_s: float = 12 * 3600.0  # Kaggle's 12 h limit; a push may ask for less
    queue_s: float = 0.0  # least time a session stays QUEUED, so clients can see that state
    data_dir: Path | None = None  # KAGGLERUN_DATA for the notebooks (default: inherited)
    datasets_dir: Path | None = None  # holds owner/slug folders for dataset_sources
    faults: FaultConfig = dataclasses.field(default_factory=FaultConfig)


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
                _kill_orphan(s.pid)
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
                _kill_group(run.proc, signal.SIGKILL)
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
                _kill_group(run.proc, signal.SIGKILL)
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
        (folder / "job.json").write_text(json.dumps(job))
        package_root = str(Path(__file__).resolve().parent.parent)
        child_env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [package_root] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
        with open(folder / "worker.log", "ab") as worker_log:
            # Own session: the emulator's Ctrl-C does not reach notebooks, and a stop can signal the group.
            proc = subprocess.Popen(
                [sys.executable, "-c", "from kagglerun.emulator import run_session_process as r; r()", str(folder)],
                cwd=working, env=child_env, stdin=subprocess.DEVNULL, stdout=worker_log, stderr=worker_log,
                start_new_session=True,
            )
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
            _kill_group(run.proc, signal.SIGKILL)
        else:  # the session process saves its notebook (outputs so far) on SIGTERM
            _kill_group(run.proc, signal.SIGTERM, group=False)
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


def _kill_group(proc: subprocess.Popen, sig: int, group: bool = True) -> None:
    try:
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_orphan(pid: int | None) -> None:
    """Kill a session process left by a server that died, if that pid still is one of ours."""
    if not pid:
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"run_session_process" in cmdline:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def output_files(working: Path) -> list[str]:
    """Every file under `working`, as posix names relative to it (Kaggle's names under /kaggle/working)."""
    names = []
    for root, dirs, files in os.walk(working):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_OUTPUT_DIRS)
        for name in sorted(files):
            path = Path(root) / name
            if path.is_file() and not path.is_symlink():
                names.append(path.relative_to(working).as_posix())
    return names


def notebook_log(executed: Path, started_at: float) -> list[dict[str, Any]]:
    """Kaggle's log format from an executed notebook: its stream outputs as {stream_name, time, data}."""
    import nbformat

    try:
        nb = nbformat.read(executed, as_version=4)
    except (OSError, ValueError):
        return []
    entries = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        stamp = cell.get("metadata", {}).get("execution", {}).get("shell.execute_reply")
        try:
            at = max(0.0, dt.datetime.fromisoformat(stamp).timestamp() - started_at) if stamp else 0.0
        except ValueError:
            at = 0.0
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                entries.append({"stream_name": out.get("name", "stdout"), "time": round(at, 3),
                                "data": out.get("text", "")})
            elif out.get("output_type") == "error":
                text = "\n".join(out.get("traceback", [])) or f"{out.get('ename')}: {out.get('evalue')}"
                entries.append({"stream_name": "stderr", "time": round(at, 3), "data": text + "\n"})
    return entries


def run_session_process() -> None:
    """Entry point of a session's own process: run the notebook, write result.json, save on SIGTERM."""
    from .core.contract import atomic_write_json
    from .execute import NotebookFailed, execute_notebook

    folder = Path(sys.argv[-1])
    job = json.loads((folder / "job.json").read_text())

    def on_term(signum, frame):  # unwinds through execute_notebook, which saves the executed copy
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        execute_notebook(Path(job["notebook"]), Path(job["cwd"]), env=job["env"],
                         executed_copy=Path(job["executed_copy"]))
        result = {"ok": True}
    except NotebookFailed as e:
        result = {"ok": False, "error": f"{e.ename}: {e.evalue}"}
    except KeyboardInterrupt:
        return
    atomic_write_json(job["result"], result)


# ---------- HTTP ----------
class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's requests session expects
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # never the headers, so never a key
        log.debug("%s %s", self.address_string(), format % args)

    # --- plumbing ---
    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, code: int, payload: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _json(self, code: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self._send(code, json.dumps(data).encode(), "application/json", headers)

    def _error(self, e: ApiError) -> None:
        self._json(e.code, {"code": e.code, "message": e.message}, e.headers)

    def _base_url(self) -> str:
        return f"http://{self.headers.get('Host') or f'127.0.0.1:{self.server.server_port}'}"

    def _inject(self) -> bool:
        """Maybe inject a request-level fault; True when the request was answered (or dropped) by it."""
        em = self.server.emulator
        if em.faults.roll("slow"):
            time.sleep(em.config.faults.slow_seconds)
        fault = em.faults.http_fault()
        if fault is None:
            return False
        log.info("fault: %s on %s %s", fault, self.command, self.path.split("?")[0])
        if fault == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif fault == "http_429":
            retry = em.config.faults.retry_after
            self._error(ApiError(429, "Too many requests", {"Retry-After": f"{retry:g}"}))
        else:
            code = 500 if fault == "http_500" else 503
            self._error(ApiError(code, "Internal server error" if code == 500 else "Service unavailable"))
        return True

    # --- routes ---
    def do_POST(self) -> None:
        raw = self._body()
        path = urllib.parse.urlsplit(self.path).path
        if not path.startswith(RPC_PREFIX):
            return self._error(ApiError(404, f"No such endpoint: {path}"))
        if self._inject():
            return
        em = self.server.emulator
        method = path[len(RPC_PREFIX):]
        try:
            user = em.authenticate(self.headers.get("Authorization"))
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                raise ApiError(400, "The request body is not JSON") from None
            if method == "SaveKernel":
                return self._json(200, em.save_kernel(user, body, self._base_url()))
            if method == "GetKernelSessionStatus":
                return self._json(200, em.session_status(user, body))
            if method == "ListKernelSessionOutput":
                return self._json(200, em.list_output(user, body, self._base_url()))
            if method == "CancelKernelSession":
                return self._json(200, em.cancel(user, body))
            if method == "GetAcceleratorQuotaStatistics":
                return self._json(200, em.quota(user))
            if method == "GetKernelSessionLogsStream":
                with em._lock:
                    s = em._session_for(user, body)
                if s is None:
                    raise ApiError(404, "The kernel has no versions")
                return self._logs(s.id)
            raise ApiError(404, f"Method {method} is not implemented by the emulator")
        except ApiError as e:
            self._error(e)

    def do_GET(self) -> None:
        split = urllib.parse.urlsplit(self.path)
        path = split.path
        em = self.server.emulator
        if path == "/emulator/stats":
            return self._json(200, em.stats())
        if path.startswith(FILES_PREFIX):
            if self._inject():
                return
            return self._file(path[len(FILES_PREFIX):])
        if path.startswith(LOG_STREAM_PREFIX):
            if self._inject():
                return
            try:
                user = em.authenticate(self.headers.get("Authorization"))
                owner, _, slug = path[len(LOG_STREAM_PREFIX):].partition("/")
                query = urllib.parse.parse_qs(split.query)
                body = {"userName": owner, "kernelSlug": slug, "versionLabel": (query.get("versionLabel") or [None])[0]}
                with em._lock:
                    s = em._session_for(user, body)
                if s is None:
                    raise ApiError(404, "The kernel has no versions")
                return self._logs(s.id)
            except ApiError as e:
                return self._error(e)
        self._error(ApiError(404, f"No such endpoint: {path}"))

    do_HEAD = do_GET

    def _logs(self, sid: int) -> None:
        """The persisted JSON log once the session has ended; while it runs, an SSE stream that ends with it."""
        em = self.server.emulator
        if em.session_ended(sid):
            return self._json(200, em.log_entries(sid))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        while not em.session_ended(sid) and not self.server.stopping.is_set():
            time.sleep(0.2)
        for entry in em.log_entries(sid):
            self.wfile.write(f"data: {json.dumps(entry)}\n\n".encode())
        self.wfile.write(b"data: END_OF_LOG\n\n")

    def _file(self, rest: str) -> None:
        sid, _, rest = rest.partition("/")
        signature, _, quoted = rest.partition("/")
        path = None
        if sid.isdigit():
            path = self.server.emulator.output_path(int(sid), signature, urllib.parse.unquote(quoted))
        if path is None:
            return self._error(ApiError(403, "The link is invalid or has expired"))
        data = path.read_bytes()
        stat = path.stat()
        etag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
        last_modified = email.utils.formatdate(stat.st_mtime, usegmt=True)
        headers = {"Accept-Ranges": "bytes", "ETag": etag, "Last-Modified": last_modified}
        start, code = 0, 200
        wanted = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if wanted and (if_range is None or if_range in (etag, last_modified)):
            first, _, last = wanted.removeprefix("bytes=").partition("-")
            if not first.isdigit() or int(first) >= len(data) or (last and not last.isdigit()):
                return self._send(416, b"", "application/octet-stream", {"Content-Range": f"bytes */{len(data)}"})
            start, end = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, code = data[start:end + 1], 206
        if self.command == "GET" and len(data) > 1 and self.server.emulator.faults.roll("truncate"):
            log.info("fault: truncating download of %s", path.name)
            self.send_response(code)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data[:len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._send(code, data, "application/octet-stream", headers)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, emulator: Emulator, port: int):
        self.emulator = emulator
        self.stopping = threading.Event()
        super().__init__(("127.0.0.1", port), _Handler)


class EmulatorHandle:
    """A running emulator: `url`, `stats()`, `stop()` (also as a context manager)."""

    def __init__(self, emulator: Emulator, server: _Server, thread: threading.Thread):
        self.emulator, self._server, self._thread = emulator, server, thread
        self.port = server.server_port
        self.url = f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        return self.emulator.stats()

    def stop(self) -> None:
        if self._server.stopping.is_set():
            return
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        self.emulator.stop()

    def __enter__(self) -> "EmulatorHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _bind(emulator: Emulator, port: int) -> _Server:
    try:
        return _Server(emulator, port)
    except OSError as e:
        raise KaggleError(f"the emulator cannot listen on 127.0.0.1:{port}: {e.strerror or e}") from None


def start_in_thread(config: EmulatorConfig) -> EmulatorHandle:
    """Start the emulator on a background thread and return its handle (port 0 = a free port)."""
    emulator = Emulator(config)
    server = _bind(emulator, config.port)
    emulator.start()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="emulator-http", daemon=True)
    thread.start()
    log.info("Kaggle emulator on http://127.0.0.1:%s, state in %s", server.server_port, emulator.state_dir)
    return EmulatorHandle(emulator, server, thread)


def serve(config: EmulatorConfig, ready: Any = None) -> None:
    """Run the emulator until Ctrl-C (which propagates after a clean stop). `ready(handle)` is called once listening."""
    handle = start_in_thread(config)
    try:
        if ready is not None:
            ready(handle)
        while True:
            time.sleep(3600)
    finally:
        handle.stop()
