"""Reading results/: each `results/<EXP>/` folder's output contract, leniently (a run may be finished,
going or dead), as a `Result`; folders that hold no report data are `Skipped` with the reason."""

from __future__ import annotations

import fnmatch
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.contract import (
    CONFUSION_FILE,
    HISTORY_COLUMNS,
    HISTORY_FILE,
    LOG_FILE,
    SETTINGS_FILE,
    SUMMARY_FILE,
    VAL_COLUMNS,
)
from ..errors import WorkspaceError
from ..experiments.sweep import flatten

LOG_TAIL_LINES = 30
# `kagglerun preview EXP` writes results/_previews/EXP.png ('_' starts no experiment name; the folder holds
# no run, so it is never read as one); the report shows it beside the run's figures.
PREVIEW_DIR = "_previews"

# Lines of a log that look like they carry a credential are masked before they reach the report.
_SECRET_RE = re.compile(
    r"(?i)(\w*(?:key|token|secret|password|passwd|authorization)\w*)[\"']?\s*[:=]\s*(?:bearer\s+)?\S+")

@dataclass(frozen=True)
class Result:
    """One experiment's results folder, read leniently: a run may be finished, going or dead."""

    name: str
    folder: Path
    settings: dict[str, Any]
    flat: dict[str, Any]  # settings flattened to dotted keys, lists as tuples
    summary: dict[str, Any]
    history: pd.DataFrame  # HISTORY_COLUMNS + VAL_COLUMNS (NaN without a split), one row per epoch found, sorted
    log_tail: str | None
    confusion: dict[str, Any] | None = None  # confusion.json, checked (see read_confusion); None for older runs

    @property
    def state(self) -> str:
        return str(self.summary.get("state") or "unknown")

    @property
    def group(self) -> str:
        return str(self.flat.get("report.group") or "")

    @property
    def title(self) -> str:
        return str(self.flat.get("report.label") or self.name)

    @property
    def order(self) -> int:
        order = self.flat.get("report.order")
        return order if isinstance(order, int) else 0

    @property
    def seed(self) -> Any:
        return self.flat.get("training.seed")

    @property
    def epochs_total(self) -> int | None:
        return as_int(self.summary.get("epochs_total") or self.flat.get("training.epochs"))

    @property
    def epochs_done(self) -> int:
        done = as_int(self.summary.get("epochs_done"))
        if done is None:
            done = int(self.history["epoch"].max()) if len(self.history) else 0
        return done

    @property
    def selection(self) -> str:
        """What the best epoch was chosen on: "val" (data.val_split) or "test" (no split: the seed's way)."""
        return "val" if self.summary.get("selection") == "val" else "test"

    @property
    def chosen(self) -> tuple[float | None, int | None, float | None]:
        """With a validation split: the test accuracy at the epoch of best validation accuracy (the result),
        that epoch, and its validation accuracy; (None, None, None) without one."""
        if self.selection != "val":
            return None, None, None
        return (as_float(self.summary.get("test_acc_at_best")), as_int(self.summary.get("best_epoch")),
                as_float(self.summary.get("best_val_acc")))

    @property
    def best(self) -> tuple[float | None, int | None]:
        """Best test accuracy and its epoch: the summary's, else found in the history. With a validation
        split the summary's best epoch is chosen on validation accuracy, so the epoch comes from the history."""
        acc, epoch = as_float(self.summary.get("best_test_acc")), as_int(self.summary.get("best_epoch"))
        if self.selection == "val":
            scored = self.history.dropna(subset=["test_acc"])
            epoch = int(scored.loc[scored["test_acc"].idxmax(), "epoch"]) if len(scored) else None
        if acc is None:
            scored = self.history.dropna(subset=["test_acc"])
            if len(scored):
                row = scored.loc[scored["test_acc"].idxmax()]
                acc, epoch = float(row["test_acc"]), int(row["epoch"])
        return acc, epoch

    @property
    def final_acc(self) -> float | None:
        acc = as_float(self.summary.get("final_test_acc"))
        if acc is None:
            scored = self.history.dropna(subset=["test_acc"])
            acc = float(scored["test_acc"].iloc[-1]) if len(scored) else None
        return acc

    @property
    def seconds(self) -> float | None:
        seconds = as_float(self.summary.get("total_seconds"))
        if seconds is None and len(self.history):
            seconds = float(self.history["seconds"].sum())
        return seconds


@dataclass(frozen=True)
class Skipped:
    """A results folder that holds no report data (no settings.json or summary.json, or unreadable)."""

    name: str
    reason: str
    log_tail: str | None = None


