"""`kagglerun report`, `compare` and `preview`: the comparison report of results/, any runs side by side, and
a picture of an experiment's augmentation."""

from __future__ import annotations

from pathlib import Path

import click

from ..report import build_report
from ..report.compare import compare_runs
from ..report.load import preview_path
from .app import console, main, workspace
from .views import compare_tables, report_table, text


@main.command()
@click.argument("experiments", nargs=-1)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Write the report there (default: results/report).")
@click.option("--group", help="Only this report group (report.group of the experiments).")
@click.option("--format", "formats", type=click.Choice(["latex"]), multiple=True,
              help="Also write this format: latex = one booktabs .tex table per group in tables/, report.tex, "
              "and the figures as PDF beside the PNGs (Markdown, HTML and CSV are always written).")
@click.option("--per-class", is_flag=True, help="Add each class's test accuracy (best checkpoint) to the group tables.")
def report(experiments: tuple[str, ...], out_dir: str | None, group: str | None, formats: tuple[str, ...],
           per_class: bool) -> None:
    """Comparison report of results/ (EXP… names or globs): tables, curves, Markdown, self-contained HTML, CSV.

    Group, label, order and description come from the experiment files as they are now (runs whose file is
    gone keep what they were trained with), so regrouping or relabelling needs no retraining."""
    ws = workspace()
    # workers=None: draw figures in one process per CPU when there are enough of them to pay (BENCHMARKS.md)
    built = build_report(ws.results, Path(out_dir) if out_dir else None, list(experiments) or None,
                         templates=ws.templates, workers=None, group=group, presentation=ws.store().presentation(),
                         latex="latex" in formats, per_class=per_class)
    console.print(report_table(built))
    if built.latex:
        console.print(text(f"LaTeX: {built.latex[-1]} ({len(built.latex) - 1} tables in "
                           f"{built.latex[0].parent}, {len(built.pdfs)} PDF figures)"), soft_wrap=True)
    console.print(text(f"report: {built.html}"), soft_wrap=True)


@main.command()
@click.argument("experiments", nargs=-1, required=True)
@click.option("--out", type=click.Path(dir_okay=False), help="The figure (default: results/report/compare.png).")
@click.option("--pdf", is_flag=True, help="Also write the figure as PDF beside the PNG.")
def compare(experiments: tuple[str, ...], out: str | None, pdf: bool) -> None:
    """Any runs side by side (EXP… names or globs, whatever their groups): one figure with their curves
    overlaid, and a table of the settings in which they differ and of their results."""
    ws = workspace()
    done = compare_runs(ws.results, list(experiments), Path(out) if out else None,
                        presentation=ws.store().presentation(), pdf=pdf)
    for table in compare_tables(done):
        console.print(table)
    for note in done.notes:
        console.print(text(note))
    console.print(text(f"figure: {done.figure}" + (f" and {done.pdf}" if done.pdf else "")), soft_wrap=True)


@main.command()
@click.argument("experiment")
@click.option("-n", "--images", type=click.IntRange(1, 32), default=4, show_default=True, help="Images shown.")
@click.option("--versions", type=click.IntRange(1, 16), default=5, show_default=True,
              help="Augmented versions beside each original.")
@click.option("--out", type=click.Path(dir_okay=False), help="The PNG (default: results/_previews/EXP.png, which "
              "the report shows).")
def preview(experiment: str, images: int, versions: int, out: str | None) -> None:
    """A picture of N images of EXP's data set, each original beside augmented versions drawn with EXP's own
    settings by the code that trains."""
    from ..report.preview import write_preview  # torch: loaded only for this command

    ws = workspace()
    settings = ws.store().load(experiment)
    path = Path(out) if out else preview_path(ws.results, experiment)
    drawn = write_preview(settings.as_dict(), path, images, versions, data_dir=ws.data, input_dir=ws.root / "input")
    if not drawn.augments:
        console.print(text(f"note: {experiment} does not augment (data.augment and data.color_jitter are off): "
                           "the versions equal the originals"))
    console.print(text(f"preview: {drawn.path}"), soft_wrap=True)
