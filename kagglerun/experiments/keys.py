"""`kagglerun keys`: every settings key with its type, default, allowed values or range and meaning, read
from the settings model itself (its annotations, constraints and Field descriptions), so it cannot drift."""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .settings import Settings

_TYPE_NAMES = {bool: "bool", int: "int", float: "float", str: "string", dict: "table", type(None): "unset"}
_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


@dataclass(frozen=True)
class Key:
    """One settings key as `kagglerun keys` shows it."""

    key: str  # dotted, e.g. "training.lr"
    type: str
    default: str
    allowed: str
    meaning: str


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "string" if all(isinstance(a, str) for a in args) else "choice"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return f"list of {len(args)} {_type_name(args[0])}"
    if origin is dict:
        return "table"
    return _TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _allowed(info: FieldInfo) -> str:
    annotation = info.annotation
    if isinstance(info.json_schema_extra, dict) and "allowed" in info.json_schema_extra:
        return str(info.json_schema_extra["allowed"])
    if typing.get_origin(annotation) is Literal:
        return ", ".join(json.dumps(a) for a in typing.get_args(annotation))
    parts = []
    for meta in info.metadata:
        for attr, sign in _BOUNDS:
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
        pattern = getattr(meta, "pattern", None)
        if pattern:
            parts.append(f"matching {pattern}")
    return ", ".join(parts)


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if value is None:
        return "unset"
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def _section_keys(prefix: str, model: type[BaseModel]) -> list[Key]:
    keys = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += _section_keys(f"{prefix}{name}.", annotation)
            continue
        keys.append(Key(prefix + name, _type_name(annotation), _default(info), _allowed(info), info.description or ""))
    return keys


def sections() -> list[str]:
    """The settings sections: "top" for the keys outside any section, then each [section]."""
    return ["top"] + [n for n, f in Settings.model_fields.items()
                      if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)]


def settings_keys(section: str | None = None) -> list[Key]:
    """Every key of an experiment file (`name` is the file's own name, so not a key), or one section's."""
    keys = [k for k in _section_keys("", Settings) if k.key != "name"]
    if section is None:
        return keys
    if section not in sections():
        raise ValueError(f"no settings section {section!r}; the sections are {', '.join(sections())}")
    if section == "top":
        return [k for k in keys if "." not in k.key]
    return [k for k in keys if k.key.startswith(section + ".")]
