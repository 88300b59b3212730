"""`kagglerun run`: execute an experiment's rendered notebook on this machine into results/EXP/.

The run works in results/EXP itself (so a stopped or killed run resumes from its checkpoint there), but a
failed or interrupted run never replaces a complete one: before a complete run is resumed, its files are
kept (copied; checkpoints hard-linked, so they cost no space) in results/.previous/EXP-<time>/, and when the new run fails or is
interrupted they are put back and the new run's files moved to results/.previous/EXP-<time>-failed/ (or
-interrupted/). A SIGKILL leaves the copy in results/.previous/: nothing is lost either way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

from ..core.contract import CHECKPOINT_LAST, HISTORY_FILE, PULLED_MARK, SETTINGS_FILE, SUMMARY_FILE, read_summary
from ..errors import Interrupted, RunError
from ..progress import SILENT, EpochProgress, Observer
from ..workspace import Workspace, real_folder
from .execute import DATA_ENV, INPUT_ENV, NotebookFailed, execute_notebook
from .render import Kernel, render_kernels


def _complete(folder: Path) -> bool:
    summary = read_summary(folder)
    return summary is not None and summary.get("state") == "complete"


def _same_run(a: Path, b: Path) -> bool:
    """Both folders hold the same training: history and settings byte for byte."""
    try:
        return all((a / f).read_bytes() == (b / f).read_bytes() for f in (HISTORY_FILE, SETTINGS_FILE))
    except OSError:
        return False


def _put_back(ws: Workspace, name: str, kept: Path, why: str) -> Path:
    """Put the complete run `kept` back in results/NAME; the run that failed goes to .previous/NAME-<time>-why."""
    out = ws.result_dir(name)
    failed = ws.previous_path(name, why)
    os.replace(out, failed)
    os.replace(kept, out)
    return failed


def _epochs_done(folder: Path) -> int | None:
    done = (read_summary(folder) or {}).get("epochs_done")
    return done if isinstance(done, int) else None


def run_local(ws: Workspace, name: str, *, overrides: dict[str, Any] | None = None, fresh: bool = False,
              observer: Observer = SILENT) -> dict[str, Any]:
    """Render NAME (with `overrides`, dotted keys), execute its notebook with results/NAME as the working
    folder, and return the run's summary. An existing run there is resumed unless `fresh` (then it is moved
    to results/.previous/). See the module docstring for what a failure or Ctrl-C keeps."""
    settings = ws.store().load(name)
    if overrides:
        settings = settings.with_overrides(**overrides)
    out = real_folder(ws.result_dir(name))
    real_folder(ws.results)
    folder = render_kernels(ws, [Kernel(settings)], quick=bool(overrides))[0]
    kept = None  # a complete run that a failure must not replace
    if fresh:
        moved = ws.move_aside(name)
        if moved:
            observer.event(f"moved the previous run to {moved}")
            kept = moved if _complete(moved) else None
    elif _complete(out):
        kept = ws.keep_copy(name)
    out.mkdir(parents=True, exist_ok=True)
    (out / PULLED_MARK).unlink(missing_ok=True)  # from now on it holds a local run (pull moves those aside)
    env = {DATA_ENV: str(ws.data), INPUT_ENV: str(ws.root / "input")}
    total = settings.training.epochs
    observer.epochs(EpochProgress(name, 0, total))

    def poll() -> None:
        summary = read_summary(out)
        if summary and summary.get("experiment") == name:
            done = summary.get("epochs_done")
            acc = summary.get("final_test_acc")
            observer.epochs(EpochProgress(name, done if isinstance(done, int) else 0, total,
                                          acc if isinstance(acc, int | float) else None))

    notebook = out / f"{name}.ipynb"
    try:
        execute_notebook(folder / f"{settings.name}.ipynb", out, env=env, poll=poll, executed_copy=notebook)
    except NotebookFailed as e:
        raise RunError(f"{name}: run failed: {e.ename}: {e.evalue} ({_after_failure(ws, name, kept, 'failed')})") \
            from None
    except KeyboardInterrupt:
        done = _epochs_done(out)
        at = f" after epoch {done}" if done else " before its first epoch"
        raise Interrupted(f"{name}: interrupted{at}; {_after_failure(ws, name, kept, 'interrupted')}") from None
    summary = read_summary(out)
    if summary is None:
        raise RunError(f"{name}: the notebook finished but left no {SUMMARY_FILE} in {out} "
                       f"({_after_failure(ws, name, kept, 'failed')})")
    if kept is not None and not fresh:
        if _same_run(kept, out):
            shutil.rmtree(kept, ignore_errors=True)  # nothing was trained: the copy would only repeat it
        else:
            observer.event(f"the previous complete run is kept in {kept}")
    return summary


def _after_failure(ws: Workspace, name: str, kept: Path | None, why: str) -> str:
    """Put a complete run back after a failed or interrupted one; say where everything is."""
    out = ws.result_dir(name)
    if kept is None:
        if why != "interrupted":
            return f"executed notebook: {out / (name + '.ipynb')}"
        if not (out / CHECKPOINT_LAST).is_file():
            return f"nothing was trained yet in {out}"
        return f"{out}: its checkpoint is kept there (run again to resume)"
    with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C must not leave the complete run half back
        failed = _put_back(ws, name, kept, why)
        return f"{out} still holds the complete run; this run's files are in {failed}"
    return f"the complete run is in {kept}"
