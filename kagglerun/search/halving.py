"""Successive halving and the budget, as pure functions: which trials continue to the next rung, what a
schedule costs, how many trials a budget affords. No files, no network: the driver carries them out."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def kept_count(n: int, keep: float) -> int:
    """How many of `n` trials that finished a rung continue: the `keep` fraction, rounded up, at least one."""
    return 0 if n <= 0 else max(1, min(n, math.ceil(n * keep - 1e-9)))


def promote(values: Mapping[int, float | None], keep: float) -> list[int]:
    """The trials (by number) that continue: the best `keep` fraction of those with a value (ties: the lower
    number first); trials without a value (failed) never continue."""
    scored = sorted(((v, n) for n, v in values.items() if v is not None), key=lambda vn: (-vn[0], vn[1]))
    return sorted(n for _, n in scored[:kept_count(len(scored), keep)])


def rung_sizes(n: int, rungs: Sequence[int], keep: float) -> list[int]:
    """Trials that train each rung when `n` start and every rung keeps its best fraction."""
    sizes: list[int] = []
    for i in range(len(rungs)):
        sizes.append(n if i == 0 else kept_count(sizes[-1], keep))
    return sizes


def schedule_seconds(n: int, rungs: Sequence[int], keep: float, epoch_seconds: float, startup_seconds: float) -> float:
    """What `n` trials cost through every rung: each rung a session per trial, training the epochs it adds."""
    total, previous = 0.0, 0
    for size, epochs in zip(rung_sizes(n, rungs, keep), rungs, strict=True):
        total += size * (startup_seconds + (epochs - previous) * epoch_seconds)
        previous = epochs
    return total


def trials_within(budget_seconds: float, trials: int, rungs: Sequence[int], keep: float, epoch_seconds: float,
                  startup_seconds: float) -> int:
    """The most trials (up to `trials`) whose whole schedule fits in `budget_seconds`."""
    fits = 0
    for n in range(1, trials + 1):
        if schedule_seconds(n, rungs, keep, epoch_seconds, startup_seconds) <= budget_seconds:
            fits = n
        else:
            break
    return fits


def affordable(costs: Sequence[float], spent_seconds: float, budget_seconds: float) -> int:
    """How many of the next sessions (costs in order, best trial first) fit in what is left of the budget."""
    n = 0
    for cost in costs:
        if spent_seconds + cost > budget_seconds:
            break
        spent_seconds += cost
        n += 1
    return n
