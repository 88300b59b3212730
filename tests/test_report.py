"""The comparison report, built from results folders written in the output contract's format."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest

from kagglerun.cli.views import report_table as terminal_table
from kagglerun.core.contract import SUMMARY_KEYS, atomic_write_json, write_history
from kagglerun.errors import KagglerunError
from kagglerun.experiments import Settings
from kagglerun.report import build_report
from kagglerun.report import load_results as load_runs

ADAM = {"optimizer": "adam", "lr": 3e-4, "weight_decay": 1e-6}
SGD = {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-6}
MNIST = {"dataset": "mnist", "mean": (0.1307,), "std": (0.3081,), "translate": 0.0, "color_jitter": False}

# name: (model, data, training, report, best test acc, best epoch); from the seed study's table in README.md.
# The seed gives no best epoch for Tables 2 and 3; those here are placeholders.
SEED_STUDY = {
    "bsln_1": ({"name": "c5l3", "dropout": "all"}, {}, {**ADAM, "epochs": 150},
               {"group": "Table 1", "order": 1}, 85.11, 134),
    "bsln_2": ({"name": "c5l3", "dropout": "all"}, {}, {**SGD, "epochs": 150},
               {"group": "Table 1", "order": 2}, 84.95, 146),
    "bsln_3": ({"name": "c5l3", "dropout": "linear", "batchnorm": True}, {"color_jitter": True},
               {**ADAM, "epochs": 150}, {"group": "Table 1", "order": 3}, 89.31, 118),
    "bsln_4": ({"name": "c5l3", "dropout": "none", "batchnorm": True}, {"color_jitter": True},
               {**ADAM, "epochs": 150}, {"group": "Table 1", "order": 4}, 89.69, 147),
    "bsln_5": ({"name": "c5l3", "dropout": "linear", "batchnorm": True}, {},
               {**ADAM, "epochs": 150}, {"group": "Table 1", "order": 5}, 88.34, 84),
    "bsln_6": ({"name": "c5l3", "dropout": "linear", "batchnorm": True}, {"color_jitter": True},
               {**ADAM, "epochs": 256}, {"group": "Table 1", "order": 6}, 89.73, 236),
    "vgg16": ({"name": "vgg16", "batchnorm": True, "dropout": "linear"}, {"color_jitter": True},
              {**ADAM, "epochs": 150}, {"group": "Table 2", "order": 1, "label": "vgg16"}, 91.01, 141),
    "res18": ({"name": "resnet18", "batchnorm": True}, {"color_jitter": True},
              {**ADAM, "epochs": 150}, {"group": "Table 2", "order": 2, "label": "ResNet18"}, 92.51, 137),
    "res50": ({"name": "resnet50", "batchnorm": True}, {"color_jitter": True},
              {**ADAM, "epochs": 150}, {"group": "Table 2", "order": 3, "label": "ResNet50"}, 92.29, 129),
    "mnist_bsln": ({"name": "c5l3", "dropout": "linear", "batchnorm": True}, MNIST,
                   {**ADAM, "epochs": 100}, {"group": "Table 3", "order": 1, "label": "Best"}, 99.35, 77),
    "mnist_res18": ({"name": "resnet18", "batchnorm": True}, MNIST,
                    {**ADAM, "epochs": 150}, {"group": "Table 3", "order": 2, "label": "ResNet18"}, 99.50, 121),
}


def settings_of(name: str, model: dict, data: dict, training: dict, report: dict) -> dict:
    """Resolved settings as the notebook writes them, validated by the real settings model."""
    return Settings.model_validate({
        "name": name, "model": model, "data": {"dataset": "cifar10", **data}, "training": training,
        "report": report,
    }).as_dict()


def write_run(results: Path, settings: dict, best: float, best_epoch: int, *, epochs_done: int | None = None,
              state: str = "complete", error: str | None = None, missing_epochs: tuple[int, ...] = (),
              log: str | None = None) -> Path:
    """One results folder in the output contract's format, its best test accuracy at `best_epoch`."""
    folder = results / settings["name"]
    total = settings["training"]["epochs"]
    done = total if epochs_done is None else epochs_done
    rows = []
    for epoch in range(1, done + 1):
        # Rises towards `best` from below and never reaches it, except at `best_epoch` itself.
        acc = best if epoch == best_epoch else best - 0.3 - 20 * math.exp(-epoch / 15)
        rows.append({"epoch": epoch, "train_loss": 2 * math.exp(-epoch / 30), "train_acc": min(99.0, acc + 3),
                     "test_loss": 0.4 + 1.5 * math.exp(-epoch / 20) + epoch / 1000, "test_acc": acc,
                     "lr": settings["training"]["lr"], "seconds": 30.0})
    write_history(folder / "history.csv", [r for r in rows if r["epoch"] not in missing_epochs])
    atomic_write_json(folder / "settings.json", settings)
    shown = [r for r in rows if r["epoch"] <= done]
    best_row = max(shown, key=lambda r: r["test_acc"]) if shown else None
    summary = dict.fromkeys(SUMMARY_KEYS)
    summary.update({
        "experiment": settings["name"], "state": state, "engine": "torch", "epochs_done": done,
        "epochs_total": total, "best_test_acc": best_row and best_row["test_acc"],
        "best_epoch": best_row and best_row["epoch"], "final_test_acc": shown[-1]["test_acc"] if shown else None,
        "params": 7_280_000, "total_seconds": 30.0 * done, "device": "cuda (Tesla T4)", "error": error,
    })
    atomic_write_json(folder / "summary.json", summary)
    if log is not None:
        (folder / "log.txt").write_text(log)
    return folder


