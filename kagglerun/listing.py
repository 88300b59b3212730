"""`kagglerun list` and `kagglerun show`: the experiments of a workspace, as a table and as resolved TOML."""

from __future__ import annotations

import json
from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from .errors import ExperimentError
from .workspace import Workspace


def experiments_table(ws: Workspace) -> Group:
    """One table per report group, one row per experiment with its key settings; an invalid file shows its error."""
    rows: dict[str, list[tuple[str, ...]]] = {}
    invalid: list[Text] = []
    for name in ws.store().names():
        try:
            s = ws.store().load(name)
        except ExperimentError as e:
            invalid.append(Text(f"{name}: {e}", style="red"))
            continue
        model = s.model.name + (f" x{s.model.width:g}" if s.model.width != 1 else "")
        rows.setdefault(s.report.group or "(no report group)", []).append((
            name, model + (f" ({s.engine})" if s.engine != "torch" else ""), s.data.dataset,
            f"{s.training.optimizer} {s.training.lr:.3g}", str(s.training.epochs), str(s.training.batch_size),
            "yes" if s.model.batchnorm else "no", s.model.dropout, "yes" if s.data.color_jitter else "no",
        ))
    tables = []
    for group, members in sorted(rows.items()):
        # One space between columns; on a narrow terminal (80 columns fit) a cell wraps at its spaces
        # ("c5l3 x0.25" over "(scratch)"), never inside a word or a name.
        table = Table(title=f"[bold]{group}[/]", title_justify="left", box=box.SIMPLE_HEAD, padding=0,
                      pad_edge=False, show_edge=False)
        for i, column in enumerate(("experiment", "model", "data", "optimizer", "epochs", "batch", "BN", "dropout",
                                    "jitter")):
            longest_word = max(len(word) for cell in [column, *(row[i] for row in members)] for word in cell.split())
            table.add_column(column, min_width=longest_word, no_wrap=column == "experiment", overflow="fold")
        for row in members:
            table.add_row(*row)
        tables.append(table)
    return Group(f"experiments in {ws.experiments}", *(part for table in tables for part in ("", table)), *invalid)


def _toml_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if value is None:
        return '""  # unset'
    return json.dumps(value)


def resolved_settings_toml(ws: Workspace, name: str) -> str:
    """The experiment after inheritance, as TOML (unset optional values shown as comments)."""
    s = ws.store().load(name)
    data = s.as_dict()
    lines = [f"# {name}: resolved from {ws.store().path(name)}", f"# settings hash {s.hash}", ""]
    for key in ("description", "engine"):
        lines.append(f"{key} = {_toml_value(data.pop(key))}")
    data.pop("name")
    for section, values in data.items():
        lines += ["", f"[{section}]"]
        for key, value in values.items():
            lines.append(f"# {key} (unset)" if value is None else f"{key} = {_toml_value(value)}")
    return "\n".join(lines)
