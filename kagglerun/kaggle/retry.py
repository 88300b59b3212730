"""The one retry policy: bounded attempts, exponential backoff with jitter, and the server's Retry-After
honoured (up to a cap). The API calls and the output downloads both use it."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any


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

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """The pause before retry number `attempt`: what the server asked for (Retry-After, capped), else
        the backoff."""
        return self.backoff(attempt) if retry_after is None else min(retry_after, self.retry_after_cap)


class TimeoutAdapter:
    """Gives every request of a requests.Session a timeout; the SDK sends without one."""

    @staticmethod
    def mount(session: Any, timeout: float) -> None:
        from requests.adapters import HTTPAdapter

        class Adapter(HTTPAdapter):
            def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
                if kwargs.get("timeout") is None:
                    kwargs["timeout"] = timeout
                return super().send(request, **kwargs)

        session.mount("http://", Adapter())
        session.mount("https://", Adapter())


def retry_after(response: Any) -> float | None:
    """A response's Retry-After in seconds (a number or an HTTP date), None when absent or unreadable."""
    value = response.headers.get("Retry-After") if response is not None else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def connection_refused(e: BaseException) -> bool:
    """Whether a connection error (or any error it wraps) says nothing listens there."""
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
