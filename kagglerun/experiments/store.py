"""Experiment files on disk: `experiments/*.toml`, `extends` resolved through bases, names and globs selected."""

from __future__ import annotations

import difflib
import fnmatch
import re
import tomllib
from pathlib import Path
from typing import Any

from ..errors import ExperimentError
from .models import MODELS_DIR, ModelRef, resolve_model
from .settings import Settings, validate_settings

BASES_DIR = "bases"
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

    def __init__(self, directory: Path, models_dir: Path | None = None):
        self.directory = Path(directory)
        self.models_dir = Path(models_dir) if models_dir is not None else self.directory.parent / MODELS_DIR

    def names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.toml"))

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

    def load(self, name: str) -> Settings:
        """Resolve `extends` and validate one experiment."""
        path = self.path(name)
        if not path.is_file():
            hint = _close_names(name, self.names())
            raise ExperimentError(f"unknown experiment {name!r}: no file {path}{hint}")
        if not NAME_RE.match(name):
            raise ExperimentError(f"{path}: experiment names are 2-49 characters of a-z, 0-9 and '_'")
        if name.startswith(PACK_PREFIX):
            raise ExperimentError(f"{path}: experiment names may not start with {PACK_PREFIX!r}, which names packs "
                                  "(build/pack_a_b/ and its kernel); rename the file")
        raw = self._resolve_raw(path)
        if "name" in raw:
            raise ExperimentError(f"{path}: name: unknown key (the name is the file name)")
        s = validate_settings({"name": name, **raw}, str(path))
        self.model(s)  # the model it names must exist (render builds it)
        return s

    def model(self, s: Settings) -> ModelRef:
        """The network experiment `s` names (a workspace model wins over a built-in of the same name)."""
        try:
            return resolve_model(self.models_dir, s)
        except ValueError as e:
            raise ExperimentError(f"{self.path(s.name)}: {e}") from None

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


def _close_names(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3)
    return f"; did you mean {', '.join(close)}?" if close else ""
