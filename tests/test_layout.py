"""The package's layering, read from its source: no import circles, the payload standing alone, rich only in
the CLI, the Kaggle SDK only in its adapter, nothing importing the CLI, a small top level."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kagglerun"
PAYLOAD = ("kagglerun.core", "kagglerun.scratch")
# What the payload may import besides itself: the standard library and the numeric stack a Kaggle image has
PAYLOAD_THIRD_PARTY = {"torch", "torchvision", "numpy", "matplotlib", "sklearn", "scipy", "pandas", "PIL", "cupy",
                       "IPython"}  # all on Kaggle's image


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, anywhere in it (functions and TYPE_CHECKING blocks too), as absolute names."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            # `from . import x` / `from .pkg import mod` may name submodules
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = {m for m in _imports(path) if m in modules and m != name}
        graph[name] = targets
    return graph


GRAPH = _graph()
ALL_IMPORTS = {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, if it has any (depth-first search with colours)."""
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if colour.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if not colour.get(nxt):
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        colour[node] = 2
        return None

    for node in sorted(graph):
        if not colour.get(node):
            found = visit(node)
            if found:
                return found
    return None


def _parent_packages(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_modules_import_each_other_without_circles():
    # A package's __init__ importing its own modules is not a circle: drop edges to a module's parents
    graph = {m: {t for t in targets if t not in _parent_packages(m)} for m, targets in GRAPH.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_subpackages_depend_on_each_other_one_way():
    def room(module: str) -> str:
        parts = module.split(".")
        return ".".join(parts[:2])

    rooms: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        if module == "kagglerun":
            continue
        rooms.setdefault(room(module), set()).update(room(t) for t in targets if room(t) not in (room(module), "kagglerun"))
    assert _cycle(rooms) is None, " -> ".join(_cycle(rooms) or [])


def test_the_payload_imports_nothing_of_kagglerun_outside_itself():
    stdlib = sys.stdlib_module_names
    for module, imports in ALL_IMPORTS.items():
        if not module.startswith(PAYLOAD):
            continue
        for name in imports:
            top = name.split(".")[0]
            if top == "kagglerun":
                assert name.startswith(PAYLOAD), f"{module} imports {name}"
                if module.startswith("kagglerun.core"):
                    assert not name.startswith("kagglerun.scratch"), f"the core imports the scratch engine: {module}"
            else:
                assert top in stdlib or top in PAYLOAD_THIRD_PARTY or top == "__future__", f"{module} imports {name}"


@pytest.mark.parametrize(("library", "room"), [("rich", "kagglerun.cli"), ("kaggle", "kagglerun.kaggle"),
                                               ("kagglesdk", "kagglerun.kaggle"), ("click", "kagglerun.cli")])
def test_a_library_is_imported_in_one_room_only(library, room):
    users = sorted(m for m, imports in ALL_IMPORTS.items()
                   if any(i == library or i.startswith(library + ".") for i in imports))
    assert users and all(m == room or m.startswith(room + ".") for m in users), users


def test_nothing_imports_the_cli():
    users = sorted(m for m, targets in GRAPH.items() if not m.startswith("kagglerun.cli")
                   and any(t.startswith("kagglerun.cli") for t in targets))
    assert not users, users


def test_the_top_level_holds_at_most_eight_modules_and_each_room_says_what_it_is():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= 8, modules
    for package in sorted(p.parent for p in PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
        assert doc and len(doc) > 40, f"{package.name}/__init__.py says nothing about its room"
    for path in PACKAGE.rglob("*.py"):
        assert ast.get_docstring(ast.parse(path.read_text())), f"{path} has no docstring"
