"""The one module that touches the official `kaggle` package: imported lazily, its quirks turned into our errors."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import random
import re
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import CredentialsError, KaggleError, KernelError, RenderError, SessionCapError


def _kaggle_api_class():
    """Import `KaggleApi` without letting the package's import-time authentication print or exit."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), _no_config_dir_creation():
        try:
            from kaggle.api.kaggle_api_extended import KaggleApi
        except SystemExit:  # older releases exit(1) from kaggle/__init__ without credentials
            from kaggle.api.kaggle_api_extended import KaggleApi
    return KaggleApi


@contextlib.contextmanager
def _no_config_dir_creation():
    """kaggle 2.2.5 creates ~/.kaggle (or ~/.config/kaggle) when imported. We read credentials ourselves,
    so on a machine without that folder (a fresh demo machine) point the import at a throwaway one."""
    if "kaggle.api.kaggle_api_extended" in sys.modules or os.environ.get("KAGGLE_CONFIG_DIR") \
            or kaggle_json_path().parent.exists():
        yield
        return
    with tempfile.TemporaryDirectory(prefix="kagglerun-kaggle-config-") as scratch:
        os.environ["KAGGLE_CONFIG_DIR"] = scratch
        try:
            yield
        finally:
            os.environ.pop("KAGGLE_CONFIG_DIR", None)


class _CapturedPush(Exception):
    """Raised in place of the network call: validation passed and the request was built."""

    def __init__(self, request: Any):
        super().__init__("captured")
        self.request = request


class _CaptureClient:
    """Stands in for the SDK client inside `KaggleApi.kernels_push`, so the client's own checks run for real."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @property
    def kernels(self):
        return self

    @property
    def kernels_api_client(self):
        return self

    def save_kernel(self, request):
        raise _CapturedPush(request)


def validate_kernel_folder(folder: Path) -> Any:
    """Run the official client's push-time validation of `folder` (kernel-metadata.json and the code file)
    without sending anything. Returns the ApiSaveKernelRequest the client would send; raises RenderError
    with the client's own message when it would refuse the push."""
    api_class = _kaggle_api_class()

    class _ValidatingApi(api_class):  # type: ignore[misc, valid-type]
        def build_kaggle_client(self):
            return _CaptureClient()

    api = _ValidatingApi()
    api.config_values = {}
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            api.kernels_push(str(folder))
    except _CapturedPush as captured:
        warning = out.getvalue().strip()
        if warning:  # the client only warns when the title does not slugify to the id; we refuse
            raise RenderError(f"{folder}: kaggle client: {' '.join(warning.split())}")
        return captured.request
    except ValueError as e:
        raise RenderError(f"{folder}: kaggle client refuses this push: {e}") from None
    raise RenderError(f"{folder}: kaggle client did not reach the push request")


# --- credentials -----------------------------------------------------------------------------------------

CREDENTIALS_HELP = (
    "set KAGGLE_USERNAME and KAGGLE_KEY, or save the token from kaggle.com → Settings → API → Create New Token "
    "as ~/.kaggle/kaggle.json and run `chmod 600 ~/.kaggle/kaggle.json`"
)


@dataclass(frozen=True)
class Credentials:
    """A Kaggle user name and API key, and where they came from (for messages; the key never is)."""

    username: str
    key: str = field(repr=False)
    source: str = "KAGGLE_USERNAME/KAGGLE_KEY"


