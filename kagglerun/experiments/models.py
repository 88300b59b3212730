"""Which network an experiment's `model.name` means: a workspace model (models/NAME.py, which wins over a
built-in of the same name), a torchvision classifier (`torchvision:NAME`), or one of the built-in ones."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from .settings import BUILTIN_MODELS, SCRATCH_MODELS, TORCHVISION_PREFIX, Settings

MODELS_DIR = "models"  # a workspace's own models, one Python file each
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ModelRef:
    """What `model.name` resolved to; `path` is the workspace file of a workspace model."""

    name: str
    kind: Literal["workspace", "torchvision", "builtin"]
    path: Path | None = None

    @property
    def source(self) -> str:
        assert self.path is not None
        return self.path.read_text(encoding="utf-8")

    @property
    def source_hash(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()[:16] if self.path else ""

    def describe(self) -> str:
        if self.kind == "workspace":
            shadows = f" (wins over the built-in {self.name})" if self.name in BUILTIN_MODELS else ""
            return f"the workspace model {self.path}{shadows}"
        if self.kind == "torchvision":
            return f"torchvision's {self.name.removeprefix(TORCHVISION_PREFIX)}"
        return f"the built-in {self.name}"


@cache
def torchvision_classifiers() -> tuple[str, ...]:
    """Every classification model torchvision.models builds (not detection, segmentation or video)."""
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


def workspace_models(models_dir: Path) -> list[str]:
    """The model names a workspace's models/ folder defines (files whose stem is a Python identifier)."""
    if not models_dir.is_dir():
        return []
    return sorted(p.stem for p in models_dir.glob("*.py") if _IDENTIFIER.match(p.stem))


def resolve_model(models_dir: Path, s: Settings) -> ModelRef:
    """The network `s.model.name` names, or ValueError("model.<key>: why") naming what was looked for."""
    name = s.model.name
    if name.startswith(TORCHVISION_PREFIX):
        tv = name.removeprefix(TORCHVISION_PREFIX)
        if tv not in torchvision_classifiers():
            import difflib

            close = difflib.get_close_matches(tv, torchvision_classifiers(), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"model.name: torchvision has no classifier {tv!r}{hint}")
        ref = ModelRef(name, "torchvision")
    elif (models_dir / f"{name}.py").is_file():
        ref = ModelRef(name, "workspace", models_dir / f"{name}.py")
    elif name in BUILTIN_MODELS:
        ref = ModelRef(name, "builtin")
    else:
        raise ValueError(f"model.name: no model {name!r}: no file {models_dir / (name + '.py')}, and it is neither "
                         f"'torchvision:NAME' nor a built-in ({', '.join(BUILTIN_MODELS)})")
    if s.engine == "scratch" and (ref.kind != "builtin" or name not in SCRATCH_MODELS):
        raise ValueError(f"engine: the scratch engine builds only its own {' and '.join(SCRATCH_MODELS)}, not "
                         f"{ref.describe()}; use engine = 'torch'")
    if s.model.args and ref.kind == "builtin":
        raise ValueError(f"model.args: only workspace and torchvision models take arguments, not {ref.describe()}")
    return ref
