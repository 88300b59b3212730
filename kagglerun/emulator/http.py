"""The Kaggle emulator's HTTP side: the request handler that speaks Kaggle's kernels API, and its server.

Exactly what the official SDK (kagglesdk) sends: JSON POSTs to
`/api/v1/kernels.KernelsApiService/<Method>` with camelCase fields. Errors come in Kaggle's nested form
`{"error": {"code": N, "message": ..., "status": "PERMISSION_DENIED"}}` (the Google API error shape; the SDK's
own check reads only a top-level "code", so it raises them through raise_for_status, without the message). Implemented methods: SaveKernel, GetKernelSessionStatus,
ListKernelSessionOutput (paged by pageSize/pageToken; each file's `url` is an unauthenticated signed link
to this server, as Kaggle's are to storage, served with ranges; `log` on the first page),
GetKernelSessionLogsStream, GetKernel, plus the client's `GET /api/v1/kernels/logs/stream/{owner}/{slug}` (SSE while
a session runs, the JSON log once it has ended), CancelKernelSession and GetAcceleratorQuotaStatistics; and
security.OAuthService/IntrospectToken, which the official client asks whose API token it holds.
`GET /emulator/stats` is the emulator's own: peak of running sessions, fault counts. Other methods answer
404. Request-level faults (faults.py) are injected here: before a request is handled, and after (the answer
lost on its way back: `drop_after`, `http_500_after`). Only 127.0.0.1 is bound.
"""

from __future__ import annotations

import email.utils
import http.server
import json
import logging
import socket
import threading
import time
import urllib.parse
from typing import Any

from ..errors import KaggleError
from .service import FILES_PREFIX, ApiError, KernelsService

log = logging.getLogger("kagglerun.emulator")

RPC_PREFIX = "/api/v1/kernels.KernelsApiService/"
INTROSPECT_PATH = "/api/v1/security.OAuthService/IntrospectToken"
# The status names of Google's API errors (google.rpc.Code), as Kaggle's nested errors carry them.
_STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
LOG_STREAM_PREFIX = "/api/v1/kernels/logs/stream/"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's requests session expects
    server: EmulatorServer

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
        status = _STATUS_NAMES.get(e.code, "UNKNOWN")
        self._json(e.code, {"error": {"code": e.code, "message": e.message, "status": status}}, e.headers)

    def _base_url(self) -> str:
        return f"http://{self.headers.get('Host') or f'127.0.0.1:{self.server.server_port}'}"

    def _inject(self) -> bool:
        """Maybe inject a request-level fault; True when the request was answered (or dropped) by it."""
        em = self.server.service
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
        if path == INTROSPECT_PATH:
            if self._inject():
                return
            try:
                return self._json(200, self.server.service.introspect(json.loads(raw or b"{}")))
            except ValueError:
                return self._error(ApiError(400, "The request body is not JSON"))
        if not path.startswith(RPC_PREFIX):
            return self._error(ApiError(404, f"No such endpoint: {path}"))
        if self._inject():
            return
        em = self.server.service
        method = path[len(RPC_PREFIX):]
        try:
            user = em.authenticate(self.headers.get("Authorization"))
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                raise ApiError(400, "The request body is not JSON") from None
            if method == "GetKernelSessionLogsStream":
                return self._logs(em.log_session_id(user, body))
            answer = self._answer(method, user, body)
        except ApiError as e:
            return self._error(e)
        if not self._lose_answer(method):
            self._json(200, answer)

    def _answer(self, method: str, user: str, body: dict[str, Any]) -> Any:
        em = self.server.service
        if method == "SaveKernel":
            return em.save_kernel(user, body, self._base_url())
        if method == "GetKernel":
            return em.get_kernel(user, body)
        if method == "GetKernelSessionStatus":
            return em.session_status(user, body)
        if method == "ListKernelSessionOutput":
            return em.list_output(user, body, self._base_url())
        if method == "CancelKernelSession":
            return em.cancel(user, body)
        if method == "GetAcceleratorQuotaStatistics":
            return em.quota(user)
        raise ApiError(404, f"Method {method} is not implemented by the emulator")

    def _lose_answer(self, method: str) -> bool:
        """Maybe lose the answer of a request that was handled (its effect stays); True when lost."""
        fault = self.server.service.faults.after_fault(method)
        if fault is None:
            return False
        log.info("fault: %s after %s was handled", fault, method)
        if fault == "drop_after":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        else:
            self._error(ApiError(500, "Internal server error"))
        return True

    def do_GET(self) -> None:
        split = urllib.parse.urlsplit(self.path)
        path = split.path
        em = self.server.service
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
                label = query.get("versionLabel")
                body: dict[str, Any] = {"userName": owner, "kernelSlug": slug, "versionLabel": label[0] if label else None}
                return self._logs(em.log_session_id(user, body))
            except ApiError as e:
                return self._error(e)
        self._error(ApiError(404, f"No such endpoint: {path}"))

    do_HEAD = do_GET

    def _logs(self, sid: int) -> None:
        """The persisted JSON log once the session has ended; while it runs, an SSE stream that ends with it."""
        em = self.server.service
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
            path = self.server.service.output_path(int(sid), signature, urllib.parse.unquote(quoted))
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
        if self.command == "GET" and len(data) > 1 and self.server.service.faults.roll("truncate"):
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


class EmulatorServer(http.server.ThreadingHTTPServer):
    """A thread per request on 127.0.0.1; `stopping` ends the log streams still open."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, service: KernelsService, port: int):
        self.service = service
        self.stopping = threading.Event()
        super().__init__(("127.0.0.1", port), _Handler)


def bind(service: KernelsService, port: int) -> EmulatorServer:
    """A server for `service` listening on 127.0.0.1:`port` (not yet serving), else a KaggleError."""
    try:
        return EmulatorServer(service, port)
    except OSError as e:
        raise KaggleError(f"the emulator cannot listen on 127.0.0.1:{port}: {e.strerror or e}") from None
