"""`kagglerun compare`: any runs overlaid in one figure, whatever their groups, with a table of the settings
that differ and of the results; wrong input is one line. Labels that mathtext would choke on draw literally."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image
from test_report import settings_of, write_run

from kagglerun.cli import main
from kagglerun.errors import WorkspaceError
from kagglerun.report import build_report
from kagglerun.report.compare import compare_runs
from kagglerun.report.figures import literal


@pytest.fixture
def results(tmp_path):
    results = tmp_path / "ws" / "results"
    (tmp_path / "ws" / "experiments").mkdir(parents=True)
    write_run(results, settings_of("adam_a", {"name": "c5l3"}, {}, {"epochs": 6, "lr": 3e-4},
                                   {"group": "Table 1", "label": "Adam $x^$"}), 71.0, 5)
    write_run(results, settings_of("sgd_b", {"name": "c5l3"}, {}, {"epochs": 8, "optimizer": "sgd", "lr": 1e-2},
                                   {"group": "Table 2"}), 66.0, 7)
    # A run with a validation split: its history carries val_loss and val_acc, its summary the val keys.
    folder = write_run(results, settings_of("val_c", {"name": "vgg16"}, {}, {"epochs": 4}, {}), 60.0, 3)
    history = pd.read_csv(folder / "history.csv")
    history["val_loss"], history["val_acc"] = history["test_loss"] + 0.1, history["test_acc"] - 1
    history.to_csv(folder / "history.csv", index=False)
    summary = pd.read_json(folder / "summary.json", typ="series").to_dict()
    summary.update(best_val_acc=59.5, test_acc_at_best=59.8, selection="val")
    pd.Series(summary).to_json(folder / "summary.json")
    return results


def test_compare_overlays_runs_of_different_groups_and_tabulates_what_differs(results):
    done = compare_runs(results, ["adam_a", "sgd_b"])
    assert done.figure == results / "report" / "compare.png"
    with Image.open(done.figure) as image:
        assert image.format == "PNG" and image.width >= 800
    assert [r.name for r in done.runs] == ["adam_a", "sgd_b"]
    headers = ["Adam $x^$ (adam_a)", "sgd_b"]
    assert list(done.settings.columns) == headers
    assert list(done.settings.loc["Optimizer"]) == ["adam", "sgd"]
    assert list(done.settings.loc["LR"]) == ["0.0003", "0.01"]
    assert list(done.settings.loc["report.group"]) == ["Table 1", "Table 2"]
    assert "Model" not in done.settings.index  # the same in both: not a difference
    assert list(done.results.loc["best test acc (%)"]) == ["71.00", "66.00"]
    assert list(done.results.loc["best epoch"]) == ["5", "7"]
    assert "best val acc (%)" not in done.results.index


def test_compare_with_globs_and_a_validation_split(results, tmp_path):
    done = compare_runs(results, ["*_c", "sgd_*"], tmp_path / "mine.png", pdf=True)
    assert [r.name for r in done.runs] == ["val_c", "sgd_b"]
    assert done.figure == tmp_path / "mine.png" and done.figure.is_file()
    assert done.pdf is not None and done.pdf.read_bytes().startswith(b"%PDF")
    assert list(done.results.loc["best val acc (%)"]) == ["59.50", "–"]
    assert list(done.results.loc["selected on"]) == ["val", "test"]
    assert done.runs[0].history["val_acc"].notna().all()


def _cli(results, *args):
    return CliRunner().invoke(main, list(args), env={"KAGGLERUN_WORKSPACE": str(results.parent)})


def test_the_cli_prints_both_tables_and_the_figure(results):
    result = _cli(results, "compare", "adam_a", "sgd_b", "val_c")
    assert result.exit_code == 0, result.output
    assert "settings that differ" in result.output and "results" in result.output
    assert "71.00" in result.output and "Adam $x^$" in result.output
    assert "compare.png" in result.output


@pytest.mark.parametrize(("args", "words"), [
    (["adam_a", "nope"], "unknown experiment 'nope'"),
    (["adam_a", "zz*"], "unknown experiment 'zz*'"),
    (["adam_a"], "name two or more"),
    (["adam_a", "empty"], "empty: no history"),
])
def test_wrong_input_is_one_line(results, args, words):
    write_run(results, settings_of("empty", {"name": "c5l3"}, {}, {"epochs": 3}, {}), 50.0, 1, epochs_done=0,
              state="running")
    with pytest.raises(WorkspaceError, match=words.replace("*", r"\*").replace("'", "'")):
        compare_runs(results, args)
    result = _cli(results, "compare", *args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], result.output


def test_labels_and_groups_that_mathtext_would_choke_on_are_drawn_literally(tmp_path):
    assert literal(r"cost $\alpha^$") == r"cost \$\alpha^\$"
    for i, label in enumerate([r"$\frac{1}$ odd", "50$ and 60$", r"a_b^c $"]):
        write_run(tmp_path, settings_of(f"m{i}", {"name": "c5l3"}, {}, {"epochs": 3, "lr": 1e-3 * (i + 1)},
                                        {"group": r"G $\sum$", "label": label}), 50.0 + i, 2)
    report = build_report(tmp_path)  # mathtext would raise on these when drawing
    assert list(report.groups) == [r"G $\sum$"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in report.figures)
