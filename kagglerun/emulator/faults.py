"""Fault injection for the Kaggle emulator: which faults, how often, and a seeded, counted dice roll.

Every fault is off (rate 0) by default. A rate is a probability per opportunity:
- per API request (before it is handled, so a retried request is safe): `http_500`, `http_503`,
  `http_429` (with a Retry-After of `retry_after` seconds), `drop` (the socket is closed without a
  response), `slow` (the response waits `slow_seconds`);
- per API request after it was handled (its effect stays, the answer is lost on its way back, so a
  retried push would make a second version): `drop_after` (the socket is closed), `http_500_after`
  (`after_only` = an RPC name such as "SaveKernel" keeps them to that method);
- per file download: `truncate` (fewer bytes than Content-Length, then the connection closes);
- per push: `cap_reject` (refused with Kaggle's session-cap message even below the cap);
- per session: `crash` (the kernel dies `crash_after` seconds into the run, ERROR), `oom` (killed as the
  out-of-memory killer would, `crash_after` seconds in, ERROR with Kaggle's memory message), `timeout` (the
  session is stopped at a time limit of `timeout_after` seconds: CANCEL_ACKNOWLEDGED with Kaggle's
  time-limit message, outputs so far kept);
- per output listing: `stale` (the previous finished version's outputs are served as the requested ones).
"""

from __future__ import annotations

import dataclasses
import random
import threading
from collections import Counter
from typing import Any

# The names a rate can be given for; `all=RATE` in a spec sets every one of them.
FAULTS = ("http_500", "http_503", "http_429", "drop", "slow", "truncate", "cap_reject", "crash", "oom", "timeout",
          "stale", "drop_after", "http_500_after")
_HTTP_FAULTS = ("drop", "http_500", "http_503", "http_429")
_AFTER_FAULTS = ("drop_after", "http_500_after")


@dataclasses.dataclass(frozen=True)
class FaultConfig:
    """Rates (0..1) of each fault, their parameters and the seed of the dice."""

    http_500: float = 0.0
    http_503: float = 0.0
    http_429: float = 0.0
    drop: float = 0.0
    slow: float = 0.0
    truncate: float = 0.0
    cap_reject: float = 0.0
    crash: float = 0.0
    oom: float = 0.0
    timeout: float = 0.0
    stale: float = 0.0
    drop_after: float = 0.0
    http_500_after: float = 0.0
    retry_after: float = 1.0  # seconds, sent as Retry-After with an injected 429
    slow_seconds: float = 1.0
    crash_after: float = 1.0  # seconds of running before an injected crash
    timeout_after: float = 2.0  # the time limit an injected timeout enforces, in seconds of running
    after_only: str = ""  # the one RPC whose answers drop_after / http_500_after lose (all when empty)
    seed: int | None = None

    def __post_init__(self):
        for name in FAULTS:
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault rate {name}={rate} is not between 0 and 1")

    @property
    def enabled(self) -> bool:
        return any(getattr(self, name) > 0 for name in FAULTS)

    @classmethod
    def parse(cls, spec: str | None, seed: int | None = None) -> FaultConfig:
        """Build from 'http_500=0.05,truncate=0.1,slow_seconds=2' (`all=RATE` sets every rate first)."""
        values: dict[str, Any] = {}
        fields = {f.name for f in dataclasses.fields(cls)} - {"seed", "after_only"}
        items = [item.strip() for item in (spec or "").split(",") if item.strip()]
        for item in sorted(items, key=lambda i: not i.startswith("all=")):  # `all` first, so others override it
            name, sep, value = item.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or (name != "all" and name not in fields):
                known = ", ".join(("all",) + tuple(sorted(fields)))
                raise ValueError(f"unknown fault setting {item!r}; known: {known}")
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"fault setting {item!r}: {value!r} is not a number") from None
            if name == "all":
                values.update({fault: number for fault in FAULTS})
            else:
                values[name] = number
        return cls(**values, seed=seed)


class FaultInjector:
    """Rolls seeded dice for each opportunity and counts the faults it injects (thread-safe)."""

    def __init__(self, config: FaultConfig):
        self.config = config
        self._random = random.Random(config.seed)
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def roll(self, fault: str) -> bool:
        """True (and counted) when `fault` strikes this time."""
        rate = getattr(self.config, fault)
        if rate <= 0:
            return False
        with self._lock:
            hit = self._random.random() < rate
            if hit:
                self.counts[fault] += 1
        return hit

    def http_fault(self) -> str | None:
        """The one request-level fault to inject now, if any: 'drop', 'http_500', 'http_503' or 'http_429'."""
        for fault in _HTTP_FAULTS:
            if self.roll(fault):
                return fault
        return None

    def after_fault(self, method: str) -> str | None:
        """The fault that loses the answer of `method`, handled, now, if any: 'drop_after' or 'http_500_after'."""
        if self.config.after_only not in ("", method):
            return None
        for fault in _AFTER_FAULTS:
            if self.roll(fault):
                return fault
        return None

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {fault: self.counts.get(fault, 0) for fault in FAULTS}