def write_seed_study(results: Path) -> None:
    for name, (model, data, training, report, best, best_epoch) in SEED_STUDY.items():
        write_run(results, settings_of(name, model, data, training, report), best, best_epoch)


def markdown_table(markdown: str, heading: str) -> pd.DataFrame:
    """The first pipe table under `## heading` in report.md, as a frame indexed by its first column."""
    section = markdown.split(f"\n## {heading}\n", 1)[1]
    lines = [line for line in section.split("\n## ", 1)[0].splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
    header, body = cells[0], cells[2:]  # cells[1] is the |---| rule
    return pd.DataFrame(body, columns=header).set_index(header[0])


@pytest.fixture(scope="module")
def seed_report(tmp_path_factory):
    results = tmp_path_factory.mktemp("ws") / "results"
    write_seed_study(results)
    return build_report(results)


def test_seed_tables_carry_best_accuracy_and_epoch_in_the_seeds_layout(seed_report):
    markdown = seed_report.markdown.read_text()
    table1 = markdown_table(markdown, "Table 1")
    # Settings as rows, experiments as columns in `report.order`, ending with BestTestAcc and BestEpoch.
    assert list(table1.columns) == ["bsln_1", "bsln_2", "bsln_3", "bsln_4", "bsln_5", "bsln_6"]
    assert list(table1.index[-2:]) == ["BestTestAcc", "BestEpoch"]
    assert list(table1.loc["BestTestAcc"]) == ["85.11", "84.95", "89.31", "89.69", "88.34", "89.73"]
    assert list(table1.loc["BestEpoch"]) == ["134", "146", "118", "147", "84", "236"]
    # The settings the seed's Table 1 varies are its rows, in the seed's words where it had them.
    assert list(table1.loc["Optimizer"]) == ["adam", "sgd", "adam", "adam", "adam", "adam"]
    assert list(table1.loc["ExtraDataAug"]) == ["", "", "✓", "✓", "", "✓"]
    assert list(table1.loc["Dropout"]) == ["all", "all", "linear", "none", "linear", "linear"]
    assert list(table1.loc["BatchNorm"]) == ["", "", "✓", "✓", "✓", "✓"]
    assert list(table1.loc["MaxEpoch"]) == ["150", "150", "150", "150", "150", "256"]
    assert "State" not in table1.index  # all complete: no state row

    table2 = markdown_table(markdown, "Table 2")
    assert list(table2.columns) == ["vgg16", "ResNet18", "ResNet50"]  # report.label titles the columns
    assert list(table2.loc["Model"]) == ["vgg16", "resnet18", "resnet50"]
    assert list(table2.loc["BestTestAcc"]) == ["91.01", "92.51", "92.29"]
    assert list(table2.loc["BestEpoch"]) == ["141", "137", "129"]
    assert list(table2.loc["Experiment"]) == ["vgg16", "res18", "res50"]

    table3 = markdown_table(markdown, "Table 3")
    assert list(table3.columns) == ["Best", "ResNet18"]
    assert list(table3.loc["BestTestAcc"]) == ["99.35", "99.50"]
    assert list(table3.loc["MaxEpoch"]) == ["100", "150"]

    # The same tables reach the HTML and the Report object.
    html = seed_report.html.read_text()
    for name, (*_, best, epoch) in SEED_STUDY.items():
        assert f"<td>{best:.2f}</td>" in html
        column = seed_report.groups[SEED_STUDY[name][3]["group"]]
        title = SEED_STUDY[name][3].get("label", name)
        assert column.loc["BestTestAcc", title] == f"{best:.2f}"
        assert column.loc["BestEpoch", title] == str(epoch)


def test_outputs_are_written_and_the_html_is_self_contained(seed_report):
    html = seed_report.html.read_text()
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) == 11 + 3  # one per experiment, one overlay per group
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html)  # nothing fetched from elsewhere
    assert re.findall(r"<script[^>]*>", html) == ["<script>"]  # one inline script (sorting), nothing loaded
    assert sorted(p.name for p in seed_report.figures) == sorted(
        [f"exp-{n}.png" for n in SEED_STUDY] + ["group-01-table-1.png", "group-02-table-2.png", "group-03-table-3.png"])
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in seed_report.figures)
    markdown = seed_report.markdown.read_text()
    for p in seed_report.figures:  # Markdown links the figure files, relative to report.md
        assert f"](figures/{p.name})" in markdown
    assert seed_report.out_dir == seed_report.markdown.parent
    assert seed_report.markdown.parent.name == "report"


