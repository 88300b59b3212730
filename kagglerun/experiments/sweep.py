"""Sweeps: many experiments from one file, and `--set KEY=VALUE` overrides from the command line.

A file's `[sweep]` table maps dotted keys to lists of values; their cartesian product expands into
experiments. `[[sweep.cases]]` tables list explicit combinations instead (crossed with any list keys):

    [sweep]
    "training.lr" = [1e-3, 3e-3]
    "training.seed" = [0, 1]

Each point is named `<file>.<key><value>…` in the order of the table, `<key>` the short key (the last part of
the dotted key, with the abbreviations of SHORT_KEYS: `training.seed` -> `s`, `training.lr` -> `lr`) and
`<value>` its token (value_token: 1e-3 -> `1e-3`, 0.5 -> `0.5`, true, strings slugged): `lr_grid.lr1e-3.s0`.
A name longer than 49 characters keeps its first 39 and ends in `.h` and 8 hex digits of a hash of the file
and the point's values. A point's name and settings depend only on its own values, so adding a value to a
list adds experiments and leaves the others (and their settings hashes) unchanged.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
import tomllib
from typing import Any

from ..errors import ExperimentError

Overrides = dict[str, Any]  # dotted key -> value, in order

POINT_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,48}$")
MAX_NAME = 49
SHORT_KEYS = {"training.seed": "s", "training.lr": "lr", "training.batch_size": "bs", "training.weight_decay": "wd",
              "training.epochs": "ep", "training.optimizer": "opt", "training.momentum": "mom"}
CASES = "cases"


def short_key(key: str) -> str:
    return SHORT_KEYS.get(key) or key.rsplit(".", 1)[-1].replace("_", "")


def value_token(value: Any) -> str:
    """A value as a name part: 1e-3 -> "1e-3", 0.5 -> "0.5", True -> "true", "Adam W" -> "adam-w"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        decimal = repr(value)
        if value == 0 or "inf" in decimal or "nan" in decimal:
            return decimal
        mantissa, exponent = f"{value:.15e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        scientific = f"{mantissa}e{int(exponent)}"
        return scientific if len(scientific) < len(decimal) else decimal
    if isinstance(value, (list, tuple)):
        return "_".join(value_token(v) for v in value) or "empty"
    if value is None:
        return "none"
    return re.sub(r"[^a-z0-9]+", "-", str(value).lower()).strip("-") or "x"


def point_suffix(overrides: Overrides) -> str:
    """`lr1e-3.s0` for {"training.lr": 0.001, "training.seed": 0}."""
    shorts = [short_key(k) for k in overrides]
    parts = []
    for key, short in zip(overrides, shorts, strict=True):
        if shorts.count(short) > 1:  # two keys end alike (model.width, data.width): spell the key out
            short = key.replace(".", "_")
        parts.append(short + value_token(overrides[key]))
    return ".".join(parts)


def point_name(base: str, overrides: Overrides) -> str:
    """The experiment name of `base` with `overrides`, valid and at most 49 characters (see the module doc)."""
    name = f"{base}.{point_suffix(overrides)}" if overrides else base
    if len(name) <= MAX_NAME and POINT_RE.match(name):
        return name
    digest = hashlib.sha256(json.dumps([base, overrides], sort_keys=True, default=str).encode()).hexdigest()[:8]
    prefix = re.sub(r"[^a-z0-9_.-]", "-", name)[:MAX_NAME - 10].rstrip("._-")
    return f"{prefix}.h{digest}"


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"training": {"lr": [..]}}` (unquoted dotted keys) and `{"training.lr": [..]}` alike, as dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def expand_sweep(base: str, table: Any, source: str) -> list[tuple[str, Overrides]]:
    """The points (name, overrides) of a `[sweep]` table: the product of its lists, times its cases."""
    if not isinstance(table, dict):
        raise ExperimentError(f"{source}: sweep: must be a table of dotted keys and lists of values")
    table = dict(table)
    cases = table.pop(CASES, None)
    lists = flatten(table)
    for key, values in lists.items():
        if not isinstance(values, list):
            raise ExperimentError(f"{source}: sweep: {key}: must be a list of values, got {values!r}")
        if not values:
            raise ExperimentError(f"{source}: sweep: {key}: empty list")
    combos: list[Overrides] = [{}]
    if cases is not None:
        if not isinstance(cases, list) or not cases or not all(isinstance(c, dict) for c in cases):
            raise ExperimentError(f"{source}: sweep: cases: must be a non-empty array of tables ([[sweep.cases]])")
        combos = [flatten(c) for c in cases]
        for case in combos:
            both = set(case) & set(lists)
            if both:
                raise ExperimentError(f"{source}: sweep: {sorted(both)[0]}: both in a case and a list")
    grid = [dict(zip(lists, values, strict=True)) for values in itertools.product(*lists.values())]
    points = [{**case, **combo} for case in combos for combo in grid]
    seen: dict[str, Overrides] = {}
    for overrides in points:
        name = point_name(base, overrides)
        if name in seen:
            key = next((k for k in overrides if overrides[k] != seen[name].get(k)), next(iter(overrides), "sweep"))
            raise ExperimentError(f"{source}: sweep: {key}: two points are both named {name} "
                                  f"({seen[name]} and {overrides}); make the values distinct")
        seen[name] = overrides
    return list(seen.items())


def apply_overrides(raw: dict[str, Any], overrides: Overrides) -> dict[str, Any]:
    """A copy of the raw settings with each dotted key set (sections created as needed; the settings
    model then rejects unknown keys)."""
    data = copy.deepcopy(raw)
    for key, value in overrides.items():
        *sections, last = key.split(".")
        here = data
        for section in sections:
            if not isinstance(here.get(section), dict):
                here[section] = {}
            here = here[section]
        here[last] = value
    return data


def parse_value(text: str) -> Any:
    """A command-line value as TOML (`1e-3`, `true`, `[0.9, 0.99]`, `"x"`), else the text itself."""
    try:
        return tomllib.loads("v = " + text)["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(items: tuple[str, ...] | list[str]) -> dict[str, list[Any]]:
    """`--set KEY=VALUE` items as key -> values; `KEY=V1,V2` gives several values (a sweep)."""
    parsed: dict[str, list[Any]] = {}
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key or not re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*", key):
            raise ExperimentError(f"--set {item}: expected KEY=VALUE with a dotted key, e.g. training.lr=0.01")
        whole = parse_value(text)
        if "," in text and isinstance(whole, str):  # not one TOML value (an array stays one): a list of values
            values = [parse_value(part.strip()) for part in text.split(",")]
        else:
            values = [whole]
        if any(v == "" for v in values):
            raise ExperimentError(f"--set {item}: {key}: empty value")
        parsed[key] = values
    return parsed


def override_points(base: str, base_overrides: Overrides, parsed: dict[str, list[Any]]) -> list[tuple[str, Overrides]]:
    """The experiments that `--set` makes of `base`: one, named `base`, when every key has one value; else
    one per combination of the keys with several values, named like sweep points. Each carries `base_overrides` (a sweep point's own) too."""
    single = {k: v[0] for k, v in parsed.items() if len(v) == 1}
    several = {k: v for k, v in parsed.items() if len(v) > 1}
    if not several:
        return [(base, {**base_overrides, **single})]
    points = expand_sweep(base, several, f"--set on {base}")
    return [(name, {**base_overrides, **single, **overrides}) for name, overrides in points]

