"""`report --format latex`: one booktabs table per group (best value bold, pooled seeds as mean ± std),
report.tex inputting them, the figures as PDF beside the PNGs; the Markdown, HTML and CSV stay. Compiled
with pdflatex where one is installed (Debian's texlive-latex-recommended), else checked for structure."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from click.testing import CliRunner
from test_report import settings_of, write_run, write_seed_study

from kagglerun.cli import main
from kagglerun.report import build_report
from kagglerun.report.latex import tex_escape


@pytest.fixture(scope="module")
def latex_report(tmp_path_factory):
    results = tmp_path_factory.mktemp("latex") / "results"
    write_seed_study(results)
    for seed, best in ((0, 92.4), (1, 92.8)):
        settings = settings_of(f"res_s{seed}", {"name": "resnet18", "batchnorm": True}, {}, {"epochs": 20, "seed": seed},
                               {"group": "Seeds & 50% $odd_group#", "label": "res18_{x}"})
        write_run(results, settings, best, 10 + seed)
    write_run(results, settings_of("vgg_s", {"name": "vgg16"}, {}, {"epochs": 20},
                                   {"group": "Seeds & 50% $odd_group#"}), 90.0, 12)
    return build_report(results, latex=True)


def test_one_tex_table_per_group_with_booktabs_bold_best_and_mean_std(latex_report):
    tables = [p for p in latex_report.latex if p.parent.name == "tables"]
    assert [p.name for p in tables] == ["group-01-seeds-50-odd-group.tex", "group-02-table-1.tex",
                                        "group-03-table-2.tex", "group-04-table-3.tex"]
    table1 = tables[1].read_text()
    for rule in ("\\toprule", "\\midrule", "\\bottomrule", "\\begin{tabular}{lrrrrrr}"):
        assert rule in table1
    best_row = next(line for line in table1.splitlines() if line.startswith("BestTestAcc"))
    assert best_row.count("\\mathbf") == 1 and "$\\mathbf{89.73}$" in best_row  # bsln_6, Table 1's best
    seeds = tables[0].read_text()
    assert "$\\mathbf{92.60 \\pm 0.28}$" in seeds  # two seeds pooled, the group's best
    assert "$90.00$" in seeds
    # Text from files is escaped: the group's & % $ _ # and the label's _ { }
    assert "Seeds \\& 50\\% \\$odd\\_group\\#" in seeds and "res18\\_\\{x\\} (2 seeds)" in seeds
    assert tex_escape("a\\b~c^") == "a\\textbackslash{}b\\textasciitilde{}c\\textasciicircum{}"


def test_figures_as_pdf_beside_the_pngs_and_the_other_formats_stay(latex_report):
    pngs = {p.stem for p in latex_report.figures}
    pdfs = {p.stem for p in latex_report.pdfs}
    assert pdfs == pngs and len(pdfs) == 11 + 3 + 4
    assert all(p.read_bytes().startswith(b"%PDF") and p.with_suffix(".png").is_file() for p in latex_report.pdfs)
    assert latex_report.markdown.is_file() and latex_report.html.is_file() and latex_report.summary_csv.is_file()
    document = latex_report.latex[-1]
    assert document.name == "report.tex" and document.parent == latex_report.out_dir
    text = document.read_text()
    assert text.count("\\input{tables/") == 4 and "\\includegraphics[width=\\linewidth]{figures/group-02-table-1.pdf}" in text
    assert "\\usepackage{booktabs}" in text and text.rstrip().endswith("\\end{document}")


def test_without_latex_nothing_of_it_is_written(tmp_path):
    write_run(tmp_path, settings_of("solo", {"name": "c5l3"}, {}, {"epochs": 3}, {}), 50.0, 2)
    report = build_report(tmp_path)
    assert report.latex == [] and report.pdfs == []
    assert not (report.out_dir / "tables").exists() and not list((report.out_dir / "figures").glob("*.pdf"))


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no pdflatex (apt-get install texlive-latex-recommended)")
def test_report_tex_compiles(latex_report, tmp_path):
    build = tmp_path / "build"
    shutil.copytree(latex_report.out_dir, build)
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex"], cwd=build,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    assert (build / "report.pdf").read_bytes().startswith(b"%PDF")
    assert "Undefined control sequence" not in done.stdout


def test_the_cli_writes_latex(tmp_path):
    (tmp_path / "experiments").mkdir()
    write_run(tmp_path / "results", settings_of("solo", {"name": "c5l3"}, {}, {"epochs": 3}, {"group": "G"}), 50.0, 2)
    result = CliRunner().invoke(main, ["report", "--format", "latex"], env={"KAGGLERUN_WORKSPACE": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert "report.tex" in result.output
    assert (tmp_path / "results" / "report" / "tables" / "group-01-g.tex").is_file()


def test_per_class_rows_in_the_tex_table_with_the_best_class_accuracy_bold(tmp_path):
    import json

    for name, diagonal, lr in (("a", 9, 1e-3), ("b", 7, 1e-2)):
        settings = settings_of(name, {"name": "c5l3"}, {}, {"epochs": 3, "lr": lr}, {"group": "G"})
        folder = write_run(tmp_path, settings, 50.0, 2)
        matrix = [[diagonal, 10 - diagonal], [10 - diagonal, diagonal]]
        (folder / "confusion.json").write_text(json.dumps({"classes": ["cat", "dog_x"], "matrix": matrix}))
    report = build_report(tmp_path, latex=True, per_class=True)
    text = report.latex[0].read_text()
    assert "Acc: cat & $\\mathbf{90.00}$ & $70.00$ \\\\" in text
    assert "Acc: dog\\_x & $\\mathbf{90.00}$ & $70.00$ \\\\" in text
