"""Experiment files on disk: `experiments/*.toml`, `extends` resolved through bases, names and globs selected.

A file with a `[sweep]` table is not an experiment itself: its points are (experiments.sweep), named
`<file>.<key><value>…`. A file with a `[search]` table defines a search (kagglerun.search); its trials,
like any experiment made by `--set` on the command line, reach the store as `extra` points: a name and
its overrides of the file named by the part of the name before the first dot."""

from __future__ import annotations

import difflib
import fnmatch
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.contract import PRESENTATION_KEYS
from ..errors import ExperimentError
from .models import MODELS_DIR, ModelRef, resolve_model
from .settings import Settings, validate_settings
from .sweep import POINT_RE, Overrides, apply_overrides, expand_sweep

BASES_DIR = "bases"
SWEEP, SEARCH = "sweep", "search"  # tables of a file that make other experiments of it
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]{1,48}$")
MAX_EXTENDS = 64  # files in one `extends` chain
PACK_PREFIX = "pack_"  # the names of packs' kernels (notebook/packs.py): build/pack_a_b/, not an experiment's


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
    """The experiment files of one workspace (`experiments/*.toml`, bases in `experiments/bases/`), and the
    workspace's own models (`models/`, beside `experiments/`) they may name."""

    def __init__(self, directory: Path, models_dir: Path | None = None,
                 extra: Mapping[str, Mapping[str, Any]] | None = None):
        self.directory = Path(directory)
        self.models_dir = Path(models_dir) if models_dir is not None else self.directory.parent / MODELS_DIR
        # name -> overrides of the file `name.partition(".")[0]`
        self.extra = {k: dict(v) for k, v in (extra or {}).items()}
        self._points: dict[str, list[tuple[str, Overrides]] | ExperimentError | None] = {}

    def files(self) -> list[str]:
        """The stems of the experiment files."""
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.toml"))

    def sweep_points(self, stem: str) -> list[tuple[str, Overrides]] | None:
        """The points of the sweep file `stem` (None for a file without a sweep); a bad sweep raises."""
        if stem not in self._points:
            try:
                raw = _read_toml(self.path(stem))
                table = raw.get(SWEEP)
                points = None if table is None else expand_sweep(stem, table, str(self.path(stem)))
                files = set(self.files()) if points else set()
                for name, _ in points or []:
                    if name in files:
                        raise ExperimentError(f"{self.path(stem)}: sweep: point {name} collides with the file "
                                              f"{self.path(name)}; rename one of them")
                self._points[stem] = points
            except ExperimentError as e:
                self._points[stem] = e
        found = self._points[stem]
        if isinstance(found, ExperimentError):
            raise ExperimentError(str(found))
        return found

    def is_search(self, stem: str) -> bool:
        try:
            return SEARCH in _read_toml(self.path(stem))
        except ExperimentError:
            return False

    def grouped(self) -> dict[str, list[str]]:
        """Every experiment name by the file it comes from (a plain file's list is its own name; a bad
        sweep's is the file's name, whose load says what is wrong)."""
        groups: dict[str, list[str]] = {}
        for stem in self.files():
            try:
                points = self.sweep_points(stem)
            except ExperimentError:
                points = [(stem, {})]
            if points is not None:
                groups[stem] = [n for n, _ in points]
            elif not self.is_search(stem):
                groups[stem] = [stem]
        for name in self.extra:
            stem = name.partition(".")[0]
            if name not in groups.get(stem, []):
                groups.setdefault(stem, []).append(name)
        return groups

    def names(self) -> list[str]:
        return sorted({n for names in self.grouped().values() for n in names})

    def overrides_of(self, name: str) -> Overrides:
        """What makes `name` differ from its file: a sweep point's values, or the extra overrides."""
        if name in self.extra:
            return dict(self.extra[name])
        stem = name.partition(".")[0]
        if stem != name and self.path(stem).is_file():
            for point, overrides in self.sweep_points(stem) or []:
                if point == name:
                    return dict(overrides)
        return {}

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.toml"

    def _resolve_raw(self, path: Path) -> dict[str, Any]:
        """The file's table with its `extends` chain merged under it, base first (a loop, not recursion, so a
        long chain is an error that names it rather than a RecursionError)."""
        chain: list[Path] = []
        layers: list[dict[str, Any]] = []
        while True:
            if path in chain:
                cycle = " -> ".join(p.stem for p in (*chain, path))
                raise ExperimentError(f"{chain[0]}: extends: cycle {cycle}")
            if len(chain) >= MAX_EXTENDS:
                raise ExperimentError(f"{chain[0]}: extends: a chain of more than {MAX_EXTENDS} files "
                                      f"({' -> '.join(p.stem for p in chain[:3])} -> …); shorten it")
            chain.append(path)
            raw = _read_toml(path)
            parent = raw.pop("extends", None)
            layers.append(raw)
            if parent is None:
                break
            if not isinstance(parent, str):
                raise ExperimentError(f"{path}: extends: must be a string naming a base file")
            candidates = (self.directory / BASES_DIR / f"{parent}.toml", self.directory / f"{parent}.toml")
            found = next((c for c in candidates if c.is_file()), None)
            if found is None:
                raise ExperimentError(f"{path}: extends: no base named {parent!r} "
                                      f"(looked for {candidates[0]} and {candidates[1]})")
            path = found
        merged: dict[str, Any] = {}
        for layer in reversed(layers):
            merged = _merge(merged, layer)
        return merged

    def raw(self, stem: str) -> dict[str, Any]:
        """The file's tables after `extends`, unvalidated (a search reads its `[search]` table here)."""
        return self._resolve_raw(self.path(stem))

    def load(self, name: str) -> Settings:
        """Resolve `extends`, apply a point's overrides and validate one experiment."""
        stem = name.partition(".")[0]
        path = self.path(stem)
        if not path.is_file():
            hint = _close_names(name, self.names())
            raise ExperimentError(f"unknown experiment {name!r}: no file {self.path(name)}{hint}")
        if not NAME_RE.match(stem):
            raise ExperimentError(f"{path}: experiment names are 2-49 characters of a-z, 0-9 and '_'")
        if name.startswith(PACK_PREFIX):
            raise ExperimentError(f"{path}: experiment names may not start with {PACK_PREFIX!r}, which names packs "
                                  "(build/pack_a_b/ and its kernel); rename the file")
        points = self.sweep_points(stem)
        source = str(path)
        if name in self.extra:
            overrides, source = dict(self.extra[name]), f"{path} (overrides of {name})"
        elif points is not None:
            found = dict(points).get(name)
            if found is None:
                shown = ", ".join(n for n, _ in points[:3]) + (", …" if len(points) > 3 else "")
                raise ExperimentError(f"{path}: {name!r} is not one of its sweep's {len(points)} experiments ({shown})"
                                      if name != stem else f"{path}: {stem} is a sweep of {len(points)} experiments "
                                      f"({shown}); name one, or the glob '{stem}.*'")
            overrides, source = found, f"{path} (sweep point {name})"
        elif name != stem:
            raise ExperimentError(f"unknown experiment {name!r}: {path} has no [sweep] table")
        else:
            overrides = {}
        if not POINT_RE.match(name):
            raise ExperimentError(f"{path}: {name}: experiment names are 2-49 characters of a-z, 0-9, '_', '.', '-'")
        raw = self._resolve_raw(path)
        raw.pop(SWEEP, None)
        raw.pop(SEARCH, None)
        if "name" in raw:
            raise ExperimentError(f"{path}: name: unknown key (the name is the file name)")
        s = validate_settings(apply_overrides({"name": name, **raw}, overrides), source)
        self.model(s)  # the model it names must exist (render builds it)
        return s

    def model(self, s: Settings) -> ModelRef:
        """The network experiment `s` names (a workspace model wins over a built-in of the same name)."""
        try:
            return resolve_model(self.models_dir, s)
        except ValueError as e:
            raise ExperimentError(f"{self.path(s.name.partition('.')[0])}: {e}") from None

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
            elif pattern not in names and self.path(pattern).is_file() and self.sweep_points(pattern):
                matches = [n for n, _ in self.sweep_points(pattern) or []]  # a sweep file: all its points
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
