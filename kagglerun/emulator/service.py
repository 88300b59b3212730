"""The emulator's kernels service: Kaggle's RPCs and their rules (who may read what, pushes and versions,
the session caps, quota, outputs through signed links, cancel), over the state store.

Each push is a new version (1, 2, ...) and a new session. A session goes QUEUED, RUNNING, then COMPLETE or
ERROR with a failure message (CANCEL_REQUESTED / CANCEL_ACKNOWLEDGED when cancelled; NEW_SCRIPT for a quick
save). A GPU push while `gpu_session_cap` GPU sessions are queued or running is refused in the response's
`error` ("Maximum batch GPU session count of 2 reached."), like Kaggle, with HTTP 200. Without a version
label, ListKernelSessionOutput serves the latest *ended* version, as Kaggle does while a newer one runs.
`kernel_sources` "owner/slug" mount that kernel's latest COMPLETE version's outputs (else its latest ended
one); `dataset_sources` "owner/slug" come from `datasets_dir/owner/slug`, else are invalidDatasetSources.
Where they are mounted is the scheduler's (`input_layout`).
A kernel cannot take its own output as an input: a push listing its own kernel among its kernel sources
gets it back in `invalidKernelSources` and the version runs without it, as Kaggle answers a source that
cannot be added (ApiSaveKernelResponse.invalid_kernel_sources; kaggle_api_extended.kernels_push_cli prints
them as "could not be added to the kernel" and the version is created). GetKernel answers the kernel's
metadata with `currentVersionNumber` and `lastRunTime` (ApiKernelMetadata), as `kaggle kernels pull` reads it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat

from .config import EmulatorConfig
from .faults import FaultInjector
from .quota import quota_exhausted, quota_seconds, week_start, wire_duration
from .sessions import output_files
from .store import (
    ACTIVE,
    CANCEL_ACKNOWLEDGED,
    CANCEL_MESSAGE,
    CANCEL_REQUESTED,
    COMPLETE,
    ENDED,
    NEW_SCRIPT,
    QUEUED,
    RUNNING,
    Kernel,
    Session,
    State,
)

log = logging.getLogger("kagglerun.emulator")

FILES_PREFIX = "/emulator/files/"  # where the signed output links point (served by http.py)
_SLUG_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class ApiError(Exception):
    """An HTTP error answer in Kaggle's JSON shape."""

    def __init__(self, code: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.code, self.message, self.headers = code, message, headers or {}


class _Refused(Exception):
    """A push Kaggle refuses in the answer's `error` field (HTTP 200), creating no version."""


def _source_notebook(body: dict[str, Any]) -> nbformat.NotebookNode:
    language, kernel_type = body.get("language") or "python", body.get("kernelType") or "notebook"
    if language != "python" or kernel_type not in ("notebook", "script"):
        raise _Refused(f"The emulator runs Python notebooks and scripts only, not {language} {kernel_type}")
    text = body.get("text") or ""
    try:
        if kernel_type == "notebook":
            return nbformat.reads(text, as_version=4)
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(text)])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        return nb
    except Exception as e:  # nbformat raises several kinds for bad JSON or schema
        raise _Refused(f"The kernel source is not a valid notebook: {e}") from None


