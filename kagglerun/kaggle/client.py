"""The kernels API through the official SDK client: push, status, outputs, download, log, cancel, quota.
Transient failures are retried by the one policy (retry.py); everything else becomes a KaggleError subclass."""

from __future__ import annotations

import dataclasses
import errno
import functools
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import AnswerLost, CredentialsError, KaggleError, KernelError, SessionCapError
from ..states import KernelState
from .credentials import Credentials, load_credentials
from .logs import log_text
from .retry import RetryPolicy, TimeoutAdapter, connection_refused, retry_after
from .sdk import kaggle_api_class, resolve_endpoint, validate_kernel_folder
from .types import (
    DownloadFailed,
    KernelVersion,
    OutputFile,
    Outputs,
    PushResult,
    Quota,
    SessionStatus,
    is_session_cap,
    split_kernel,
)

NOTIFY_WAIT_SECONDS = 5.0  # waits at least this long are told to `KaggleKernels.notify`


class KaggleKernels:
    """Kaggle's kernels API through the official SDK client: push, status, outputs, download, log, cancel,
    GPU quota. Transient failures are retried; everything else becomes a KaggleError subclass.

    `counters` tallies what was survived (retries by cause, refused downloads) for reports and tests."""

    def __init__(self, credentials: Credentials, *, environ: Mapping[str, str] | None = None,
                 retry: RetryPolicy | None = None, sleep: Callable[[float], None] = time.sleep):
        self.credentials = credentials
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self.sdk_env, self.endpoint = resolve_endpoint(environ)
        self.counters: Counter[str] = Counter()
        # Told what a long wait is for (Kaggle's Retry-After), so the user sees why nothing happens.
        self.notify: Callable[[str], None] = lambda message: None
        self._client = self._build_client()
        if credentials.token and not credentials.username:
            self.credentials = dataclasses.replace(credentials, username=self._token_username())

    @property
    def username(self) -> str:
        return self.credentials.username

    def _build_client(self) -> Any:
        from kagglesdk.kaggle_client import KaggleClient
        from kagglesdk.kaggle_http_client import KaggleHttpClient

        creds = self.credentials
        client = KaggleClient(env=self.sdk_env, username=creds.username, password=creds.key,
                              api_token=creds.token or None, user_agent="kagglerun")
        http = client._http_client
        http._endpoint = self.endpoint  # the SDK derives it from the environment alone; honour the override
        http._init_session()
        # The SDK prefers an ambient access token (KAGGLE_API_TOKEN, ~/.kaggle/access_token) over the user name
        # and key it was given; use what we were given, so a demo never sends a real token to an emulator.
        # A token goes as the SDK sends one (kaggle_http_client.py BearerAuth: "Authorization: Bearer <token>").
        http._session.auth = KaggleHttpClient.BearerAuth(creds.token) if creds.token else (creds.username, creds.key)
        TimeoutAdapter.mount(http._session, self.retry.timeout_seconds)
        return client

    def _token_username(self) -> str:
        """The user an API token belongs to, asked of Kaggle as the official client asks
        (kaggle_api_extended.py `_introspect_token`: security.OAuthService/IntrospectToken)."""
        from kagglesdk.security.types.oauth_service import IntrospectTokenRequest

        request = IntrospectTokenRequest()
        request.token = self.credentials.token
        try:
            response = self._call("API token check", lambda: self._client.security.oauth_client.introspect_token(request))
        except KernelError:  # 403, 404: like the official client, an invalid token
            response = None
        except CredentialsError:
            raise
        except KaggleError as e:
            if "(HTTP 400)" not in str(e):  # 400 too; anything else (unreachable, 5xx) is not the token's fault
                raise
            response = None
        if response is None or not response.active or not response.username:
            raise CredentialsError(f"Kaggle does not accept the API token from {self.credentials.source} (expired "
                                   "or revoked): create a new one at kaggle.com → Settings → API")
        return str(response.username)

    @property
    def _kernels(self) -> Any:
        return self._client.kernels.kernels_api_client

    # -- the retry loop ---------------------------------------------------------------------------------

    def _call(self, what: str, func: Callable[[], Any], kernel: str = "", *, repeatable: bool = True) -> Any:
        """Run one request with bounded retries; `what` names it in messages ("push of bsln_4").

        A request that is not `repeatable` (a push: each one creates a version) is retried only where it
        cannot have been acted on (429, a refused connection); where the server may have acted on it and
        the answer was lost (a dropped connection, a timeout, a 5xx), AnswerLost is raised for the caller
        to ask Kaggle what happened."""
        import requests

        for attempt in range(1, self.retry.attempts + 1):
            last = attempt == self.retry.attempts
            try:
                return func()
            except requests.HTTPError as e:
                status = e.response.status_code if e.response is not None else 0
                message = _http_message(e)
                if status == 429 and not last:
                    delay = self.retry.delay(attempt, retry_after(e.response))
                    self.counters["retried_429"] += 1
                    if delay >= NOTIFY_WAIT_SECONDS:
                        self.notify(f"Kaggle asked to wait before the {what} (HTTP 429, rate limit): waiting "
                                    f"{delay:.0f} s, then try {attempt + 1} of {self.retry.attempts}")
                    self._sleep(delay)
                    continue
                if status >= 500 and not repeatable:
                    self.counters["answer_lost"] += 1
                    raise AnswerLost(f"the {what} got HTTP {status} from Kaggle{f' ({message})' if message else ''}: "
                                     "it may or may not have been acted on") from None
                if status >= 500 and not last:
                    self.counters[f"retried_{status}"] += 1
                    self._sleep(self.retry.backoff(attempt))
                    continue
                raise self._http_error(what, status, message, kernel) from None
            except (requests.ConnectionError, requests.Timeout) as e:
                refused = connection_refused(e)
                if not repeatable and not refused and not isinstance(e, requests.ConnectTimeout):
                    self.counters["answer_lost"] += 1
                    raise AnswerLost(f"the answer to the {what} was lost ({type(e).__name__}): it may or may "
                                     "not have been acted on") from None
                # Nothing listening is rarely transient: give up early with a hint instead of backing off for long.
                if not last and not (refused and attempt >= 2):
                    self.counters["retried_connection"] += 1
                    self._sleep(self.retry.backoff(attempt))
                    continue
                hint = ""
                if refused and self.sdk_env.name != "PROD":
                    hint = " (is `kagglerun emulator` running there?)"
                reason = "connection refused" if refused else type(e).__name__
                raise KaggleError(f"cannot reach Kaggle at {self.endpoint} for the {what}: {reason}{hint}") from None
        raise AssertionError("unreachable")

    def _http_error(self, what: str, status: int, message: str, kernel: str) -> KaggleError:
        detail = f" ({message})" if message else ""
        if status == 401:
            check = "the API token" if self.credentials.token else "the user name and key"
            return CredentialsError(f"Kaggle refused the credentials of {self.username or '(token)'!r} from "
                                    f"{self.credentials.source} (HTTP 401){detail}: check {check}")
        if status == 403:
            return KernelError(f"Kaggle denied the {what} (HTTP 403){detail}: the kernel slug {kernel or '?'} is "
                               f"wrong or not owned by {self.username!r}, or the key lacks permission")
        if status == 404:
            return KernelError(f"Kaggle has no kernel {kernel or '?'} for the {what} (HTTP 404){detail}: "
                               "check the slug, or push it first")
        if status == 429:
            return KaggleError(f"Kaggle kept rate-limiting the {what} (HTTP 429) after "
                               f"{self.retry.attempts} attempts; wait a few minutes and try again")
        if status >= 500:
            return KaggleError(f"Kaggle failed the {what} {self.retry.attempts} times (HTTP {status}){detail}; "
                               "try again later")
        if is_session_cap(message):
            return SessionCapError(f"Kaggle rejected the {what}: {message}")
        return KaggleError(f"Kaggle rejected the {what} (HTTP {status}){detail}")

    # -- the API ----------------------------------------------------------------------------------------

    def push(self, folder: Path) -> PushResult:
        """Push a rendered kernel folder and start a new version. The official client's own validation and
        request building run first (`validate_kernel_folder`), so a bad folder fails before the network."""
        folder = Path(folder)
        request = validate_kernel_folder(folder)
        kernel = request.slug
        response = self._call(f"push of {folder.name}", lambda: self._kernels.save_kernel(request), kernel,
                              repeatable=False)
        # The server reports many refusals inside a 200 response; the official CLI prints them and exits 0.
        if response.error:
            if is_session_cap(response.error):
                raise SessionCapError(f"Kaggle rejected the push of {folder.name}: {response.error}")
            raise KaggleError(f"Kaggle rejected the push of {folder.name}: {response.error}")
        # Refused sources and tags do not stop the push: the version exists, without them (kernels_push_cli
        # prints them as "could not be added to the kernel"). The caller records it and decides.
        invalid = {name: list(getattr(response, f"invalid_{name}_sources") or []) for name in ("dataset", "kernel",
                   "competition", "model")}
        invalid["tags"] = list(response.invalid_tags or [])
        invalid = {k: v for k, v in invalid.items() if v}
        if not response.version_number:
            raise KaggleError(f"Kaggle accepted the push of {folder.name} but returned no version number")
        ref = (response.ref or kernel).strip("/")
        if ref.count("/") != 1:  # the server may answer with a path such as /code/owner/slug
            ref = "/".join(ref.split("/")[-2:])
        # kagglesdk kernels_api_service.py, ApiSaveKernelResponse: ref, url, version_number, error, invalid_*,
        # kernel_id; no session id. The url is the kernel's page (https://www.kaggle.com/code/owner/slug), so the
        # version number is the handle on the new session: status, outputs and logs all take it (version_label).
        return PushResult(ref, int(response.version_number), response.url or "", invalid)

    def current_version(self, kernel: str) -> KernelVersion | None:
        """The kernel's current version number and when it last ran (GetKernel, as `kaggle kernels pull`
        asks it), or None when Kaggle has no such kernel of this user: what a push whose answer was lost
        is judged by."""
        from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelRequest

        owner, slug = split_kernel(kernel)
        request = ApiGetKernelRequest()
        request.user_name, request.kernel_slug = owner, slug
        try:
            response = self._call(f"version query of {kernel}", lambda: self._kernels.get_kernel(request), kernel)
        except KernelError:  # Kaggle answers 403 for a kernel that does not exist, as for another's
            return None
        meta = response.metadata
        if meta is None or not meta.current_version_number:
            return None
        when = meta.last_run_time.isoformat() if meta.last_run_time else ""
        if when and meta.last_run_time.tzinfo is None:  # the SDK parses Kaggle's "Z" times as naive UTC
            when += "+00:00"
        return KernelVersion(int(meta.current_version_number), when, tuple(meta.kernel_data_sources or ()))

    def status(self, kernel: str, version: int | None = None) -> SessionStatus:
        """The state of the kernel's session (of `version` when given, else the latest)."""
        from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelSessionStatusRequest

        owner, slug = split_kernel(kernel)
        request = ApiGetKernelSessionStatusRequest()
        request.user_name, request.kernel_slug = owner, slug
        if version:
            request.version_label = f"v{version}"
        response = self._call(f"status of {kernel}", lambda: self._kernels.get_kernel_session_status(request), kernel)
        state = KernelState.parse(response.status.name) if response.status is not None else KernelState.UNKNOWN
        return SessionStatus(state, response.failure_message or "")

    def outputs(self, kernel: str, version: int | None = None, page_size: int = 50) -> Outputs:
        """Every output file of the kernel's session, following the pages, and its log."""
        from kagglesdk.kernels.types.kernels_api_service import ApiListKernelSessionOutputRequest

        owner, slug = split_kernel(kernel)
        files: list[OutputFile] = []
        log, token, seen = "", "", set()
        while True:
            request = ApiListKernelSessionOutputRequest()
            request.user_name, request.kernel_slug = owner, slug
            request.page_size, request.page_token = page_size, token
            if version:
                request.version_label = f"v{version}"
            response = self._call(f"output listing of {kernel}",
                                  functools.partial(self._kernels.list_kernel_session_output, request), kernel)
            files.extend(OutputFile(f.file_name, f.url) for f in response.files or [] if f is not None)
            log = log or response.log or ""
            token = response.next_page_token or ""
            if not token or token in seen:  # a server repeating a token must not loop us forever
                return Outputs(files, log)
            seen.add(token)

    def log(self, kernel: str, version: int | None = None) -> str:
        """The session's log as plain text (Kaggle stores it as JSON events; their `data` is joined), in one
        request: the log comes with the first page of the output listing (kagglesdk
        ApiListKernelSessionOutputResponse.log), so the pages of files are not followed."""
        from kagglesdk.kernels.types.kernels_api_service import ApiListKernelSessionOutputRequest

        owner, slug = split_kernel(kernel)
        request = ApiListKernelSessionOutputRequest()
        request.user_name, request.kernel_slug, request.page_size = owner, slug, 1
        if version:
            request.version_label = f"v{version}"
        response = self._call(f"log of {kernel}", lambda: self._kernels.list_kernel_session_output(request), kernel)
        return log_text(response.log or "")

    def download(self, url: str, dest: Path) -> None:
        """Stream one output file to `dest` with the official client's download code (which checks the
        Content-Length). Raises DownloadFailed for a bad status or a short body; OSError for a local failure.
        Like the official client, the URL is fetched without our credentials: on Kaggle it is a signed URL
        on another host."""
        import requests

        try:
            response = requests.get(url, stream=True, timeout=self.retry.timeout_seconds)
            response.raise_for_status()
            self._official_api().download_file(response, str(dest), None, quiet=True, resume=False, max_retries=0)
        except requests.HTTPError as e:
            status = e.response.status_code if e.response is not None else 0
            raise DownloadFailed(f"HTTP {status}", status=status,
                                 retry_after=retry_after(e.response) if status == 429 else None) from None
        except (requests.RequestException, ValueError) as e:  # ValueError: the client's size check
            raise DownloadFailed(f"{type(e).__name__}: {e}") from None
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
                raise
            raise DownloadFailed(f"{type(e).__name__}: {e}") from None

    def cancel(self, session_id: int) -> None:
        """Ask Kaggle to stop a running session."""
        from kagglesdk.kernels.types.kernels_api_service import ApiCancelKernelSessionRequest

        request = ApiCancelKernelSessionRequest()
        request.kernel_session_id = int(session_id)
        response = self._call("cancel", lambda: self._kernels.cancel_kernel_session(request))
        if response is not None and response.error_message:
            raise KaggleError(f"Kaggle refused to cancel session {session_id}: {response.error_message}")

    def gpu_quota(self) -> Quota | None:
        """This week's GPU quota, or None when the server does not say."""
        from kagglesdk.kernels.types.kernels_api_service import ApiGetAcceleratorQuotaStatisticsRequest

        response = self._call("GPU quota query", lambda: self._kernels.get_accelerator_quota_statistics(
            ApiGetAcceleratorQuotaStatisticsRequest()))
        quota = response.gpu_quota
        if quota is None or quota.total_time_allowed is None:
            return None
        # Counted as the official CLI counts it (kaggle_api_extended.py quota_view_cli): used is time_used,
        # left is total minus used. time_reserved ("reserved by currently-running sessions", kagglesdk
        # ApiAcceleratorQuota) is kept beside it, not added: the running sessions' time is not charged twice.
        used = quota.time_used.total_seconds() if quota.time_used else 0.0
        reserved = quota.time_reserved.total_seconds() if quota.time_reserved else 0.0
        refresh = response.quota_refresh_time.isoformat() if response.quota_refresh_time else ""
        return Quota(used, quota.total_time_allowed.total_seconds(), refresh, reserved)

    def _official_api(self) -> Any:
        if not hasattr(self, "_api"):
            api = kaggle_api_class()()
            api.config_values = {}
            self._api = api
        return self._api


def connect(environ: Mapping[str, str] | None = None, retry: RetryPolicy | None = None) -> KaggleKernels:
    """A KaggleKernels for the credentials and endpoint of the environment."""
    return KaggleKernels(load_credentials(environ), environ=environ, retry=retry)


def _http_message(e: Any) -> str:
    """The server's own message for an HTTP error, else the exception text. Kaggle answers errors in the
    Google API form {"error": {"code", "message", "status"}}; the SDK (kaggle_http_client.py
    _prepare_response) reads only a top-level {"code", "message"}, so both forms are read here."""
    response = getattr(e, "response", None)
    try:
        body = response.json() if response is not None else {}
    except ValueError:
        body = {}
    if isinstance(body, dict):
        nested = body.get("error")
        message = nested.get("message") if isinstance(nested, dict) else body.get("message")
        if message:
            return str(message)[:300]
    text = str(e.args[0]) if e.args else ""
    return "" if text.startswith(("4", "5")) and " for url:" in text else text[:300]
