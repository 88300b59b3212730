"""`--set` on the command line: the experiments it makes of the selected ones, known to a workspace."""

from __future__ import annotations

from ..experiments.sweep import Overrides, override_points, parse_overrides
from ..workspace import Workspace


def with_sets(ws: Workspace, names: list[str], items: tuple[str, ...] | list[str]) -> tuple[Workspace, list[str]]:
    """`--set` items applied to the selected experiments: the workspace knowing the experiments they make,
    and those experiments' names (each validated, so a bad key is one line naming it)."""
    if not items:
        return ws, names
    parsed = parse_overrides(items)
    store = ws.store()
    points: dict[str, Overrides] = {}
    chosen: list[str] = []
    for name in names:
        store.load(name)  # the experiment itself exists (a sweep's file is not one)
        for point, overrides in override_points(name, store.overrides_of(name), parsed):
            points[point] = overrides
            chosen.append(point)
    ws = ws.with_points(points)
    store = ws.store()
    for name in chosen:
        store.load(name)
    return ws, chosen