def test_summary_csv_has_one_row_per_experiment_with_varying_settings_and_results(seed_report):
    summary = pd.read_csv(seed_report.summary_csv).set_index("experiment")
    assert sorted(summary.index) == sorted(SEED_STUDY)
    for column in ("model.name", "model.dropout", "model.batchnorm", "data.dataset", "data.color_jitter",
                   "training.optimizer", "training.lr", "training.epochs", "report.group"):
        assert column in summary.columns
    for column in ("training.batch_size", "training.seed", "name", "kaggle.slug", "report.label"):
        assert column not in summary.columns  # equal everywhere, or naming rather than describing a run
    for name, (*_, best, epoch) in SEED_STUDY.items():
        assert summary.loc[name, "best_test_acc"] == pytest.approx(best)
        assert summary.loc[name, "best_epoch"] == epoch
    assert summary.loc["bsln_6", "final_test_acc"] < summary.loc["bsln_6", "best_test_acc"]
    assert summary.loc["bsln_2", "training.optimizer"] == "sgd"
    assert set(summary["state"]) == {"complete"}
    assert set(summary["params"]) == {7_280_000}
    assert summary.loc["bsln_6", "wall_seconds"] == pytest.approx(30.0 * 256)
    assert set(summary["device"]) == {"cuda (Tesla T4)"}


def test_terminal_shows_the_main_table(seed_report):
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(terminal_table(seed_report))
    text = console.export_text()
    assert list(seed_report.table["experiment"]) == [
        "bsln_1", "bsln_2", "bsln_3", "bsln_4", "bsln_5", "bsln_6", "vgg16", "res18", "res50", "mnist_bsln",
        "mnist_res18"]
    assert "85.11" in text and "236" in text and "7.28 M" in text


