"""What Kaggle's kernels API answers, in our terms: push results, session states, output files, quota."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import KaggleError
from ..states import FINISHED, KernelState

SESSION_CAP_MESSAGE = "maximum batch gpu session count"


@dataclass(frozen=True)
class PushResult:
    kernel: str  # owner/slug
    version: int
    url: str
    session_id: int  # what CancelKernelSession needs: the url's scriptVersionId (0 when absent)
    # Sources Kaggle refused ({"kernel": ["owner/slug"], "dataset": [...], "tags": [...]}): the version
    # exists all the same, without them (the official CLI prints them as warnings)
    invalid: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class KernelVersion:
    """A kernel's current version on Kaggle and when it last ran (ISO time; empty when not said)."""

    version: int
    time: str = ""
    kernel_sources: tuple[str, ...] = ()  # the kernels its current version was given as inputs


@dataclass(frozen=True)
class SessionStatus:
    state: KernelState
    failure: str = ""

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


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


class DownloadFailed(Exception):
    """One download attempt failed in a way worth retrying (bad status, short or broken body)."""

    def __init__(self, message: str, status: int = 0, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after
