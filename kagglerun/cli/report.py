"""`kagglerun report`: the comparison report of results/."""

from __future__ import annotations

from pathlib import Path

import click

from ..report import build_report
from .app import console, main, workspace
from .views import report_table, text


@main.command()
@click.argument("experiments", nargs=-1)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Write the report there (default: results/report).")
def report(experiments: tuple[str, ...], out_dir: str | None) -> None:
    """Comparison report of results/ (EXP… names or globs): tables, curves, Markdown, self-contained HTML, CSV."""
    ws = workspace()
    # workers=None: draw figures in one process per CPU when there are enough of them to pay (BENCHMARKS.md)
    built = build_report(ws.results, Path(out_dir) if out_dir else None, list(experiments) or None,
                         templates=ws.templates, workers=None)
    console.print(report_table(built))
    console.print(text(f"report: {built.html}"), soft_wrap=True)