class KernelsService:
    """Kaggle's kernels API over `state`; `stop_session(id, reason, message)` asks the scheduler to stop one."""

    def __init__(self, state: State, config: EmulatorConfig, faults: FaultInjector,
                 stop_session: Callable[[int, str, str], None]):
        self.state, self.config, self.faults, self.stop_session = state, config, faults, stop_session

    def authenticate(self, authorization: str | None) -> str:
        """The user named by an Authorization header: basic username:key, or a bearer API token (kaggle 2.2.5
        sends `Authorization: Bearer <token>`, kagglesdk kaggle_http_client.py BearerAuth; one of
        `config.tokens`, or a user's key), else 401."""
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
            user = self.token_user(value.strip())
        if user is None:
            raise ApiError(401, "Unauthenticated: send a Kaggle username and API key (basic auth) or an API token.",
                           {"WWW-Authenticate": 'Basic realm="kaggle"'})
        return user

    def token_user(self, token: str) -> str | None:
        """The user an API token (or, as a token, a user's key) belongs to."""
        user = None
        for candidate, name in [*self.config.tokens.items(), *((k, n) for n, k in self.config.credentials.items())]:
            if token and hmac.compare_digest(candidate.encode(), token.encode()):
                user = name
        return user

    def introspect(self, body: dict[str, Any]) -> dict[str, Any]:
        """security.OAuthService/IntrospectToken, as the official client asks whose token it holds
        (kagglesdk security/types/oauth_service.py: {token} -> {active, username, ...})."""
        user = self.token_user(str(body.get("token") or "")) if isinstance(body, dict) else None
        return {"active": True, "username": user, "scope": "resources.admin:*"} if user else {"active": False}

    def _kernel_for_read(self, user: str, owner: str, slug: str) -> Kernel:
        kernel = self.state.kernels.get(f"{owner}/{slug}".lower())
        # Kaggle answers 403 for a kernel that does not exist too, so names cannot be probed.
        if kernel is None or (kernel.is_private and kernel.owner != user):
            raise ApiError(403, "Permission 'kernels.get' was denied")
        return kernel

    def _session_for(self, user: str, body: dict[str, Any], *, ended_only: bool = False) -> Session | None:
        if body.get("kernelSessionId") and not body.get("kernelSlug"):
            s = self.state.sessions.get(int(body["kernelSessionId"]))
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
            return self.state.sessions[kernel.sessions[int(number) - 1]]
        candidates = [self.state.sessions[i] for i in kernel.sessions]
        if ended_only:  # like Kaggle, outputs come from the latest version that has ended
            candidates = [s for s in candidates if s.status in ENDED]
        return candidates[-1] if candidates else None

    def log_session_id(self, user: str, body: dict[str, Any]) -> int:
        """The session whose log a request asks for (by session id, or kernel and optional version)."""
        with self.state.lock:
            s = self._session_for(user, body)
        if s is None:
            raise ApiError(404, "The kernel has no versions")
        return s.id

    def save_kernel(self, user: str, body: dict[str, Any], base_url: str) -> dict[str, Any]:
        """A push: a new version and its session, or a refusal in the answer's `error` (HTTP 200, as Kaggle)."""
        with self.state.lock:
            try:
                kernel, owner, name = self._push_target(user, body)
                nb = _source_notebook(body)
                gpu = bool(body.get("enableGpu")) or any(
                    word in (body.get("machineShape") or "").lower() for word in ("gpu", "nvidia"))
                quick_save = body.get("kernelExecutionType") in ("QUICK_SAVE", "KERNEL_EXECUTION_TYPE_QUICK_SAVE")
                if not quick_save:
                    self._check_caps(user, gpu)
            except _Refused as e:
                return {"error": str(e)}
            response: dict[str, Any] = {}
            kernel_inputs = self._resolve_kernel_sources(user, body.get("kernelDataSources") or [], response,
                                                         f"{owner}/{name}")
            dataset_inputs = self._resolve_dataset_sources(body.get("datasetDataSources") or [], response)
            for field in ("competitionDataSources", "modelDataSources"):
                if body.get(field):  # nothing to mount them from here
                    response["invalid" + field[0].upper() + field[1:]] = list(body[field])
            kernel = self._kernel_for_push(kernel, owner, name, body)
            limit = self.config.session_limit_s
            if body.get("sessionTimeoutSeconds"):
                limit = min(limit, float(body["sessionTimeoutSeconds"]))
            session = Session(
                id=self.state.new_id(), owner=kernel.owner, slug=kernel.slug, version=len(kernel.sessions) + 1,
                status=NEW_SCRIPT if quick_save else QUEUED, gpu=gpu, created_at=time.time(), time_limit_s=limit,
                kernel_inputs=kernel_inputs, dataset_inputs=dataset_inputs,
            )
            folder = self.state.session_dir(session.id)
            (folder / "working").mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, folder / "source.ipynb")
            kernel.sessions.append(session.id)
            self.state.sessions[session.id] = session
            self.state.save()
            log.info("push %s/%s -> version %s, session %s%s", kernel.owner, kernel.slug, session.version,
                     session.id, " (GPU)" if gpu else "")
            response.update({
                "ref": f"/code/{kernel.owner}/{kernel.slug}",
                # The kernel's page, naming no session: kagglesdk's ApiSaveKernelResponse has no session id.
                "url": f"{base_url}/code/{kernel.owner}/{kernel.slug}",
                "versionNumber": session.version, "kernelId": kernel.id,
            })
            return response

    def _push_target(self, user: str, body: dict[str, Any]) -> tuple[Kernel | None, str, str]:
        """The kernel a push names (None when new), its owner and slug; pushing another user's is 403."""
        kernel = None
        if body.get("id") and not body.get("slug"):
            kernel = next((k for k in self.state.kernels.values() if k.id == int(body["id"])), None)
            if kernel is None:
                raise _Refused("Kernel not found")
            owner, name = kernel.owner, kernel.slug
        else:
            owner, _, name = (body.get("slug") or "").partition("/")
            if not name:
                owner, name = user, owner
            if not name or not set(name) <= _SLUG_CHARS or len(name) > 100:
                raise _Refused(f"Invalid kernel slug {body.get('slug')!r}")
            kernel = self.state.kernel(owner, name)
        if owner.lower() != user.lower():
            verb = "update" if kernel is not None else "create"
            raise ApiError(403, f"Permission 'kernels.{verb}' was denied: {owner}/{name} is not owned by {user}")
        return kernel, owner, name

    def _check_caps(self, user: str, gpu: bool) -> None:
        """Refuse a batch session beyond the user's cap of its kind (GPU, or CPU: "Maximum batch CPU session
        count of N reached", the same refusal for CPU sessions), or a GPU one when the week's quota is used."""
        active = sum(1 for s in self.state.sessions.values() if s.owner == user and s.gpu == gpu and s.status in ACTIVE)
        cap = self.config.gpu_session_cap if gpu else self.config.cpu_session_cap
        if active >= cap or (gpu and self.faults.roll("cap_reject")):
            raise _Refused(f"Maximum batch {'GPU' if gpu else 'CPU'} session count of {cap} reached.")
        if gpu and quota_exhausted(self.state, self.config, user):
            raise _Refused(f"You have used your weekly GPU quota of {self.config.gpu_quota_hours:g} hours.")

    def _kernel_for_push(self, kernel: Kernel | None, owner: str, name: str, body: dict[str, Any]) -> Kernel:
        """The pushed kernel, made when new; its title and privacy as the push says."""
        if kernel is None:
            title = body.get("newTitle") or name
            kernel = Kernel(self.state.new_id(), owner, name, title, body.get("isPrivate", True) is not False, [])
            self.state.kernels[f"{owner}/{name}".lower()] = kernel
        elif body.get("newTitle"):
            kernel.title = body["newTitle"]
        if body.get("isPrivate") is not None:
            kernel.is_private = bool(body["isPrivate"])
        return kernel

    def _resolve_kernel_sources(self, user: str, refs: list[str], response: dict[str, Any],
                                itself: str) -> dict[str, int]:
        """Each "owner/slug" -> the session whose outputs it mounts: its latest COMPLETE version, else latest
        ended. The pushed kernel `itself` is never one: it is refused like a source that does not exist."""
        found: dict[str, int] = {}
        for ref in refs:
            kernel = self.state.kernels.get(ref.lower())
            if ref.lower() == itself.lower():
                log.info("push of %s lists itself as a kernel source: refused", itself)
                self.state.self_sources_refused += 1
                kernel = None
            ended = [] if kernel is None or (kernel.is_private and kernel.owner != user) else [
                self.state.sessions[i] for i in kernel.sessions if self.state.sessions[i].status in ENDED]
            complete = [s for s in ended if s.status == COMPLETE]
            if kernel is None or not ended:
                response.setdefault("invalidKernelSources", []).append(ref)
                continue
            found[f"{kernel.owner}/{kernel.slug}"] = (complete or ended)[-1].id
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
            found[f"{owner}/{name}"] = str(folder)
        return found

    def get_kernel(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        """GetKernel: the kernel's metadata (current version, last run time, sources) and its latest source."""
        with self.state.lock:
            kernel = self._kernel_for_read(user, body.get("userName") or user, body.get("kernelSlug") or "")
            sessions = [self.state.sessions[i] for i in kernel.sessions]
            latest = sessions[-1] if sessions else None
            metadata: dict[str, Any] = {
                "id": kernel.id, "ref": f"{kernel.owner}/{kernel.slug}", "title": kernel.title, "author": kernel.owner,
                "slug": kernel.slug, "language": "python", "kernelType": "notebook", "isPrivate": kernel.is_private,
                "currentVersionNumber": len(sessions),
                "kernelDataSources": sorted(self.state.kernel_ref(i) for i in latest.kernel_inputs.values())
                if latest else [],
            }
            if latest is not None:
                metadata["enableGpu"] = latest.gpu
                metadata["lastRunTime"] = dt.datetime.fromtimestamp(latest.created_at, dt.UTC).replace(tzinfo=None) \
                    .isoformat(timespec="milliseconds") + "Z"
            return {"metadata": metadata}

    def session_status(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.state.lock:
            s = self._session_for(user, body)
            if s is None:
                raise ApiError(404, "The kernel has no versions")
            answer: dict[str, Any] = {"status": s.status}
            if s.failure_message:
                answer["failureMessage"] = s.failure_message
            return answer

    def list_output(self, user: str, body: dict[str, Any], base_url: str) -> dict[str, Any]:
        with self.state.lock:
            s = self._session_for(user, body, ended_only=True)
            if s is None or s.status not in ENDED:  # nothing ended yet: no outputs, no log
                return {"files": []}
            if self.config.faults.stale:
                kernel = self.state.kernels[f"{s.owner}/{s.slug}".lower()]
                older = [self.state.sessions[i] for i in kernel.sessions
                         if i < s.id and self.state.sessions[i].status in ENDED]
                if older and self.faults.roll("stale"):
                    log.info("fault: serving version %s's outputs for version %s", older[-1].version, s.version)
                    s = older[-1]
            sid = s.id
        names = output_files(self.state.session_dir(sid) / "working")
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
        return hmac.new(self.state.secret.encode(), f"{session_id}/{name}".encode(), hashlib.sha256).hexdigest()[:32]

    def output_path(self, session_id: int, signature: str, name: str) -> Path | None:
        """The file a signed output link points to, or None when the link is forged or the file is gone."""
        if not hmac.compare_digest(self._sign(session_id, name), signature):
            return None
        working = (self.state.session_dir(session_id) / "working").resolve()
        path = (working / name).resolve()
        if not path.is_relative_to(working) or not path.is_file():
            return None
        return path

    def log_entries(self, session_id: int) -> list[dict[str, Any]]:
        path = self.state.session_dir(session_id) / "log.json"
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return []

    def session_ended(self, session_id: int) -> bool:
        with self.state.lock:
            return self.state.sessions[session_id].status in ENDED + (NEW_SCRIPT,)

    def cancel(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.state.lock:
            s = self.state.sessions.get(int(body.get("kernelSessionId") or 0))
            if s is None:
                raise ApiError(404, "Kernel session not found")
            if s.owner != user:
                raise ApiError(403, "Permission 'kernels.update' was denied")
            if s.status == QUEUED:
                s.status, s.failure_message, s.ended_at = CANCEL_ACKNOWLEDGED, CANCEL_MESSAGE, time.time()
            elif s.status == RUNNING:
                s.status = CANCEL_REQUESTED
                self.stop_session(s.id, "cancel", CANCEL_MESSAGE)
            else:
                return {"errorMessage": f"The session has already ended ({s.status})"}
            self.state.save()
            return {}

    def quota(self, user: str) -> dict[str, Any]:
        with self.state.lock:
            used, reserved, total = quota_seconds(self.state, self.config, user)
            has_run = any(s.owner == user and s.gpu and s.started_at for s in self.state.sessions.values())
        refresh = week_start(time.time()) + 7 * 86400
        return {
            "quotaRefreshTime": dt.datetime.fromtimestamp(refresh, dt.UTC).replace(tzinfo=None)
            .isoformat(timespec="milliseconds") + "Z",
            "gpuQuota": {
                "timeUsed": wire_duration(used), "timeReserved": wire_duration(reserved),
                "totalTimeAllowed": wire_duration(total), "minimumTimeAllowed": wire_duration(total),
                "hasEverRun": has_run,
            },
            "tpuQuota": {"timeUsed": "0s", "timeReserved": "0s", "totalTimeAllowed": "72000s",
                         "minimumTimeAllowed": "72000s"},
        }

    def stats(self) -> dict[str, Any]:
        with self.state.lock:
            counts = {st: sum(1 for s in self.state.sessions.values() if s.status == st) for st in (QUEUED, RUNNING)}
            return {
                "peak_running": self.state.peak_running, "running": counts[RUNNING], "queued": counts[QUEUED],
                "sessions": len(self.state.sessions), "workers": self.config.workers,
                "gpu_session_cap": self.config.gpu_session_cap, "faults_injected": self.faults.snapshot(),
                "self_sources_refused": self.state.self_sources_refused,
            }
