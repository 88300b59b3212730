"""`kagglerun run`: execute an experiment's rendered notebook on this machine into results/EXP/."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..core.contract import SUMMARY_FILE, read_summary
from ..errors import RunError
from ..progress import SILENT, EpochProgress, Observer
from ..workspace import Workspace
from .execute import DATA_ENV, INPUT_ENV, NotebookFailed, execute_notebook
from .render import Kernel, render_kernels

PREVIOUS_DIR = ".previous"  # results/.previous/EXP-<time>/: runs moved aside by --fresh, never deleted


def move_aside(ws: Workspace, name: str) -> Path | None:
    """Move results/NAME to results/.previous/NAME-<UTC time> so a fresh run loses nothing."""
    current = ws.result_dir(name)
    if not current.exists():
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    target = ws.results / PREVIOUS_DIR / f"{name}-{stamp}"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(current, target)
    return target


def run_local(ws: Workspace, name: str, *, overrides: dict[str, Any] | None = None, fresh: bool = False,
              observer: Observer = SILENT) -> dict[str, Any]:
    """Render NAME (with `overrides`, dotted keys), execute its notebook with results/NAME as the working
    folder, and return the run's summary. An existing run there is resumed unless `fresh`."""
    settings = ws.store().load(name)
    if overrides:
        settings = settings.with_overrides(**overrides)
    folder = render_kernels(ws, [Kernel(settings)], quick=bool(overrides))[0]
    out = ws.result_dir(name)
    if fresh:
        moved = move_aside(ws, name)
        if moved:
            observer.event(f"moved the previous run to {moved}")
    out.mkdir(parents=True, exist_ok=True)
    env = {DATA_ENV: str(ws.data), INPUT_ENV: str(ws.root / "input")}
    total = settings.training.epochs
    observer.epochs(EpochProgress(name, 0, total))

    def poll() -> None:
        summary = read_summary(out)
        if summary and summary.get("experiment") == name:
            observer.epochs(EpochProgress(name, summary.get("epochs_done") or 0, total, summary.get("final_test_acc")))

    try:
        execute_notebook(folder / f"{settings.name}.ipynb", out, env=env, poll=poll,
                         executed_copy=out / f"{name}.ipynb")
    except NotebookFailed as e:
        raise RunError(f"{name}: run failed: {e.ename}: {e.evalue} (executed notebook: {out / (name + '.ipynb')})") from None
    summary = read_summary(out)
    if summary is None:
        raise RunError(f"{name}: the notebook finished but left no {SUMMARY_FILE} in {out}")
    return summary
