"""Point a rendered kernel folder at the kernel a push goes to, and tell its notebook which resume is planned.

A resumed run goes to the experiment's other kernel (runs/plan.py: Kaggle does not let a kernel list itself
as a source), so `kernel-metadata.json` gets that kernel's id and title and the kernel holding the checkpoint
as an extra kernel source. The notebook's run.json gains `"resume": {"from": "owner/slug", "version": N}`
(for a pack, on each member that must find a checkpoint): the training core then fails at once, in one line,
when it finds none, rather than training from epoch 1. The settings and their hash are untouched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat

from ..errors import RenderError
from ..kaggle import validate_kernel_folder

RUN_CELL = "%%writefile run.json\n"
METADATA_FILE = "kernel-metadata.json"


def retarget(folder: Path, base: dict[str, Any], kernel: str, title: str, source: str = "", version: int = 0,
             resuming: tuple[str, ...] = ()) -> None:
    """Rewrite `folder` (rendered with metadata `base`) for a push to `kernel` titled `title`; with a
    `source`, give it that kernel's output and plan the resume of `version` for the experiments `resuming`
    (every one of a pack's members named there; a single experiment by its own name)."""
    meta = dict(base, id=kernel, title=title)
    sources = [s for s in base.get("kernel_sources") or [] if s.lower() != kernel.lower()]
    if source and source.lower() not in {s.lower() for s in sources}:
        sources.append(source)
    meta["kernel_sources"] = sources
    (folder / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    _plan_resume(folder / f"{folder.name}.ipynb", {"from": source, "version": version} if source else None, resuming)
    validate_kernel_folder(folder)


def _plan_resume(path: Path, resume: dict[str, Any] | None, resuming: tuple[str, ...]) -> None:
    nb = nbformat.read(path, as_version=4)
    cell = next((c for c in nb.cells if c.cell_type == "code" and c.source.startswith(RUN_CELL)), None)
    if cell is None:
        raise RenderError(f"{path}: no run.json cell to plan the resume in")
    spec = json.loads(cell.source[len(RUN_CELL):])
    for run in spec.get("runs") or [spec]:
        run.pop("resume", None)
        if resume is not None and run["experiment"] in resuming:
            run["resume"] = resume
    cell.source = RUN_CELL + json.dumps(spec, indent=1, sort_keys=True)
    path.write_text(nbformat.writes(nb) + "\n")