def kaggle_json_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where the official client looks for kaggle.json: $KAGGLE_CONFIG_DIR, ~/.kaggle, then ~/.config/kaggle."""
    env = os.environ if environ is None else environ
    if env.get("KAGGLE_CONFIG_DIR"):
        return Path(env["KAGGLE_CONFIG_DIR"]) / "kaggle.json"
    home = Path(env.get("HOME") or Path.home())
    legacy = home / ".kaggle"
    if legacy.exists() or not sys.platform.startswith("linux"):
        return legacy / "kaggle.json"
    return Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle" / "kaggle.json"


def load_credentials(environ: Mapping[str, str] | None = None) -> Credentials:
    """Credentials from KAGGLE_USERNAME/KAGGLE_KEY, else from kaggle.json.

    Unlike the official client, which only warns, a kaggle.json that other users can read is refused:
    the key in it spends the owner's GPU quota."""
    env = os.environ if environ is None else environ
    user, key = env.get("KAGGLE_USERNAME", ""), env.get("KAGGLE_KEY", "")
    if user and key:
        return Credentials(user, key)
    if user or key:
        missing = "KAGGLE_KEY" if user else "KAGGLE_USERNAME"
        raise CredentialsError(f"{missing} is not set while {'KAGGLE_USERNAME' if user else 'KAGGLE_KEY'} is: "
                               "set both, or neither to use kaggle.json")
    path = kaggle_json_path(env)
    if not path.exists():
        raise CredentialsError(f"no Kaggle credentials: {CREDENTIALS_HELP}")
    if os.name == "posix" and path.stat().st_mode & 0o044:
        raise CredentialsError(f"{path} is readable by other users; run `chmod 600 {path}` and try again")
    try:
        data = json.loads(path.read_text())
        return Credentials(str(data["username"]), str(data["key"]), str(path))
    except PermissionError:
        raise CredentialsError(f"cannot read {path}: permission denied (it must belong to you, mode 600)") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise CredentialsError(f"{path} is not a Kaggle API token file (a JSON object with \"username\" and "
                               "\"key\"); download a new one from kaggle.com → Settings → API") from None


# --- endpoint and retries ------------------------------------------------------------------------------

ENDPOINT_ENV = "KAGGLERUN_KAGGLE_ENDPOINT"  # an explicit base URL, e.g. an emulator on a free port in tests


