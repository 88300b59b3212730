"""The payload: the training core (and the from-scratch engine) as the package a notebook writes and imports.

A rendered notebook has nothing installed, so it carries the code it runs: one cell per module writes
`kagglerun_payload/core/<module>.py` (and `scratch/` for that engine) into the working folder with
`%%writefile`, exactly as the module is in this repository, relative imports included; a later cell imports
the package. The code that produced a result is thus kept beside the result, in the kernel's output.
A workspace's own models that a notebook's experiments name go in as `kagglerun_payload/models/NAME.py`,
where the core's build_model finds them. The payload's hash, models included, decides whether "the code
changed" since a version was pushed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # kagglerun/
PAYLOAD_PACKAGE = "kagglerun_payload"  # its name in a notebook: not `kagglerun`, which a local kernel may have installed
PAYLOAD_PARTS = {"torch": ("core",), "scratch": ("core", "scratch")}
ROOT_INIT = '"""kagglerun\'s training core, written by the notebook that runs it (see its cells)."""\n'
MODELS_INIT = '"""The workspace\'s own models this notebook trains, each file as it is in the workspace\'s models/."""\n'
MODELS_PART = "models"


@dataclass(frozen=True)
class PayloadModule:
    """One file of the payload package: where the notebook writes it, and its text."""

    path: str  # relative to the working folder, e.g. "kagglerun_payload/core/train.py"
    source: str
    source_file: str = ""  # where it comes from when not from the package, e.g. "models/mynet.py"

    @property
    def origin(self) -> str:
        """The file it comes from, e.g. "kagglerun/core/train.py" or a workspace's "models/mynet.py"."""
        return self.source_file or "kagglerun/" + self.path.split("/", 1)[1]


def _part(part: str) -> list[PayloadModule]:
    folder = PACKAGE_ROOT / part
    files = sorted(folder.glob("*.py"), key=lambda p: (p.name != "__init__.py", p.name))
    return [PayloadModule(f"{PAYLOAD_PACKAGE}/{part}/{p.name}", p.read_text(encoding="utf-8")) for p in files]


@cache
def payload(engine: str = "torch") -> tuple[PayloadModule, ...]:
    """The files a notebook for `engine` writes: the package's own __init__, then core/, then scratch/."""
    modules = [PayloadModule(f"{PAYLOAD_PACKAGE}/__init__.py", ROOT_INIT)]
    for part in PAYLOAD_PARTS[engine]:
        modules += _part(part)
    return tuple(modules)


def model_modules(models: dict[str, str]) -> tuple[PayloadModule, ...]:
    """The payload files of a workspace's models, {name: source}: the models/ package's __init__, then each
    model by name (nothing when there are none)."""
    if not models:
        return ()
    return (PayloadModule(f"{PAYLOAD_PACKAGE}/{MODELS_PART}/__init__.py", MODELS_INIT),
            *(PayloadModule(f"{PAYLOAD_PACKAGE}/{MODELS_PART}/{name}.py", source, f"{MODELS_PART}/{name}.py")
              for name, source in sorted(models.items())))


def kernel_payload(engine: str = "torch", models: dict[str, str] | None = None) -> tuple[PayloadModule, ...]:
    """Everything a notebook writes: the engine's payload, then the workspace models it trains."""
    return payload(engine) + model_modules(models or {})


def payload_folders(engine: str = "torch", models: bool = False) -> list[str]:
    """The folders the payload's files go into, parents first."""
    parts = PAYLOAD_PARTS[engine] + ((MODELS_PART,) if models else ())
    return [PAYLOAD_PACKAGE] + [f"{PAYLOAD_PACKAGE}/{part}" for part in parts]


def engine_modules(engine: str) -> list[str]:
    """The payload modules whose import registers the engines a notebook for `engine` uses."""
    modules = [f"{PAYLOAD_PACKAGE}.core.torch_engine"]
    if engine == "scratch":
        modules.append(f"{PAYLOAD_PACKAGE}.scratch.engine")
    return modules


def core_hash(engine: str = "torch", models: dict[str, str] | None = None) -> str:
    """Hash of the exact code a notebook for `engine` runs: the training core and the workspace models."""
    h = hashlib.sha256()
    for module in kernel_payload(engine, models):
        h.update(module.path.encode() + b"\0" + module.source.encode() + b"\0")
    return h.hexdigest()[:16]
