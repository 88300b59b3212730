"""Writing the report: report.md, report.html (self-contained: figures embedded), summary.csv and
figures/, each written whole (a browser never reads half a report)."""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ..notebook.templates import environment
from .figures import GroupFigure, RunFigure, draw_all, entry_curves, run_curves
from .load import Result, Skipped, load_results
from .pool import UNGROUPED, Column, pool_seeds
from .tables import group_table, main_table, summary_frame

REPORT_DIR = "report"
FIGURES_DIR = "figures"
# Cells right-aligned in a table: numbers, with a spread, a unit or a progress ("41/150"), or a dash.
_NUMERIC_CELL = re.compile(r"–|\d[\d.]*( ± [\d.]+)?( (M|k|s|min|h))?|\d+/[\d?]+")

@dataclass(frozen=True)
class Report:
    """What `build_report` wrote, and the tables it wrote them from."""

    out_dir: Path
    markdown: Path
    html: Path
    summary_csv: Path
    figures: list[Path]
    table: pd.DataFrame  # the main table: one row per entry (seeds pooled), values formatted for display
    summary: pd.DataFrame  # summary.csv: one row per experiment, numbers as numbers
    groups: dict[str, pd.DataFrame] = field(default_factory=dict)  # group -> table in the seed's layout
    problems: list[str] = field(default_factory=list)  # experiments that failed or have not finished
    skipped: list[Skipped] = field(default_factory=list)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _write(path: Path, data: bytes | str) -> None:
    """Write beside `path` and rename over it, so a browser never reads half a report. No fsync: a report
    is rebuilt in a second, and 200 fsyncs would cost more than the whole build."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)


def _file_names(names: list[str]) -> list[str]:
    """Names safe in a file name and a URL, still unique (experiment names already are; folder names may not)."""
    safe, seen = [], set()
    for name in names:
        candidate = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        while candidate in seen:
            candidate += "_"
        seen.add(candidate)
        safe.append(candidate)
    return safe


def _table_view(frame: pd.DataFrame, index: bool) -> dict[str, Any]:
    """A DataFrame as header and rows of strings, for the templates; rows of unfinished runs get a class."""
    if index:
        frame = frame.reset_index()
    states = frame["state"] if "state" in frame.columns else pd.Series("", index=frame.index)
    rows = [["" if pd.isna(v) else str(v) for v in row] for row in frame.itertuples(index=False)]
    return {"columns": [str(c) for c in frame.columns], "rows": rows,
            "numeric": [bool(rows) and all(_NUMERIC_CELL.fullmatch(row[i]) for row in rows)
                        for i in range(len(frame.columns))],
            "row_classes": [f"state-{s}" if s in ("running", "stopped", "failed") else "" for s in states]}


def _problem(run: Result, anchor: str) -> dict[str, Any]:
    reason = str(run.summary.get("error") or "")
    if not reason:
        reason = {"running": "still running", "stopped": "stopped before its last epoch (time budget or interrupt)",
                  "failed": "failed without an error message"}.get(run.state, f"state {run.state!r}")
    return {"name": run.name, "anchor": anchor, "state": run.state, "reason": reason,
            "progress": f"epoch {run.epochs_done} of {run.epochs_total or '?'}",
            "updated": str(run.summary.get("updated_at") or ""), "log_tail": run.log_tail}


def _classes(run: Result, shown: int = 12) -> str:
    """The data set's classes as its summary names them, e.g. "3 classes: cat, dog, eel" ("" if unknown)."""
    names = run.summary.get("class_names")
    if not isinstance(names, list) or not names:
        return ""
    listed = ", ".join(map(str, names[:shown])) + (", …" if len(names) > shown else "")
    return f"{len(names)} classes: {listed}"


