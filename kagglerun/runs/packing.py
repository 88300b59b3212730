"""Packing by default: the members of a sweep (and other experiments named `<file>.<…>`) that ask for the
same GPU machine go two per T4 x2 kernel when pushed. A member pushed before keeps its kernel (its pack,
or alone), so adding a value to a sweep packs only the new points and pushes none of the old ones again."""

from __future__ import annotations

from ..workspace import Workspace
from .ledger import Ledger


def pack_sweeps(ws: Workspace, names: list[str]) -> tuple[list[str], list[list[str]]]:
    """(experiments alone, packs of two) for `push` of `names` without --pack or --no-pack."""
    store = ws.store()
    entries = Ledger(ws.results).load()
    wanted = set(names)
    singles: list[str] = []
    packs: list[list[str]] = []
    placed: set[str] = set()
    by_machine: dict[tuple, list[str]] = {}
    for name in names:
        if name in placed:
            continue
        entry = entries.get(name)
        if entry is not None and entry.latest is not None:  # pushed before: the same kernel again
            members = list(entry.pack["members"]) if entry.pack else [name]
            if len(members) > 1 and wanted.issuperset(members) and not placed.intersection(members):
                packs.append(members)
                placed.update(members)
            else:
                singles.append(name)
                placed.add(name)
            continue
        s = store.load(name)
        if "." not in name or not s.kaggle.gpu:
            singles.append(name)
        else:
            key = (name.partition(".")[0], s.kaggle.machine_shape, s.kaggle.private)
            by_machine.setdefault(key, []).append(name)
        placed.add(name)
    for group in by_machine.values():
        paired = len(group) - len(group) % 2
        packs += [group[i:i + 2] for i in range(0, paired, 2)]
        singles += group[paired:]
    return singles, packs
