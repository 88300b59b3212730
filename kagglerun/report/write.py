"""Writing the report: report.md, report.html (self-contained: figures embedded, tables sorted by a click on
a column, by an inline script), summary.csv and figures/, with `latex` also tables/*.tex and the figures as
PDF; each file written whole (a browser never reads half a report)."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import WorkspaceError
from ..notebook.templates import environment, render_template
from .figures import ConfusionFigure, GroupFigure, RunFigure, draw_all, draw_pdf, entry_curves, run_curves
from .files import slug as _slug
from .files import write as _write
from .latex import TABLES_DIR, write_latex
from .load import Result, Skipped, load_results, preview_path
from .pool import UNGROUPED, Column, pool_seeds
from .sweeps import SearchSection, SweepSection, search_sections, sweep_sections
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
    latex: list[Path] = field(default_factory=list)  # with `latex`: one .tex table per group, in tables/
    pdfs: list[Path] = field(default_factory=list)  # with `latex`: the figures as PDF, beside the PNGs


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
                 templates: Path | None = None, workers: int | None = 1, group: str | None = None,
                 presentation: dict[str, dict[str, Any]] | None = None, latex: bool = False,
                 per_class: bool = False) -> Report:
    """Build the comparison report of the runs in `results_dir` (default output: `results_dir/report`).

    `names` limits it to those experiments (names or globs), `group` to one report group; `templates` is a
    folder whose report.md.j2 / report.html.j2 override the package's; `workers` is how many processes draw
    the figures (default 1, this one; None: one per CPU, used when there are enough figures to pay for them).
    `presentation`: each experiment's current description and report section (load_results). `latex` also
    writes one .tex table per group into tables/ and every figure as PDF beside its PNG; `per_class` adds
    each class's test accuracy (from confusion.json) to the groups' tables.
    """
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else results_dir / REPORT_DIR
    runs, skipped = load_results(results_dir, names, presentation=presentation)
    entries = pool_seeds(runs)
    groups = _grouped(entries)
    if group is not None:
        if group not in groups:
            known = ", ".join(repr(g) for g in groups) or "none: no results yet"
            raise WorkspaceError(f"no report group {group!r} in {results_dir} (groups: {known})")
        groups = {group: groups[group]}
        entries = groups[group]
        runs = [r for e in entries for r in e.runs]
        skipped = []

    # Figures: one per run (in entry order, so pooled seeds sit together), one overlay per group, then a
    # confusion matrix per run that has one.
    ordered_runs = [r for e in entries for r in e.runs]
    with_confusion = [r for r in ordered_runs if r.confusion is not None]
    jobs = _figure_jobs(ordered_runs, groups, with_confusion)
    pngs = draw_all(jobs, workers)

    figures_dir = out_dir / FIGURES_DIR
    figures_dir.mkdir(parents=True, exist_ok=True)
    safe_names = _file_names([r.name for r in ordered_runs])
    files = [f"exp-{name}.png" for name in safe_names]
    files += [f"group-{i + 1:02d}-{_slug(name)}.png" for i, name in enumerate(groups)]
    files += [f"confusion-{safe_names[ordered_runs.index(r)]}.png" for r in with_confusion]
    # Augmentation previews (`kagglerun preview`) of the runs shown, copied beside the figures.
    previews = {i: preview_path(results_dir, r.name) for i, r in enumerate(ordered_runs)}
    previews = {i: p for i, p in previews.items() if p.is_file()}
    preview_files = {i: f"preview-{safe_names[i]}.png" for i in previews}
    preview_bytes = {i: p.read_bytes() for i, p in previews.items()}
    figures, pdfs = _write_figures(figures_dir, dict(zip(files, pngs, strict=True)),
                                   {preview_files[i]: b for i, b in preview_bytes.items()}, jobs if latex else None)

    searches = search_sections(results_dir)
    sweeps = sweep_sections(runs, exclude={s.name for s in searches})
    extra_views: dict[int, list[dict[str, str]]] = {}
    parts: list[SweepSection | SearchSection] = [*sweeps, *searches]
    for part in parts:
        for fig in part.figures:
            _write(figures_dir / fig.file, fig.png)
            figures.append(figures_dir / fig.file)
            extra_views.setdefault(id(part), []).append({
                "path": f"{FIGURES_DIR}/{fig.file}", "caption": fig.caption,
                "data_uri": "data:image/png;base64," + base64.b64encode(fig.png).decode("ascii")})

    def figure(i: int) -> dict[str, str]:
        return _figure_view(f"{FIGURES_DIR}/{files[i]}", pngs[i])

    tables = {name: group_table(members, per_class=per_class) for name, members in groups.items()}
    table = main_table(entries)
    summary = summary_frame(runs)
    problem_runs = [r for r in ordered_runs if r.state != "complete"]
    first_confusion = len(ordered_runs) + len(groups)
    context = {
        "title": "kagglerun report" + (f": {group}" if group is not None else ""),
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
                  "classes": _classes(r), "stop_reason": str(r.summary.get("stop_reason") or ""),
                  "confusion": figure(first_confusion + with_confusion.index(r)) if r in with_confusion else None,
                  "preview": _figure_view(f"{FIGURES_DIR}/{preview_files[i]}", preview_bytes[i])
                  if i in previews else None}
                 for i, r in enumerate(ordered_runs)],
        "sweeps": [{"name": p.name, "anchor": f"sweep-{_slug(p.name)}", "metric": p.metric, "best": p.best,
                    "table": _table_view(p.table, index=False), "figures": extra_views.get(id(p), [])}
                   for p in sweeps],
        "searches": [{"name": p.name, "anchor": f"search-{_slug(p.name)}", "metric": p.metric, "best": p.best,
                      "table": _table_view(p.table, index=False), "figures": extra_views.get(id(p), [])}
                     for p in searches],
    }
    env = environment(templates, report=True)
    markdown, html = out_dir / "report.md", out_dir / "report.html"
    # both rendered before either is written: a broken template (a workspace's own) leaves the last report whole
    texts = {path: render_template(env, path.name + ".j2", context, "the report") for path in (markdown, html)}
    for path, text in texts.items():
        _write(path, text)
    summary_csv = out_dir / "summary.csv"
    _write(summary_csv, summary.to_csv(index=False))
    group_pdfs = {name: f"{FIGURES_DIR}/{files[len(ordered_runs) + i][: -len('.png')]}.pdf"
                  for i, name in enumerate(groups)}
    tex = write_latex(out_dir / TABLES_DIR, groups, per_class=per_class, figures=group_pdfs) if latex else []
    return Report(out_dir=out_dir, markdown=markdown, html=html, summary_csv=summary_csv, figures=figures,
                  table=table, summary=summary, groups=tables, problems=[r.name for r in problem_runs],
                  skipped=skipped, latex=tex, pdfs=pdfs)


def _figure_jobs(ordered_runs: list[Result], groups: dict[str, list[Column]],
                 with_confusion: list[Result]) -> list[RunFigure | GroupFigure | ConfusionFigure]:
    """What to draw, in this order: each run, each group's overlay, each run's confusion matrix."""
    jobs: list[RunFigure | GroupFigure | ConfusionFigure] = []
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
    for run in with_confusion:
        confusion = run.confusion or {}
        at = f" (best checkpoint, epoch {confusion['epoch']})" if confusion.get("epoch") else ""
        jobs.append(ConfusionFigure(f"{run.name}: confusion matrix on the test set{at}", confusion["classes"],
                                    confusion["matrix"]))
    return jobs


def _grouped(entries: list[Column]) -> dict[str, list[Column]]:
    """Entries by report group (ungrouped ones under UNGROUPED), then each also in its `report.also` groups,
    after their own members."""
    groups: dict[str, list[Column]] = {}
    for entry in entries:
        groups.setdefault(entry.group or UNGROUPED, []).append(entry)
    for entry in entries:
        for extra in entry.runs[0].flat.get("report.also") or ():
            groups.setdefault(str(extra), []).append(entry)
    return groups


def _write_figures(folder: Path, drawn: dict[str, bytes], copied: dict[str, bytes],
                   jobs: list | None) -> tuple[list[Path], list[Path]]:
    """Write the drawn figures and the copied previews into `folder`, and with `jobs` (LaTeX) each drawn
    figure again as PDF beside its PNG; figures of runs no longer in the report go."""
    keep = set(drawn) | set(copied)
    for stale in [*folder.glob("*.png"), *(folder.glob("*.pdf") if jobs is not None else [])]:
        if stale.with_suffix(".png").name not in keep:
            stale.unlink()
    figures = []
    for file, data in [*drawn.items(), *copied.items()]:
        _write(folder / file, data)
        figures.append(folder / file)
    pdfs = []
    for file, job in zip(drawn, jobs or [], strict=False):
        pdf = folder / (file[: -len(".png")] + ".pdf")
        _write(pdf, draw_pdf(job))
        pdfs.append(pdf)
    return figures, pdfs


def _figure_view(path: str, png: bytes) -> dict[str, str]:
    return {"path": path, "data_uri": "data:image/png;base64," + base64.b64encode(png).decode("ascii")}