def test_no_results_gives_an_empty_report(tmp_path):
    report = build_report(tmp_path / "results")  # not even the folder yet
    assert report.table.empty and report.summary.empty and report.figures == []
    assert "No results yet" in report.markdown.read_text()
    assert "No results yet" in report.html.read_text()
    assert list(pd.read_csv(report.summary_csv).columns)[:2] == ["experiment", "best_test_acc"]


def test_one_experiment_and_a_custom_out_dir(tmp_path):
    write_run(tmp_path, settings_of("solo", {"name": "c5l3"}, {}, {"epochs": 3}, {}), 50.0, 2)
    report = build_report(tmp_path, out_dir=tmp_path / "elsewhere")
    assert report.html.parent == tmp_path / "elsewhere"
    table = markdown_table(report.markdown.read_text(), "Other experiments")
    assert list(table.columns) == ["solo"]
    assert table.loc["BestTestAcc", "solo"] == "50.00" and table.loc["BestEpoch", "solo"] == "2"
    assert list(pd.read_csv(report.summary_csv)["experiment"]) == ["solo"]


def test_names_select_experiments_and_unknown_names_are_an_error(tmp_path):
    write_seed_study(tmp_path)
    report = build_report(tmp_path, names=["bsln_*", "res18"])
    assert sorted(report.summary["experiment"]) == ["bsln_1", "bsln_2", "bsln_3", "bsln_4", "bsln_5", "bsln_6",
                                                    "res18"]
    with pytest.raises(KagglerunError, match="bsln_9"):
        build_report(tmp_path, names=["bsln_9"])
    # One missing among others (say, a run not pulled yet) is listed, not fatal.
    report = build_report(tmp_path, names=["bsln_1", "bsln_9"])
    assert list(report.summary["experiment"]) == ["bsln_1"]
    assert [s.name for s in report.skipped] == ["bsln_9"]
    assert "### bsln_9: no results" in report.markdown.read_text()


def test_a_running_run_with_gaps_is_marked_and_a_failed_run_shows_its_reason_and_log_tail(tmp_path):
    group = {"group": "Live"}
    write_run(tmp_path, settings_of("done", {"name": "c5l3"}, {}, {"epochs": 20}, group), 70.0, 18)
    write_run(tmp_path, settings_of("going", {"name": "vgg16"}, {}, {"epochs": 150}, group), 60.0, 35,
              epochs_done=40, state="running", missing_epochs=(12, 13, 14, 39))
    log = "\n".join(f"epoch {i}" for i in range(100)) + "\nKAGGLE_KEY=abc123secret\n<script>alert(1)</script>\n" \
        "RuntimeError: CUDA out of memory"
    write_run(tmp_path, settings_of("broke", {"name": "resnet50"}, {}, {"epochs": 150}, group), 40.0, 3,
              epochs_done=5, state="failed", error="RuntimeError: CUDA out of memory", log=log)
    # A run that died before its first epoch: settings and a log, no summary.
    early = settings_of("early", {"name": "c5l3"}, {}, {"epochs": 9}, {})
    atomic_write_json(tmp_path / "early" / "settings.json", early)
    (tmp_path / "early" / "log.txt").write_text("ModuleNotFoundError: No module named 'torchvision'\n")
    (tmp_path / "notes").mkdir()  # not a run at all: ignored quietly

    report = build_report(tmp_path)
    table = report.groups["Live"]
    assert table.loc["State", "going"] == "running (40/150)"
    assert table.loc["State", "broke"] == "failed (5/150)"
    assert table.loc["BestEpoch", "going"] == "35" and table.loc["BestTestAcc", "going"] == "60.00"
    assert report.problems == ["broke", "going"]  # report order: group, report.order, name
    assert [s.name for s in report.skipped] == ["early"]
    row = report.table.set_index("experiment").loc["going"]
    assert (row["state"], row["epochs"]) == ("running", "40/150")

    markdown = report.markdown.read_text()
    problems = markdown.split("## Failed or unfinished runs", 1)[1]
    assert "### broke: failed" in problems and "RuntimeError: CUDA out of memory" in problems
    assert "epoch 99" in problems and "epoch 10\n" not in problems  # the tail, not the whole log
    assert "### going: running" in problems and "still running" in problems
    assert "### early: no results" in problems and "No module named 'torchvision'" in problems
    html = report.html.read_text()
    for text in (markdown, html):
        assert "abc123secret" not in text
    assert html.count("<script") == 1 and "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # logs are text, not markup
    assert "notes" not in markdown