def resolve_endpoint(environ: Mapping[str, str] | None = None) -> tuple[Any, str]:
    """The SDK environment and base URL: $KAGGLERUN_KAGGLE_ENDPOINT if set, else the SDK's own choice from
    KAGGLE_API_ENVIRONMENT (TEST: http://localhost:7777; unset: production)."""
    from kagglesdk.kaggle_env import KaggleEnv, get_endpoint, get_env

    env = os.environ if environ is None else environ
    override = env.get(ENDPOINT_ENV, "").strip()
    if override:
        if not re.match(r"^https?://[^/\s]+", override):
            raise KaggleError(f"{ENDPOINT_ENV}={override!r} is not an http(s) URL")
        # TEST (a non-production environment) makes the SDK put RPCs under <endpoint>/api/v1/, as an emulator serves them.
        return KaggleEnv.TEST, override.rstrip("/")
    try:
        sdk_env = get_env()
    except Exception as e:  # the SDK raises a bare Exception for an unknown value
        raise KaggleError(f"{e}; use PROD or TEST") from None
    return sdk_env, get_endpoint(sdk_env)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and jitter for transient failures (5xx, dropped connections)
    and for 429, where the server's Retry-After is respected (up to `retry_after_cap`)."""

    attempts: int = 6
    base_seconds: float = 0.5
    cap_seconds: float = 15.0
    retry_after_cap: float = 120.0
    timeout_seconds: float = 60.0  # per request: a slow server must not hang the client forever

    def backoff(self, attempt: int) -> float:
        """Delay before retry number `attempt` (1-based): half fixed, half random ("equal jitter"), so many
        clients that failed together do not retry together."""
        ceiling = min(self.cap_seconds, self.base_seconds * 2 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


class _TimeoutAdapter:
    """Gives every request of a requests.Session a timeout; the SDK sends without one."""

    @staticmethod
    def mount(session: Any, timeout: float) -> None:
        from requests.adapters import HTTPAdapter

        class Adapter(HTTPAdapter):
            def send(self, request, **kwargs):
                if kwargs.get("timeout") is None:
                    kwargs["timeout"] = timeout
                return super().send(request, **kwargs)

        session.mount("http://", Adapter())
        session.mount("https://", Adapter())


# --- what the API returns, in our terms ----------------------------------------------------------------

FINISHED_STATES = ("complete", "error", "cancel_acknowledged")
SESSION_CAP_MESSAGE = "maximum batch gpu session count"


@dataclass(frozen=True)
class PushResult:
    kernel: str  # owner/slug
    version: int
    url: str
    session_id: int  # what CancelKernelSession needs: the url's scriptVersionId (0 when absent)


@dataclass(frozen=True)
class SessionStatus:
    state: str  # queued, running, complete, error, cancel_requested, cancel_acknowledged
    failure: str = ""

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES


@dataclass(frozen=True)
class OutputFile:
    name: str  # relative to /kaggle/working, as the server reports it (not trusted)
    url: str


@dataclass(frozen=True)
class Outputs:
    files: list[OutputFile]
    log: str


@dataclass(frozen=True)
class Quota:
    used_seconds: float
    total_seconds: float
    refresh: str = ""  # when the weekly window resets, as the server says

    @property
    def left_seconds(self) -> float:
        return max(0.0, self.total_seconds - self.used_seconds)


def split_kernel(kernel: str) -> tuple[str, str]:
    owner, _, slug = kernel.partition("/")
    if not owner or not slug or "/" in slug:
        raise KaggleError(f"kernel id {kernel!r} is not owner/slug")
    return owner, slug


# --- the client ----------------------------------------------------------------------------------------

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
        self._client = self._build_client()

    @property
    def username(self) -> str:
        return self.credentials.username

    def _build_client(self) -> Any:
        from kagglesdk.kaggle_client import KaggleClient

        client = KaggleClient(env=self.sdk_env, username=self.credentials.username,
                              password=self.credentials.key, user_agent="kagglerun")
        http = client._http_client
        http._endpoint = self.endpoint  # the SDK derives it from the environment alone; honour the override
        http._init_session()
        # The SDK prefers an ambient access token (KAGGLE_API_TOKEN, ~/.kaggle/access_token) over the user name
        # and key it was given; use what we were given, so a demo never sends a real token to an emulator.
        http._session.auth = (self.credentials.username, self.credentials.key)
        _TimeoutAdapter.mount(http._session, self.retry.timeout_seconds)
        return client

    @property
    def _kernels(self) -> Any:
        return self._client.kernels.kernels_api_client

    # -- the retry loop ---------------------------------------------------------------------------------

    def _call(self, what: str, func: Callable[[], Any], kernel: str = "") -> Any:
        """Run one request with bounded retries; `what` names it in messages ("push of bsln_4")."""
        import requests

        for attempt in range(1, self.retry.attempts + 1):
            last = attempt == self.retry.attempts
            try:
                return func()
            except requests.HTTPError as e:
                status = e.response.status_code if e.response is not None else 0
                message = _http_message(e)
                if status == 429 and not last:
                    delay = _retry_after(e.response)
                    delay = self.retry.backoff(attempt) if delay is None else min(delay, self.retry.retry_after_cap)
                    self.counters["retried_429"] += 1
                    self._sleep(delay)
                    continue
                if status >= 500 and not last:
                    self.counters[f"retried_{status}"] += 1
                    self._sleep(self.retry.backoff(attempt))
                    continue
                raise self._http_error(what, status, message, kernel) from None
            except (requests.ConnectionError, requests.Timeout) as e:
                refused = _connection_refused(e)
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
            return CredentialsError(f"Kaggle refused the credentials of {self.username!r} from "
                                    f"{self.credentials.source} (HTTP 401){detail}: check the user name and key")
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
        if SESSION_CAP_MESSAGE in message.lower():
            return SessionCapError(f"Kaggle rejected the {what}: {message}")
        return KaggleError(f"Kaggle rejected the {what} (HTTP {status}){detail}")

    # -- the API ----------------------------------------------------------------------------------------

    def push(self, folder: Path) -> PushResult:
        """Push a rendered kernel folder and start a new version. The official client's own validation and
        request building run first (`validate_kernel_folder`), so a bad folder fails before the network."""
        folder = Path(folder)
        request = validate_kernel_folder(folder)
        kernel = request.slug
        response = self._call(f"push of {folder.name}", lambda: self._kernels.save_kernel(request), kernel)
        # The server reports many refusals inside a 200 response; the official CLI prints them and exits 0.
        if response.error:
            if SESSION_CAP_MESSAGE in response.error.lower():
                raise SessionCapError(f"Kaggle rejected the push of {folder.name}: {response.error}")
            raise KaggleError(f"Kaggle rejected the push of {folder.name}: {response.error}")
        invalid = {name: getattr(response, f"invalid_{name}_sources") for name in ("dataset", "kernel",
                   "competition", "model")}
        invalid = {k: v for k, v in invalid.items() if v}
        if invalid or response.invalid_tags:
            listed = "; ".join(f"{k} sources {', '.join(v)}" for k, v in invalid.items())
            if response.invalid_tags:
                listed = "; ".join(filter(None, [listed, f"tags {', '.join(response.invalid_tags)}"]))
            raise KaggleError(f"Kaggle rejected the push of {folder.name}: invalid {listed}")
        if not response.version_number:
            raise KaggleError(f"Kaggle accepted the push of {folder.name} but returned no version number")
        ref = (response.ref or kernel).strip("/")
        if ref.count("/") != 1:  # the server may answer with a path such as /code/owner/slug
            ref = "/".join(ref.split("/")[-2:])
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(response.url or "").query)
        session = (query.get("scriptVersionId") or ["0"])[0]
        return PushResult(ref, int(response.version_number), response.url or "", int(session) if session.isdigit() else 0)

    def status(self, kernel: str, version: int | None = None) -> SessionStatus:
        """The state of the kernel's session (of `version` when given, else the latest)."""
        from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelSessionStatusRequest

        owner, slug = split_kernel(kernel)
        request = ApiGetKernelSessionStatusRequest()
        request.user_name, request.kernel_slug = owner, slug
        if version:
            request.version_label = f"v{version}"
        response = self._call(f"status of {kernel}", lambda: self._kernels.get_kernel_session_status(request), kernel)
        state = response.status.name.lower() if response.status is not None else "unknown"
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
                                  lambda: self._kernels.list_kernel_session_output(request), kernel)
            files.extend(OutputFile(f.file_name, f.url) for f in response.files or [] if f is not None)
            log = log or response.log or ""
            token = response.next_page_token or ""
            if not token or token in seen:  # a server repeating a token must not loop us forever
                return Outputs(files, log)
            seen.add(token)

    def log(self, kernel: str, version: int | None = None) -> str:
        """The session's log as plain text (Kaggle stores it as JSON events; their `data` is joined)."""
        return log_text(self.outputs(kernel, version, page_size=1).log)

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
                                 retry_after=_retry_after(e.response) if status == 429 else None) from None
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
        used = (quota.time_used.total_seconds() if quota.time_used else 0.0)
        used += quota.time_reserved.total_seconds() if quota.time_reserved else 0.0
        refresh = response.quota_refresh_time.isoformat() if response.quota_refresh_time else ""
        return Quota(used, quota.total_time_allowed.total_seconds(), refresh)

    def _official_api(self) -> Any:
        if not hasattr(self, "_api"):
            api = _kaggle_api_class()()
            api.config_values = {}
            self._api = api
        return self._api


