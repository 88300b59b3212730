"""`kagglerun run`: execute an experiment's rendered notebook on this machine into results/EXP/."""

from __future__ import annotations

import contextlib
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .core.contract import SUMMARY_FILE, read_summary
from .errors import RunError
from .execute import DATA_ENV, INPUT_ENV, NotebookFailed, execute_notebook
from .workspace import Workspace

PREVIOUS_DIR = ".previous"  # results/.previous/EXP-<time>/: runs moved aside by --fresh, never deleted


def move_aside(ws: Workspace, name: str) -> Path | None:
    """Move results/NAME to results/.previous/NAME-<UTC time> so a fresh run loses nothing."""
    current = ws.result_dir(name)
    if not current.exists():
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    target = ws.results / PREVIOUS_DIR / f"{name}-{stamp}"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(current, target)
    return target


def run_local(ws: Workspace, name: str, *, overrides: dict[str, Any] | None = None, fresh: bool = False,
              console=None) -> dict[str, Any]:
    """Render NAME (with `overrides`, dotted keys), execute its notebook with results/NAME as the working
    folder, and return the run's summary. An existing run there is resumed unless `fresh`."""
    from .render import render_settings

    settings = ws.store().load(name)
    if overrides:
        settings = settings.with_overrides(**overrides)
    folder = render_settings(ws, [settings], quick=bool(overrides))[0]
    out = ws.result_dir(name)
    if fresh:
        moved = move_aside(ws, name)
        if moved and console is not None:
            console.print(f"moved the previous run to {moved}", highlight=False)
    out.mkdir(parents=True, exist_ok=True)
    env = {DATA_ENV: str(ws.data), INPUT_ENV: str(ws.root / "input")}
    total = settings.training.epochs
    progress = _progress(console, name, total)
    try:
        with progress or contextlib.nullcontext():
            task = progress.add_task(name, total=total) if progress else None

            def poll() -> None:
                summary = read_summary(out)
                if progress and summary and summary.get("experiment") == name:
                    acc = summary.get("final_test_acc")
                    label = f"{name} test acc {acc:.2f} %" if acc is not None else name
                    progress.update(task, completed=summary.get("epochs_done") or 0, description=label)

            execute_notebook(folder / f"{settings.name}.ipynb", out, env=env, poll=poll,
                             executed_copy=out / f"{name}.ipynb")
    except NotebookFailed as e:
        raise RunError(f"{name}: run failed: {e.ename}: {e.evalue} (executed notebook: {out / (name + '.ipynb')})") from None
    summary = read_summary(out)
    if summary is None:
        raise RunError(f"{name}: the notebook finished but left no {SUMMARY_FILE} in {out}")
    return summary


def _progress(console, name: str, total: int):
    if console is None:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("epochs"),
                    TimeElapsedColumn(), console=console, transient=False)