def test_partial_or_missing_history_is_tolerated(tmp_path):
    folder = write_run(tmp_path, settings_of("cut", {"name": "c5l3"}, {}, {"epochs": 10}, {}), 55.0, 4,
                       epochs_done=6, state="stopped")
    history = (folder / "history.csv").read_text()
    # A resumed run that wrote epoch 2 again, then a half-written last line.
    (folder / "history.csv").write_text(history + "2,0.1,50,0.2,51,0.0003,30\n7,0.5,80\n")
    write_run(tmp_path, settings_of("blank", {"name": "c5l3"}, {}, {"epochs": 10}, {}), 55.0, 4, epochs_done=0,
              state="running")
    (tmp_path / "blank" / "history.csv").unlink()
    report = build_report(tmp_path)
    summary = report.summary.set_index("experiment")
    assert summary.loc["cut", "best_epoch"] == 4
    cut = next(r for r in load_runs(tmp_path)[0] if r.name == "cut").history
    assert list(cut["epoch"]) == [1, 2, 3, 4, 5, 6, 7] and cut.loc[1, "test_acc"] == 51
    assert pd.isna(summary.loc["blank", "best_test_acc"])
    assert report.groups["Other experiments"].loc["BestTestAcc", "blank"] == "–"
    assert len(report.figures) == 3


def test_seeds_pool_into_mean_and_std(tmp_path):
    group = {"group": "Seeds"}
    for seed, best in zip((0, 1, 2), (91.0, 92.0, 93.0)):
        settings = settings_of(f"res18_s{seed}", {"name": "resnet18"}, {}, {"epochs": 30, "seed": seed},
                               {**group, "label": "res18"})
        write_run(tmp_path, settings, best, 20 + seed, missing_epochs=(5,) if seed == 1 else ())
    write_run(tmp_path, settings_of("vgg", {"name": "vgg16"}, {}, {"epochs": 30}, group), 90.0, 25)
    report = build_report(tmp_path)
    table = report.groups["Seeds"]
    assert list(table.columns) == ["res18 (3 seeds)", "vgg"]
    assert table.loc["BestTestAcc", "res18 (3 seeds)"] == "92.00 ± 1.00"
    assert table.loc["BestEpoch", "res18 (3 seeds)"] == "21 ± 1"
    assert table.loc["Seeds", "res18 (3 seeds)"] == "3: 0, 1, 2"
    assert table.loc["BestTestAcc", "vgg"] == "90.00"
    assert "training.seed" not in table.index and "Seed" not in table.index
    assert report.table.set_index("experiment").loc["res18_s0 (3 seeds)", "best test acc (%)"] == "92.00 ± 1.00"
    # summary.csv keeps every run, with the seed as a varying setting.
    summary = pd.read_csv(report.summary_csv).set_index("experiment")
    assert list(summary.loc[["res18_s0", "res18_s1", "res18_s2"], "training.seed"]) == [0, 1, 2]
    assert "shaded" in report.html.read_text()


def test_runs_that_differ_in_more_than_the_seed_stay_apart(tmp_path):
    for seed, lr in ((0, 3e-4), (1, 1e-3)):
        write_run(tmp_path, settings_of(f"a{seed}", {"name": "c5l3"}, {}, {"epochs": 5, "seed": seed, "lr": lr}, {}),
                  50.0 + seed, 3)
    table = build_report(tmp_path).groups["Other experiments"]
    assert list(table.columns) == ["a0", "a1"]
    assert list(table.loc["LR"]) == ["0.0003", "0.001"] and list(table.loc["Seed"]) == ["0", "1"]