class DownloadFailed(Exception):
    """One download attempt failed in a way worth retrying (bad status, short or broken body)."""

    def __init__(self, message: str, status: int = 0, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


def connect(environ: Mapping[str, str] | None = None, retry: RetryPolicy | None = None) -> KaggleKernels:
    """A KaggleKernels for the credentials and endpoint of the environment."""
    return KaggleKernels(load_credentials(environ), environ=environ, retry=retry)


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # tracebacks in notebook logs come coloured


def log_text(raw: str) -> str:
    """Kaggle's log is a JSON list of {stream_name, time, data} events; return the plain text they carry."""
    text = raw
    if raw.strip().startswith("["):
        try:
            events = json.loads(raw)
        except ValueError:
            events = None
        if isinstance(events, list):
            text = "".join(str(e.get("data", "")) for e in events if isinstance(e, dict))
    return _ANSI_ESCAPE.sub("", text)


def _http_message(e: Any) -> str:
    """The server's own message for an HTTP error (JSON "message" field, else the exception text)."""
    response = getattr(e, "response", None)
    try:
        body = response.json() if response is not None else {}
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])[:300]
    except ValueError:
        pass
    text = str(e.args[0]) if e.args else ""
    return "" if text.startswith(("4", "5")) and " for url:" in text else text[:300]


def _retry_after(response: Any) -> float | None:
    value = response.headers.get("Retry-After") if response is not None else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _connection_refused(e: BaseException) -> bool:
    seen: set[int] = set()
    stack: list[Any] = [e]
    while stack:
        err = stack.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, ConnectionRefusedError) or "Connection refused" in str(err):
            return True
        if isinstance(err, BaseException):
            stack.extend([err.__cause__, err.__context__, *[a for a in err.args if isinstance(a, BaseException)]])
            stack.append(getattr(err, "reason", None))
    return False
