"""Inline the training core (and the scratch engine) into notebook cells: one cell per module, in order.

A notebook has no package to import from, so each module's source is kept as written except its relative
imports (`from .x import y`, `from ..core.x import y`), which are dropped: the names they bring in are
already defined by the cells before. Top-level names must therefore be unique across inlined modules,
which `bundle()` checks.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import RenderError

PACKAGE = Path(__file__).parent


@dataclass(frozen=True)
class InlinedModule:
    path: str  # e.g. "kagglerun/core/data.py"
    source: str  # the module's text without its relative imports


def _package_modules(package: str) -> list[Path]:
    mod = importlib.import_module(f"kagglerun.{package}")
    return [PACKAGE / package / f"{name}.py" for name in mod.MODULES]


def _strip_relative_imports(path: Path) -> tuple[str, set[str]]:
    text = path.read_text()
    tree = ast.parse(text, filename=str(path))
    drop: set[int] = set()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            drop.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level > 0 and node not in tree.body:
            raise RenderError(f"{path}:{node.lineno}: relative imports must be at module level to be inlined")
    lines = text.splitlines(keepends=True)
    kept = "".join(line for i, line in enumerate(lines, start=1) if i not in drop)
    return kept, names


@lru_cache(maxsize=None)
def bundle(engine: str = "torch") -> tuple[InlinedModule, ...]:
    """The modules a notebook for `engine` inlines, in order: the core, then the scratch engine if asked."""
    paths = _package_modules("core")
    if engine == "scratch":
        paths += _package_modules("scratch")
    seen: dict[str, str] = {}
    modules = []
    for path in paths:
        source, names = _strip_relative_imports(path)
        rel = path.relative_to(PACKAGE.parent).as_posix()
        for name in names:
            if name in seen and not name.startswith("__"):
                raise RenderError(f"{rel}: top-level name {name!r} also defined in {seen[name]}; inlining would clash")
            seen[name] = rel
        modules.append(InlinedModule(rel, source))
    return tuple(modules)


def core_hash(engine: str = "torch") -> str:
    """Hash of the exact training-core code a notebook for `engine` runs."""
    h = hashlib.sha256()
    for module in bundle(engine):
        h.update(module.path.encode() + b"\0" + module.source.encode() + b"\0")
    return h.hexdigest()[:16]
