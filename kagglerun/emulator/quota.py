"""GPU quota as Kaggle counts it: per user, the sessions of the week starting Saturday 00:00 UTC.

`time_used` is the time consumed this week, the running sessions' time so far included; `time_reserved` is
the part of it held by running sessions (kagglesdk ApiAcceleratorQuota: "reserved by currently-running
sessions"). The official CLI shows used = time_used and left = total - used (kaggle_api_extended.py
quota_view_cli), so the two are not added. A session is never stopped because the quota ran out: the quota
refuses new GPU sessions only (how far past it Kaggle lets a running one go is unverified)."""

from __future__ import annotations

import datetime as dt
import time

from .config import EmulatorConfig
from .store import CANCEL_REQUESTED, ENDED, RUNNING, State


def quota_seconds(state: State, config: EmulatorConfig, user: str) -> tuple[float, float, float]:
    """(used this week, running ones included; the part of it running sessions hold; allowed), in seconds."""
    now, week = time.time(), week_start(time.time())
    used = reserved = 0.0
    for s in state.sessions.values():
        if s.owner != user or not s.gpu:
            continue
        if s.status in ENDED and (s.ended_at or 0) >= week:
            used += s.charged_s
        elif s.status in (RUNNING, CANCEL_REQUESTED) and s.started_at:
            reserved += now - s.started_at
    return used + reserved, reserved, config.gpu_quota_hours * 3600.0


def quota_exhausted(state: State, config: EmulatorConfig, user: str) -> bool:
    used, _, total = quota_seconds(state, config, user)
    return used >= total


def week_start(now: float) -> float:
    """Kaggle's GPU week starts on Saturday 00:00 UTC."""
    day = dt.datetime.fromtimestamp(now, dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (day - dt.timedelta(days=(day.weekday() - 5) % 7)).timestamp()


def wire_duration(seconds: float) -> str:
    """A protobuf JSON duration. (kagglesdk's own serializer drops whole days; its parser reads this fine.)"""
    return f"{seconds:.3f}s" if seconds % 1 else f"{int(seconds)}s"