def build_report(results_dir: Path, out_dir: Path | None = None, names: list[str] | None = None, *,
                 templates: Path | None = None, workers: int | None = 1) -> Report:
    """Build the comparison report of the runs in `results_dir` (default output: `results_dir/report`).

    `names` limits it to those experiments (names or globs); `templates` is a folder whose
    report.md.j2 / report.html.j2 override the package's; `workers` is how many processes draw the
    figures (default 1, this one; None: one per CPU, used when there are enough figures to pay for them).
    """
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else results_dir / REPORT_DIR
    runs, skipped = load_results(results_dir, names)
    entries = pool_seeds(runs)
    groups: dict[str, list[Column]] = {}
    for entry in entries:
        groups.setdefault(entry.group or UNGROUPED, []).append(entry)
    for entry in entries:  # report.also: shown in further groups' tables, after their own members
        for extra in entry.runs[0].flat.get("report.also") or ():
            groups.setdefault(str(extra), []).append(entry)

    # Figures: one per run (in entry order, so pooled seeds sit together), one overlay per group.
    ordered_runs = [r for e in entries for r in e.runs]
    jobs: list = []
    for run in ordered_runs:
        acc, epoch = run.best
        best = f"best {acc:.2f} % @ {epoch}" if acc is not None else "no epoch yet"
        at_val, val_epoch, _ = run.chosen
        if at_val is not None:  # the result first: the test accuracy where validation chose
            best = f"{at_val:.2f} % @ {val_epoch} (chosen on val), best test {best.removeprefix('best ')}"
        note = "" if run.state == "complete" else f" ({run.state}, {run.epochs_done}/{run.epochs_total or '?'})"
        marked = (at_val, val_epoch) if at_val is not None else (acc, epoch)  # the result's epoch
        jobs.append(RunFigure(run_curves(run), f"{run.name}: {best}{note}", marked, run.epochs_total))
    for name, members in groups.items():
        jobs.append(GroupFigure(f"{name}: test accuracy and test loss", [entry_curves(e) for e in members]))
    pngs = draw_all(jobs, workers)

    figures_dir = out_dir / FIGURES_DIR
    figures_dir.mkdir(parents=True, exist_ok=True)
    safe_names = _file_names([r.name for r in ordered_runs])
    files = [f"exp-{name}.png" for name in safe_names]
    files += [f"group-{i + 1:02d}-{_slug(name)}.png" for i, name in enumerate(groups)]
    for stale in figures_dir.glob("*.png"):  # figures of runs no longer in the report
        if stale.name not in files:
            stale.unlink()
    figures = []
    for file, png in zip(files, pngs, strict=True):
        _write(figures_dir / file, png)
        figures.append(figures_dir / file)

    def figure(i: int) -> dict[str, str]:
        return {"path": f"{FIGURES_DIR}/{files[i]}",
                "data_uri": "data:image/png;base64," + base64.b64encode(pngs[i]).decode("ascii")}

    tables = {name: group_table(members) for name, members in groups.items()}
    table = main_table(entries)
    summary = summary_frame(runs)
    problem_runs = [r for r in ordered_runs if r.state != "complete"]
    context = {
        "title": "kagglerun report",
        "built_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "results_dir": str(results_dir),
        "n_runs": len(runs),
        "n_entries": len(entries),
        "main": _table_view(table, index=False),
        "groups": [{"name": name, "anchor": f"group-{i + 1}", "table": _table_view(tables[name], index=True),
                    "pooled": any(len(e.runs) > 1 for e in groups[name]), "figure": figure(len(ordered_runs) + i)}
                   for i, name in enumerate(groups)],
        "problems": [_problem(r, "run-" + safe_names[ordered_runs.index(r)]) for r in problem_runs],
        # runs whose best epoch was chosen on the test set (no data.val_split): the report says so
        "test_selected": [r.name for r in ordered_runs if r.selection == "test"],
        "val_selected": any(r.selection == "val" for r in ordered_runs),
        "skipped": [vars(s) for s in skipped],
        "runs": [{"name": r.name, "anchor": "run-" + safe_names[i], "state": r.state, "figure": figure(i),
                  "classes": _classes(r), "stop_reason": str(r.summary.get("stop_reason") or "")}
                 for i, r in enumerate(ordered_runs)],
    }
    env = environment(templates, report=True)
    markdown, html = out_dir / "report.md", out_dir / "report.html"
    _write(markdown, env.get_template("report.md.j2").render(context))
    _write(html, env.get_template("report.html.j2").render(context))
    summary_csv = out_dir / "summary.csv"
    _write(summary_csv, summary.to_csv(index=False))
    return Report(out_dir=out_dir, markdown=markdown, html=html, summary_csv=summary_csv, figures=figures,
                  table=table, summary=summary, groups=tables, problems=[r.name for r in problem_runs],
                  skipped=skipped)


