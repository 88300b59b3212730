"""`kagglerun compare`: any runs side by side, whatever their groups: one figure with their curves overlaid
and a table of the settings in which they differ and of their results."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import WorkspaceError
from .figures import CompareFigure, compare_image, run_curves
from .files import write
from .load import Result, as_float, load_results
from .pool import IDENTITY_KEYS, cell_text
from .tables import ROW_TITLES, varying_keys

COMPARE_FILE = "compare.png"


@dataclass(frozen=True)
class Comparison:
    """What `compare_runs` wrote and showed."""

    figure: Path
    runs: list[Result]
    settings: pd.DataFrame  # the settings that differ: rows by title, a column per run
    results: pd.DataFrame  # the results: rows by title, a column per run
    pdf: Path | None = None
    notes: list[str] = field(default_factory=list)


def _select(results_dir: Path, patterns: list[str]) -> list[str]:
    """Results folders matching each name or glob, in the order given; one that matches none is an error."""
    folders = sorted(p.name for p in results_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))) \
        if results_dir.is_dir() else []
    chosen: list[str] = []
    for pattern in patterns:
        matches = fnmatch.filter(folders, pattern)
        if not matches:
            raise WorkspaceError(f"compare: unknown experiment {pattern!r}: no results folder in {results_dir} "
                                 "(not run or not pulled yet)")
        chosen.extend(m for m in matches if m not in chosen)
    return chosen


def _setting(value: Any) -> str:
    """A setting as a cell: true and false as yes and no (side by side a blank would read as missing)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return cell_text(value) or "–"


def _pct(value: Any) -> str:
    number = as_float(value)
    return "–" if number is None else f"{number:.2f}"


def _results_rows(runs: list[Result]) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {
        "state": [r.state for r in runs],
        "epochs": [f"{r.epochs_done}/{r.epochs_total or '?'}" for r in runs],
        "best test acc (%)": [_pct(r.best[0]) for r in runs],
        "best epoch": [str(r.best[1]) if r.best[1] is not None else "–" for r in runs],
        "final test acc (%)": [_pct(r.final_acc) for r in runs],
    }
    # With a validation split (summary keys best_val_acc, test_acc_at_best, selection)
    if any(r.summary.get("best_val_acc") is not None for r in runs):
        rows["best val acc (%)"] = [_pct(r.summary.get("best_val_acc")) for r in runs]
        rows["test acc at best (%)"] = [_pct(r.summary.get("test_acc_at_best")) for r in runs]
        rows["selected on"] = [str(r.summary.get("selection") or "test") for r in runs]
    rows["wall time (s)"] = ["–" if r.seconds is None else f"{r.seconds:.0f}" for r in runs]
    return rows


def compare_runs(results_dir: Path, patterns: list[str], out: Path | None = None, *,
                 presentation: dict[str, dict[str, Any]] | None = None, pdf: bool = False) -> Comparison:
    """Overlay the curves of the runs matching `patterns` (names or globs, at least two runs) into `out`
    (default results/report/compare.png; with `pdf` a PDF beside it) and tabulate how they differ."""
    results_dir = Path(results_dir)
    names = _select(results_dir, patterns)
    runs, skipped = load_results(results_dir, names, presentation=presentation)
    for s in skipped:
        raise WorkspaceError(f"compare: {s.name}: {s.reason}: nothing to compare")
    for run in runs:
        if not len(run.history.dropna(subset=["test_acc"])):
            raise WorkspaceError(f"compare: {run.name}: no history in {run.folder / 'history.csv'} "
                                 "(no epoch finished yet)")
    if len(runs) < 2:
        raise WorkspaceError(f"compare: {', '.join(map(repr, patterns))} name{'s' if len(patterns) > 1 else ''} "
                             f"only {len(runs)} run; name two or more")
    order = {n: i for i, n in enumerate(names)}
    runs.sort(key=lambda r: order[r.name])
    headers = [r.name if r.title == r.name else f"{r.title} ({r.name})" for r in runs]
    curves = [run_curves(r) for r in runs]
    curves = [type(c)(**{**c.__dict__, "label": h}) for c, h in zip(curves, headers, strict=True)]
    job = CompareFigure(f"compare: {', '.join(r.name for r in runs)}", curves)
    out = Path(out) if out is not None else results_dir / "report" / COMPARE_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    write(out, compare_image(job))
    pdf_path = None
    if pdf:
        pdf_path = out.with_suffix(".pdf")
        write(pdf_path, compare_image(job, fmt="pdf"))
    keys = varying_keys(runs, IDENTITY_KEYS)  # the group shows; names and captions head the columns
    settings = pd.DataFrame({h: [_setting(r.flat.get(k)) for k in keys] for h, r in zip(headers, runs, strict=True)},
                            index=[ROW_TITLES.get(k, k) for k in keys])
    rows = _results_rows(runs)
    results = pd.DataFrame(list(rows.values()), index=list(rows), columns=headers)
    notes = [] if keys else ["their settings are the same (apart from names and captions)"]
    return Comparison(out, runs, settings, results, pdf_path, notes)