def load_results(results_dir: Path, names: list[str] | None = None, *,
                 presentation: dict[str, dict[str, Any]] | None = None) -> tuple[list[Result], list[Skipped]]:
    """Read every `results_dir/<EXP>/` folder (or those matching `names`, which may be globs).

    A name with no folder is reported as skipped (a run not pulled yet should not hide the others);
    names that match nothing at all are an error, as they are most likely a typo. `presentation` maps an
    experiment to its current `description` and `report` section (from its experiment file): they replace
    what the run froze, so regrouping or relabelling needs no retraining; runs whose file is gone keep theirs.
    """
    results_dir = Path(results_dir)
    folders = sorted(p for p in results_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if results_dir.is_dir() else []
    runs, skipped = [], []
    if names:
        chosen: list[Path] = []
        for pattern in names:
            matches = [f for f in folders if fnmatch.fnmatchcase(f.name, pattern)]
            if not matches:
                skipped.append(Skipped(pattern, f"no results folder in {results_dir} (not run or not pulled yet)"))
            chosen.extend(m for m in matches if m not in chosen)
        if not chosen:
            raise WorkspaceError(f"no results for {', '.join(map(repr, names))} in {results_dir}")
        folders = sorted(chosen)
    for folder in folders:
        settings = _read_json(folder / SETTINGS_FILE)
        summary = _read_json(folder / SUMMARY_FILE)
        if isinstance(settings, dict) and isinstance(summary, dict):
            if presentation and folder.name in presentation:
                settings = {**settings, **presentation[folder.name]}
            runs.append(Result(
                name=folder.name, folder=folder, settings=settings, flat=_flatten(settings), summary=summary,
                history=_read_history(folder / HISTORY_FILE), log_tail=_log_tail(folder / LOG_FILE),
                confusion=read_confusion(folder / CONFUSION_FILE),
            ))
        elif (folder / SETTINGS_FILE).exists() or (folder / SUMMARY_FILE).exists() or (folder / LOG_FILE).exists():
            # A run that died before its first epoch; folders of other kinds (the report itself) are ignored.
            missing = [n for n, d in ((SETTINGS_FILE, settings), (SUMMARY_FILE, summary)) if not isinstance(d, dict)]
            skipped.append(Skipped(folder.name, f"no readable {' or '.join(missing)}", _log_tail(folder / LOG_FILE)))
    return runs, skipped


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def preview_path(results_dir: Path, name: str) -> Path:
    """Where `kagglerun preview` puts an experiment's augmentation preview."""
    return Path(results_dir) / PREVIEW_DIR / f"{name}.png"


def read_confusion(path: Path) -> dict[str, Any] | None:
    """A run's confusion.json when it is one (a square matrix of counts, one class name per row), else None:
    runs from before per-class results, or a damaged file, still report without it."""
    data = _read_json(path)
    try:
        classes, matrix = [str(c) for c in data["classes"]], data["matrix"]
        if len(matrix) != len(classes) or any(len(row) != len(classes) for row in matrix):
            return None
        counts = [[int(v) for v in row] for row in matrix]
    except (TypeError, KeyError, ValueError):
        return None
    totals = [sum(row) for row in counts]
    per_class = [100.0 * row[i] / totals[i] if totals[i] else None for i, row in enumerate(counts)]
    return {"classes": classes, "matrix": counts, "per_class_acc": per_class, "epoch": as_int(data.get("epoch"))}


def _read_history(path: Path) -> pd.DataFrame:
    """The history as numbers; unreadable rows are dropped, so a partial file still plots."""
    try:
        frame = pd.read_csv(path, on_bad_lines="skip")
    except (OSError, ValueError, pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
        frame = pd.DataFrame()
    # The checks below cost more than reading; a well-formed file (the usual case) skips the repairs.
    if list(frame.columns) != list(HISTORY_COLUMNS + VAL_COLUMNS):
        frame = frame.reindex(columns=list(HISTORY_COLUMNS + VAL_COLUMNS))
    if not all(pd.api.types.is_numeric_dtype(t) for t in frame.dtypes):
        frame = frame.apply(pd.to_numeric, errors="coerce")
    if frame["epoch"].dtype.kind != "i":
        frame = frame.dropna(subset=["epoch"]).astype({"epoch": int})
    if not (frame["epoch"].is_monotonic_increasing and frame["epoch"].is_unique):
        # A resumed run may write an epoch twice; the later row is the one its checkpoint continued from.
        frame = frame.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)
    return frame


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str | None:
    """The last lines of a log, read from its end (Kaggle logs can be large), with credentials masked."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    tail = text.splitlines()[-lines:]
    return "\n".join(_SECRET_RE.sub(lambda m: f"{m.group(1)}=***", line) for line in tail)


def _flatten(data: dict[str, Any]) -> dict[str, Any]:
    """Settings as dotted keys (the sweep's own flattening), lists as tuples so that they can be compared."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in flatten(data).items()}


def as_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(number) else number


def as_int(value: Any) -> int | None:
    number = as_float(value)
    return None if number is None else int(number)


