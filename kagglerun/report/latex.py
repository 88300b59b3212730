"""The report as LaTeX: one booktabs table per group (tables/<group>.tex, to `\\input` in a write-up), the
best value of each result row in bold, pooled seeds as mean $\\pm$ std, and report.tex, a document that
inputs every table and the groups' figures (PDF, written beside the PNGs). Needs booktabs and graphicx."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .files import slug, write
from .pool import Column
from .tables import class_accuracies, group_table

TABLES_DIR = "tables"
_SPECIAL = re.compile(r"[\\&%$#_{}~^]")
_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    """Text as LaTeX typesets it literally."""
    return _SPECIAL.sub(lambda m: _ESCAPES[m.group()], str(text))


def _cell(text: str) -> str:
    """A table cell of the report's text tables as LaTeX: escaped; "a ± b" as math; ✓ as "yes"; – as --."""
    text = str(text)
    if text in ("–", ""):
        return "--" if text else ""
    if " ± " in text:
        mean, std = text.split(" ± ", 1)
        return f"${tex_escape(mean)} \\pm {tex_escape(std)}$"
    return tex_escape(text.replace("✓", "yes").replace("–", "--"))


def _number(values: list[float | None], digits: int) -> tuple[float | None, str]:
    """Mean (None without values) and the cell: one value as is, several as mean $\\pm$ sample std."""
    numbers = [v for v in values if v is not None]
    if not numbers:
        return None, "--"
    mean = float(np.mean(numbers))
    if len(numbers) == 1:
        return mean, f"{mean:.{digits}f}"
    return mean, f"{mean:.{digits}f} \\pm {np.std(numbers, ddof=1):.{digits}f}"


def _bold_best(cells: list[tuple[float | None, str]]) -> list[str]:
    """Cells of one result row, the highest mean in bold (every one that ties with it)."""
    best = max((m for m, _ in cells if m is not None), default=None)
    out = []
    for mean, text in cells:
        if mean is None:
            out.append(text)
        elif best is not None and round(mean, 6) == round(best, 6) and len(cells) > 1:
            out.append(f"$\\mathbf{{{text}}}$")
        else:
            out.append(f"${text}$")
    return out


def group_tex(name: str, entries: list[Column], per_class: bool = False) -> str:
    """One group's table: settings as rows (as in report.md), entries as columns, then the results."""
    frame = group_table(entries, per_class=per_class)
    results = {"BestTestAcc": [_number([r.best[0] for r in e.runs], 2) for e in entries]}
    if "TestAccAtBestVal" in frame.index:  # a validation split: the result is the test accuracy val chose
        results["BestValAcc"] = [_number([r.chosen[2] for r in e.runs], 2) for e in entries]
        results["TestAccAtBestVal"] = [_number([r.chosen[0] for r in e.runs], 2) for e in entries]
    if per_class:
        for row in frame.index:
            if row.startswith("Acc: "):
                results[row] = [_number([class_accuracies(r).get(row[5:]) for r in e.runs], 2) for e in entries]
    lines = [
        f"% kagglerun report: group {tex_escape(name)}; needs \\usepackage{{booktabs}}",
        "\\begin{table}[htbp]",
        "\\centering",
        f"\\caption{{{tex_escape(name)}: best test accuracy (\\%) and its epoch"
        + ("; mean $\\pm$ standard deviation over seeds" if any(len(e.runs) > 1 for e in entries) else "")
        + ". Best in bold.}",
        f"\\label{{tab:{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-') or 'group'}}}",
        "\\begin{tabular}{l" + "r" * len(entries) + "}",
        "\\toprule",
        " & ".join(["Setting", *(tex_escape(c) for c in frame.columns)]) + " \\\\",
        "\\midrule",
    ]
    ruled = False
    for row, values in frame.iterrows():
        label = str(row)
        if (label in results or label in ("BestEpoch", "BestValEpoch")) and not ruled:
            lines.append("\\midrule")
            ruled = True
        cells = _bold_best(results[label]) if label in results else [_cell(v) for v in values]
        lines.append(" & ".join([tex_escape(label), *cells]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(lines)


def write_latex(folder: Path, groups: dict[str, list[Column]], *, per_class: bool = False,
                figures: dict[str, str] | None = None) -> list[Path]:
    """tables/NN-<group>.tex for every group, and report.tex beside tables/ that inputs them all (with each
    group's figure from `figures`, group -> PDF path relative to the report folder, where given)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    body = []
    for i, (name, entries) in enumerate(groups.items()):
        path = folder / f"group-{i + 1:02d}-{slug(name)}.tex"
        write(path, group_tex(name, entries, per_class))
        written.append(path)
        body.append(f"\\input{{{TABLES_DIR}/{path.name}}}")
        if figures and name in figures:
            body += ["\\begin{figure}[htbp]", "\\centering", f"\\includegraphics[width=\\linewidth]{{{figures[name]}}}",
                     f"\\caption{{{tex_escape(name)}: test accuracy and test loss against epoch.}}", "\\end{figure}"]
    for stale in folder.glob("*.tex"):
        if stale not in written:
            stale.unlink()
    document = "\n".join(["% The report's tables and figures; compile with pdflatex report.tex",
                          "\\documentclass{article}", "\\usepackage[T1]{fontenc}", "\\usepackage{booktabs}",
                          "\\usepackage{graphicx}",
                          "\\begin{document}", *body, "\\end{document}", ""])
    main = folder.parent / "report.tex"
    write(main, document)
    return [*written, main]
