"""Pooling: runs whose settings differ only in their seed become one column (mean ± std in the tables,
a band on the curves); columns come in report order."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .load import Result

UNGROUPED = "Other experiments"

# Keys that name or place a run rather than describe how it trained.
IDENTITY_KEYS = frozenset(
    {"name", "description", "kaggle.slug", "kaggle.title", "kaggle.owner", "report.label", "report.order",
     "report.also"}
)
# Keys a run may differ in and still be "the same experiment with another seed".
SEED_POOL_IGNORES = IDENTITY_KEYS | {"training.seed"}

@dataclass
class Column:
    """One column of a table: a single run, or runs that differ only in their seed."""

    runs: list[Result]
    title: str = ""  # the column title: report.label (else the name), unique within the group

    @property
    def seeds_note(self) -> str:
        return f" ({len(self.runs)} seeds)" if len(self.runs) > 1 else ""

    @property
    def name(self) -> str:
        return self.runs[0].name + self.seeds_note

    @property
    def group(self) -> str:
        return self.runs[0].group

    @property
    def order(self) -> int:
        return min(r.order for r in self.runs)

    @property
    def state(self) -> str:
        states = [r.state for r in self.runs]
        if len(set(states)) == 1:
            return states[0]
        return ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states)))

    @property
    def complete(self) -> bool:
        return all(r.state == "complete" for r in self.runs)

    def setting(self, key: str) -> str:
        """The entry's value of one dotted setting, as a table cell; several when its runs disagree."""
        values = list(dict.fromkeys(cell_text(r.flat.get(key)) for r in self.runs))
        return ", ".join(values)


def cell_text(value: Any) -> str:
    """A setting as the seed's tables show it: ✓ for true, blank for false or unset."""
    if value is True:
        return "✓"
    if value is False or value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ", ".join(cell_text(v) for v in value)
    return str(value)


def pool_seeds(runs: list[Result]) -> list[Column]:
    """Runs that differ only in their seed as one entry each; entries in report order: groups by natural
    name (ungrouped last), then `report.order`, then name."""
    buckets: dict[tuple, list[Result]] = {}
    for run in runs:
        key = tuple(sorted((k, repr(v)) for k, v in run.flat.items()
                           if k not in SEED_POOL_IGNORES and not k.startswith("kaggle.")))
        buckets.setdefault(key, []).append(run)
    entries = []
    for members in buckets.values():
        members.sort(key=lambda r: (str(r.seed), r.name))
        # Equal settings *and* seed are repeats (say, a local and a Kaggle run), not a spread: keep them apart.
        if len({repr(r.seed) for r in members}) == len(members):
            entries.append(Column(members))
        else:
            entries.extend(Column([r]) for r in members)
    entries.sort(key=lambda e: (e.group == "", _natural(e.group), e.order, _natural(e.runs[0].name)))
    seen: set[tuple[str, str]] = set()
    for entry in entries:
        title = entry.runs[0].title + entry.seeds_note
        entry.title = title if (entry.group, title) not in seen else f"{title} [{entry.runs[0].name}]"
        seen.add((entry.group, entry.title))
    return entries


def _natural(text: str) -> list:
    """Sort key that puts "Table 2" before "Table 10"."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


