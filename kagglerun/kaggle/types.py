"""What Kaggle's kernels API answers, in our terms: push results, session states, output files, quota."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import KaggleError
from ..states import FINISHED, KernelState

# "Maximum batch GPU session count of 2 reached." (public reports; the emulator says the same), and its CPU
# twin "Maximum batch CPU session count of N reached.": either means no session can start until one ends.
SESSION_CAP = re.compile(r"maximum batch (gpu|cpu|tpu) session count", re.IGNORECASE)


def is_session_cap(message: str) -> bool:
    """Whether Kaggle's message refuses a session because too many of that kind already run."""
    return bool(SESSION_CAP.search(message or ""))


@dataclass(frozen=True)
class PushResult:
    kernel: str  # owner/slug
    version: int
    url: str  # the kernel's page; it names no session (ApiSaveKernelResponse has no session id)
    # Sources Kaggle refused ({"kernel": ["owner/slug"], "dataset": [...], "tags": [...]}): the version
    # exists all the same, without them (the official CLI prints them as warnings)
    invalid: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class KernelVersion:
    """A kernel's current version on Kaggle and when it last ran (ISO time; empty when not said)."""

    version: int
    time: str = ""
    kernel_sources: tuple[str, ...] = ()  # the kernels its current version was given as inputs


# How Kaggle says why a session ended. A session killed at the time limit ends CANCEL_ACKNOWLEDGED with the
# first (issue 12's review of Kaggle's answers); out of memory, the second (Kaggle's editor's wording);
# a cancel asked for, the third (what the emulator says; Kaggle's exact wording is unverified).
TIME_LIMIT_TEXT = "exceeded the max allowed execution duration"
OOM_TEXTS = ("allocate more memory than is available", "out of memory", "outofmemoryerror")
CANCEL_TEXT = "requested cancel"


def session_cause(state: str, failure: str) -> str:
    """Why a session ended, in words, from Kaggle's state and failure message; empty when it completed
    or is still going."""
    lowered = (failure or "").lower()
    if TIME_LIMIT_TEXT in lowered:
        return "stopped at Kaggle's time limit"
    if any(t in lowered for t in OOM_TEXTS):
        return "out of memory"
    if state == KernelState.CANCEL_ACKNOWLEDGED:
        return "cancelled" if CANCEL_TEXT in lowered or not lowered else "stopped by Kaggle"
    if state == KernelState.ERROR:
        return "failed"
    return ""


@dataclass(frozen=True)
class SessionStatus:
    state: KernelState
    failure: str = ""

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def cause(self) -> str:
        return session_cause(self.state, self.failure)


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
    used_seconds: float  # time_used, as the official CLI counts it
    total_seconds: float
    refresh: str = ""  # when the weekly window resets, as the server says
    reserved_seconds: float = 0.0  # time_reserved by running sessions: shown, not added to used

    @property
    def left_seconds(self) -> float:
        return max(0.0, self.total_seconds - self.used_seconds)


def split_kernel(kernel: str) -> tuple[str, str]:
    owner, _, slug = kernel.partition("/")
    if not owner or not slug or "/" in slug:
        raise KaggleError(f"kernel id {kernel!r} is not owner/slug")
    return owner, slug


class DownloadFailed(Exception):
    """One download attempt failed in a way worth retrying (bad status, short or broken body)."""

    def __init__(self, message: str, status: int = 0, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after
