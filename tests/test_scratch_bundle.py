"""The scratch engine survives being inlined into a notebook cell after the torch core's modules."""

from __future__ import annotations

import ast
import builtins
import sys
import types
from pathlib import Path

import kagglerun.core as core_pkg
import kagglerun.scratch as scratch_pkg

CORE_DIR = Path(core_pkg.__file__).parent
SCRATCH_DIR = Path(scratch_pkg.__file__).parent


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _defined(tree: ast.Module) -> set[str]:
    """Names a module binds at top level by def, class or assignment (not by import)."""
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def _imported(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {a.asname or a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names |= {a.asname or a.name for a in node.names}
    return names


def test_modules_list_every_file_once():
    files = {p.stem for p in SCRATCH_DIR.glob("*.py")} - {"__init__"}
    assert sorted(scratch_pkg.MODULES) == sorted(files)
    assert len(set(scratch_pkg.MODULES)) == len(scratch_pkg.MODULES)


def test_imports_follow_the_inlining_rules():
    order = list(scratch_pkg.MODULES)
    for name in order:
        tree = _tree(SCRATCH_DIR / f"{name}.py")
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and node not in tree.body:
                if isinstance(node, ast.ImportFrom) and node.level:
                    raise AssertionError(f"{name}: relative import inside a function: {ast.unparse(node)}")
        for node in tree.body:
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] in {"numpy", "torch", "math", "contextlib", "heapq", "weakref"}
                           for a in node.names), f"{name}: {ast.unparse(node)}"
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("kagglerun"), f"{name}: absolute import of kagglerun"
                if node.level == 1:  # a sibling: must be defined earlier in the bundle
                    assert node.module in order[: order.index(name)], f"{name}: imports {node.module} out of order"
                    assert all(a.asname is None for a in node.names), f"{name}: aliased sibling import"
                if node.level == 2:
                    assert node.module.startswith("core."), f"{name}: {ast.unparse(node)}"


def test_top_level_names_are_unique_across_scratch_and_core():
    seen: dict[str, str] = {}
    core_names: set[str] = set()
    for path in sorted(CORE_DIR.glob("*.py")):
        tree = _tree(path)
        core_names |= _defined(tree) | _imported(tree)
        for n in _defined(tree):
            seen.setdefault(n, f"core/{path.name}")
    for name in scratch_pkg.MODULES:
        tree = _tree(SCRATCH_DIR / f"{name}.py")
        for n in _defined(tree):
            assert not hasattr(builtins, n), f"scratch/{name}.py shadows the builtin {n!r}"
            assert n not in core_names and n not in seen or seen[n] == f"scratch/{name}.py", (
                f"scratch/{name}.py defines {n!r}, also defined in {seen.get(n, 'the core (as an import)')}")
            seen[n] = f"scratch/{name}.py"
        # Our imported names must not rebind a name the core defines (e.g. a core `F` or `Data`).
        for n in _imported(tree):
            owner = seen.get(n, "")
            assert not owner.startswith("core/") or n in {"Data", "epoch_seed", "register_engine", "augment_batch"}, (
                f"scratch/{name}.py imports {n!r}, which {owner} defines")


def _bundle() -> str:
    """The core, then the scratch modules, with relative and __future__ imports dropped: one cell's source."""
    parts = ["from __future__ import annotations"]
    modules = [CORE_DIR / f"{m}.py" for m in core_pkg.MODULES] + [SCRATCH_DIR / f"{m}.py" for m in scratch_pkg.MODULES]
    for path in modules:
        lines = path.read_text().splitlines()
        for node in _tree(path).body:
            if isinstance(node, ast.ImportFrom) and (node.level or node.module == "__future__"):
                lines[node.lineno - 1 : node.end_lineno] = [""] * (node.end_lineno - node.lineno + 1)
        parts += lines
    return "\n".join(parts)


def test_bundled_source_registers_and_builds_the_engine():
    # A real module, as a notebook's __main__ is: dataclasses look their module up in sys.modules.
    module = types.ModuleType("kagglerun_scratch_bundle")
    sys.modules[module.__name__] = module
    try:
        exec(compile(_bundle(), "<bundle>", "exec"), module.__dict__)
    finally:
        del sys.modules[module.__name__]
    namespace = module.__dict__
    engine_cls = namespace["ENGINES"]["scratch"]
    assert engine_cls.__name__ == "ScratchEngine"
    model = namespace["build_scratch_model"](
        {"name": "c5l3", "batchnorm": True, "dropout": "all", "conv_dropout": 0.3, "linear_dropout": 0.5,
         "width": 0.0625}, 1, 28)
    import numpy as np

    loss = namespace["softmax_cross_entropy"](model(np.zeros((2, 28, 28, 1), np.float32)), np.array([1, 2]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
