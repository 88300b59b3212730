"""`kagglerun show`: one experiment's settings after inheritance, as TOML text."""

from __future__ import annotations

import json
import re
from typing import Any

from .store import ExperimentStore


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if value is None:
        return '""  # unset'
    return json.dumps(value)


def resolved_settings_toml(store: ExperimentStore, name: str) -> str:
    """The experiment after inheritance, as TOML (unset optional values shown as comments), saying which
    network `model.name` means (a workspace model wins over a built-in of the same name)."""
    s = store.load(name)
    data = s.as_dict()
    model = store.model(s)
    lines = [f"# {name}: resolved from {store.path(name.partition('.')[0])}", f"# settings hash {s.hash}",
             f"# model.name {s.model.name!r}: {model.describe()}"]
    overrides = store.overrides_of(name)
    if overrides:
        lines.append("# overrides: " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in overrides.items()))
    lines.append("")
    for key in ("description", "engine"):
        lines.append(f"{key} = {_toml_value(data.pop(key))}")
    data.pop("name")
    for section, values in data.items():
        lines += ["", f"[{section}]"]
        for key, value in values.items():
            lines.append(f"# {key} (unset)" if value is None else f"{key} = {_toml_value(value)}")
    return "\n".join(lines)
