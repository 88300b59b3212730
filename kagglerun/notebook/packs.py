"""Packs: several experiments in one kernel, one GPU each on Kaggle's T4 x2 (its quota counts session time,
not GPUs). What a push or render was asked for, the pack's own name and settings, and the rule that an
experiment goes into one kernel at a time."""

from __future__ import annotations

import hashlib

from ..errors import RenderError
from ..experiments import Settings
from ..experiments.store import PACK_PREFIX
from ..workspace import Workspace

__all__ = ["PACK_PREFIX", "check_packs", "pack_name", "pack_settings", "select_runs"]


def pack_name(names: list[str]) -> str:
    """The kernel name of a pack: pack_<a>_<b>, shortened with a hash when long (a Kaggle slug has 50 characters)."""
    name = PACK_PREFIX + "_".join(names)
    if len(name) > 38:
        digest = hashlib.sha256("\0".join(names).encode()).hexdigest()[:8]
        name = f"{PACK_PREFIX}{names[0][:24].rstrip('_')}_{digest}"
    return name


def pack_settings(members: list[Settings]) -> Settings:
    """The pack's own settings, for its kernel metadata and header: the first member's, named for the pack,
    with the members' Kaggle sections merged (they must agree on the machine; inputs are joined)."""
    if len(members) < 2 or len({m.name for m in members}) != len(members):
        raise RenderError(f"a pack needs two or more different experiments, got {[m.name for m in members]}")
    for m in members:
        if m.training.devices != 1:
            raise RenderError(f"{m.name}: training.devices = {m.training.devices!r} and packing refuse each other "
                              "(a pack gives each member one GPU); push it alone")
    first = members[0]
    for m in members[1:]:
        for key in ("gpu", "machine_shape", "private"):
            if getattr(m.kaggle, key) != getattr(first.kaggle, key):
                raise RenderError(f"{m.name}: kaggle.{key} differs from {first.name}'s; packed experiments share one machine")

    def joined(key: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v for m in members for v in getattr(m.kaggle, key)))

    kaggle = first.kaggle.model_copy(update={
        "slug": None, "title": None, "internet": any(m.kaggle.internet for m in members),
        "dataset_sources": joined("dataset_sources"), "kernel_sources": joined("kernel_sources"),
        "competition_sources": joined("competition_sources"), "model_sources": joined("model_sources")})
    names = [m.name for m in members]
    return first.model_copy(update={"name": pack_name(names), "kaggle": kaggle,
                                    "description": "packed: " + ", ".join(names) + " (one GPU each)"})


def select_runs(ws: Workspace, patterns: tuple[str, ...] | list[str], all_: bool = False,
                pack_specs: tuple[str, ...] | list[str] = (), pack_all: bool = False) -> tuple[list[str], list[list[str]]]:
    """What `render` and `push` were asked for: (experiments alone, packs of experiments).

    Each pack spec is "a,b" (names or globs); `pack_all` pairs the selected experiments two by two in
    order (an odd one out goes alone). Experiments may be left unnamed when packs are given."""
    store = ws.store()
    packs = [store.select([p.strip() for p in spec.split(",") if p.strip()]) for spec in pack_specs]
    names = store.select(patterns, all_) if patterns or all_ or not packs else []
    if pack_all:
        paired = len(names) - len(names) % 2
        packs += [names[i:i + 2] for i in range(0, paired, 2)]
        names = names[paired:]
    return names, packs  # render_experiments checks them


def check_packs(names: list[str], packs: list[list[str]]) -> None:
    """An experiment goes into one kernel per push: alone or in one pack."""
    seen = set(names)
    for group in packs:
        twice = seen.intersection(group)
        if twice:
            raise RenderError(f"{', '.join(sorted(twice))}: named twice (alone or in another pack); "
                              "an experiment goes into one kernel at a time")
        seen.update(group)