def test_a_rebuild_removes_figures_of_runs_no_longer_reported(tmp_path):
    write_seed_study(tmp_path)
    first = build_report(tmp_path)
    assert (first.out_dir / "figures" / "exp-res50.png").exists()
    second = build_report(tmp_path, names=["bsln_1"])
    assert sorted(p.name for p in (second.out_dir / "figures").iterdir()) == [
        "exp-bsln_1.png", "group-01-table-1.png"]


def test_figures_drawn_in_worker_processes_match_those_drawn_here(tmp_path):
    write_seed_study(tmp_path / "results")
    for i in range(16):  # enough figures for the pool to be used
        write_run(tmp_path / "results", settings_of(f"extra_{i}", {"name": "c5l3"}, {},
                                                    {"epochs": 10 + i, "lr": 1e-4 * (i + 1)}, {}), 60.0 + i, 5)
    serial = build_report(tmp_path / "results", tmp_path / "serial", workers=1)
    pooled = build_report(tmp_path / "results", tmp_path / "pooled", workers=2)
    assert len(serial.figures) == 11 + 16 + 4
    assert [p.read_bytes() for p in serial.figures] == [p.read_bytes() for p in pooled.figures]


def test_the_cli_prints_the_report_path_and_table(tmp_path, monkeypatch):
    cli = pytest.importorskip("kagglerun.cli")
    if "report" not in cli.main.commands:
        pytest.skip("kagglerun.cli has no report command yet")
    from click.testing import CliRunner

    (tmp_path / "experiments").mkdir()
    write_seed_study(tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KAGGLERUN_WORKSPACE", raising=False)
    result = CliRunner().invoke(cli.main, ["report", "bsln_*"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "report.html" in result.output and "85.11" in result.output


def test_runs_with_equal_settings_and_seed_are_repeats_not_a_spread(tmp_path):
    for name in ("local_run", "kaggle_run"):
        write_run(tmp_path, settings_of(name, {"name": "c5l3"}, {}, {"epochs": 5}, {}), 50.0, 3)
    table = build_report(tmp_path).groups["Other experiments"]
    assert list(table.columns) == ["kaggle_run", "local_run"] and "Seeds" not in table.index


def test_a_workspace_template_overrides_the_packages(tmp_path):
    write_run(tmp_path / "results", settings_of("solo", {"name": "c5l3"}, {}, {"epochs": 3}, {}), 50.0, 2)
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "report.md.j2").write_text("{% for r in runs %}{{ r.name }}{% endfor %}\n")
    report = build_report(tmp_path / "results", templates=tmp_path / "templates")
    assert report.markdown.read_text().strip() == "solo"
    assert "<!DOCTYPE html>" in report.html.read_text()  # the package's HTML template still applies


def test_report_also_puts_both_engines_side_by_side_as_the_seeds_table_4(tmp_path):
    results = tmp_path / "results"
    table4 = "Table 4: from-scratch engine against PyTorch on MNIST"
    for name, engine, best in (("mnist_bsln", "torch", 99.35), ("scratch_mnist_bsln", "scratch", 98.97)):
        model, data, training, _, _, _ = SEED_STUDY["mnist_bsln"]
        report = {"group": "Table 3" if engine == "torch" else table4, "label": name,
                  "also": (table4,) if engine == "torch" else ()}
        settings = settings_of(name, model, data, training, report)
        settings["engine"] = engine
        write_run(results, settings, best, 60)
    built = build_report(results)
    assert list(built.groups) == ["Table 3", table4]
    table = markdown_table(built.markdown.read_text(), table4)
    assert list(table.columns) == ["scratch_mnist_bsln", "mnist_bsln"]
    assert table.loc["engine"].tolist() == ["scratch", "torch"]
    assert table.loc["BestTestAcc"].tolist() == ["98.97", "99.35"]
