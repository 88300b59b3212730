"""`kagglerun list` and `kagglerun show`: the experiments of a workspace, as a table and as resolved TOML."""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table

from .errors import ExperimentError
from .workspace import Workspace


def experiments_table(ws: Workspace) -> Table:
    """One row per experiment with its key settings; an invalid file shows its error in its row."""
    table = Table(title=f"experiments in {ws.experiments}", title_justify="left")
    for column in ("experiment", "engine", "model", "data", "optimizer", "lr", "epochs", "batch", "BN", "dropout",
                   "jitter", "group"):
        table.add_column(column, overflow="fold")
    for name in ws.store().names():
        try:
            s = ws.store().load(name)
        except ExperimentError as e:
            table.add_row(name, f"[red]{e}[/]")
            continue
        table.add_row(
            name, s.engine, f"{s.model.name}" + (f" x{s.model.width:g}" if s.model.width != 1 else ""),
            s.data.dataset, s.training.optimizer, f"{s.training.lr:g}", str(s.training.epochs),
            str(s.training.batch_size), "yes" if s.model.batchnorm else "no", s.model.dropout,
            "yes" if s.data.color_jitter else "no", s.report.group,
        )
    return table


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
