"""Experiment files on disk: `experiments/*.toml`, `extends` resolved through bases, names and globs selected."""

from __future__ import annotations

import difflib
import fnmatch
import re
import tomllib
from pathlib import Path
from typing import Any

from ..core.contract import PRESENTATION_KEYS
from ..errors import ExperimentError
from .settings import Settings, validate_settings

BASES_DIR = "bases"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]{1,48}$")


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ExperimentError(f"{path}: malformed TOML: {e}") from None
    except OSError as e:
        raise ExperimentError(f"{path}: cannot read: {e.strerror}") from None


class ExperimentStore:
    """The experiment files of one workspace (`experiments/*.toml`, bases in `experiments/bases/`)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.toml"))

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.toml"

    def _resolve_raw(self, path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
        if path in chain:
            cycle = " -> ".join(p.stem for p in (*chain, path))
            raise ExperimentError(f"{chain[0]}: extends: cycle {cycle}")
        raw = _read_toml(path)
        parent = raw.pop("extends", None)
        if parent is None:
            return raw
        if not isinstance(parent, str):
            raise ExperimentError(f"{path}: extends: must be a string naming a base file")
        for candidate in (self.directory / BASES_DIR / f"{parent}.toml", self.directory / f"{parent}.toml"):
            if candidate.is_file():
                return _merge(self._resolve_raw(candidate, (*chain, path)), raw)
        raise ExperimentError(
            f"{path}: extends: no base named {parent!r} "
            f"(looked for {self.directory / BASES_DIR / (parent + '.toml')} and {self.directory / (parent + '.toml')})"
        )

    def load(self, name: str) -> Settings:
        """Resolve `extends` and validate one experiment."""
        path = self.path(name)
        if not path.is_file():
            hint = _close_names(name, self.names())
            raise ExperimentError(f"unknown experiment {name!r}: no file {path}{hint}")
        if not NAME_RE.match(name):
            raise ExperimentError(f"{path}: experiment names are 2-49 characters of a-z, 0-9 and '_'")
        raw = self._resolve_raw(path)
        if "name" in raw:
            raise ExperimentError(f"{path}: name: unknown key (the name is the file name)")
        return validate_settings({"name": name, **raw}, str(path))

    def select(self, patterns: tuple[str, ...] | list[str], all_: bool = False) -> list[str]:
        """Experiment names matching names or globs; `all_` selects every experiment."""
        names = self.names()
        if all_:
            if not names:
                raise ExperimentError(f"no experiment files in {self.directory}")
            return names
        if not patterns:
            raise ExperimentError("name at least one experiment (or a glob, or --all)")
        chosen: list[str] = []
        for pattern in patterns:
            if any(c in pattern for c in "*?["):
                matches = fnmatch.filter(names, pattern)
                if not matches:
                    raise ExperimentError(f"glob {pattern!r} matches no experiment in {self.directory}")
            else:
                if pattern not in names:
                    hint = _close_names(pattern, names)
                    raise ExperimentError(f"unknown experiment {pattern!r}: no file {self.path(pattern)}{hint}")
                matches = [pattern]
            chosen.extend(m for m in matches if m not in chosen)
        return chosen

    def load_many(self, names: list[str]) -> list[Settings]:
        return [self.load(n) for n in names]

    def presentation(self) -> dict[str, dict[str, Any]]:
        """Each experiment's current `description` and `report` section, as the report takes them (see
        report.load_results); an experiment file that does not load is left out (its runs keep what they froze)."""
        shown = {}
        for name in self.names():
            try:
                data = self.load(name).as_dict()
            except ExperimentError:
                continue
            shown[name] = {key: data[key] for key in PRESENTATION_KEYS}
        return shown


def _close_names(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3)
    return f"; did you mean {', '.join(close)}?" if close else ""
