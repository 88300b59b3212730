"""Per-class results: a run's end evaluates its best checkpoint into confusion.json (in the manifest, so pull
verifies it like every contract file); the report draws a confusion matrix per run and, on request, each
class's accuracy in the group tables; runs from before still report."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from test_report import markdown_table, settings_of, write_run

from kagglerun.core import torch_engine  # noqa: F401  (registers the torch engine)
from kagglerun.core.contract import (
    CONFUSION_FILE,
    MANIFEST_FILE,
    atomic_write_json,
    file_sha256,
    read_summary,
    write_manifest,
)
from kagglerun.core.engine import Data
from kagglerun.core.per_class import CIFAR10_CLASSES, class_names, confusion_matrix, per_class
from kagglerun.core.train import run
from kagglerun.experiments import Settings
from kagglerun.kaggle import OutputFile, Outputs
from kagglerun.report import build_report
from kagglerun.runs.ledger import Version
from kagglerun.runs.outcome import Listing, Unverified, fetch_verified


def tiny(engine: str = "torch") -> dict:
    return Settings.model_validate_json(json.dumps({
        "name": "pc", "engine": engine,
        "model": {"name": "c5l3", "batchnorm": True, "width": 0.125},
        "data": {"dataset": "synthetic", "synthetic_like": "mnist", "synthetic_train": 96, "synthetic_test": 40,
                 "mean": [0.5], "std": [0.5]},
        "training": {"epochs": 2, "batch_size": 32, "lr": 1e-3, "device": "cpu", "channels_last": False},
    })).as_dict()


def test_confusion_matrix_and_per_class_accuracy():
    labels, predicted = torch.tensor([0, 0, 1, 1, 1, 2]), torch.tensor([0, 1, 1, 1, 0, 2])
    matrix = confusion_matrix(labels, predicted, 4)
    assert matrix == [[1, 1, 0, 0], [1, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert per_class(matrix) == [50.0, pytest.approx(200 / 3), 100.0, None]


def _data(name: str, **extra) -> Data:
    data = Data(name, torch.zeros(1, 1, 2, 2), None, None, None, 10, (0.5,), (0.5,))
    for key, value in extra.items():
        setattr(data, key, value)
    return data


def test_class_names_where_the_data_set_has_them():
    assert class_names(_data("cifar10")) == list(CIFAR10_CLASSES) and CIFAR10_CLASSES[3] == "cat"
    assert class_names(_data("mnist")) == [str(i) for i in range(10)] == class_names(_data("digits"))
    assert class_names(_data("synthetic"))[:2] == ["class 0", "class 1"]
    own = [f"c{i}" for i in range(10)]
    assert class_names(_data("cifar10", class_names=own)) == own  # a data set that carries its own


@pytest.mark.slow  # trains
@pytest.mark.parametrize("engine", ["torch", "scratch"])
def test_a_run_ends_with_the_best_checkpoints_confusion_matrix(tmp_path, engine):
    if engine == "scratch":
        from kagglerun.scratch import engine as _  # noqa: F401  (registers the scratch engine)
    summary = run(tiny(engine), tmp_path, log=lambda _: None)
    confusion = json.loads((tmp_path / CONFUSION_FILE).read_text())
    assert confusion["epoch"] == summary["best_epoch"] and confusion["split"] == "test"
    assert confusion["classes"] == [str(i) for i in range(10)]  # the data set's own names
    matrix = confusion["matrix"]
    assert len(matrix) == 10 and all(len(row) == 10 for row in matrix) and sum(map(sum, matrix)) == 40
    # The best checkpoint's accuracy, as its epoch measured it; the rows are the true classes of the test set.
    assert confusion["accuracy"] == pytest.approx(summary["best_test_acc"], abs=1e-6)
    from kagglerun.core.data import load_data

    assert [sum(row) for row in matrix] == [Counter(load_data(tiny(engine)).test_y.tolist())[c] for c in range(10)]
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert manifest[CONFUSION_FILE]["sha256"] == file_sha256(tmp_path / CONFUSION_FILE)


class _Served:
    """A kernel's output served from a folder, as the API client does it (download by URL, counters, retry)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.counters: Counter[str] = Counter()
        self.retry = type("Retry", (), {"delay": staticmethod(lambda attempt, after=None: 0.0)})()

    def outputs(self, kernel: str, version: int) -> Outputs:
        return Outputs([OutputFile(p.name, p.name) for p in sorted(self.folder.iterdir())], "[]")

    def download(self, url: str, path: Path) -> None:
        shutil.copyfile(self.folder / url, path)


def test_pull_verifies_the_confusion_matrix_like_every_contract_file(tmp_path):
    out = write_run(tmp_path, settings_of("out", {"name": "c5l3"}, {}, {"epochs": 3}, {}), 50.0, 2)
    _confusion(out, [8, 6, 4])
    summary = read_summary(out)
    summary.update(settings_hash="a" * 16, updated_at="2026-01-01T00:00:00+00:00")
    atomic_write_json(out / "summary.json", summary)
    write_manifest(out)
    version = Version(version=1, settings_hash=summary["settings_hash"], core_hash="", pushed_at="2020-01-01T00:00:00+00:00")
    api = _Served(out)
    got = {}
    fetch_verified(Listing(api, "ann/k", 1), version, "", attempts=1, sleep=lambda _: None,
                   into=lambda staging, log: got.update({p.name: p.read_bytes() for p in staging.iterdir()}))
    assert got[CONFUSION_FILE] == (out / CONFUSION_FILE).read_bytes()
    # The same size, other bytes: refused, as a damaged download of any contract file is.
    text = (out / CONFUSION_FILE).read_text()
    (out / CONFUSION_FILE).write_text(text.replace('"split": "test"', '"split": "tset"'))
    with pytest.raises(Unverified, match="confusion.json: SHA-256 does not match"):
        fetch_verified(Listing(api, "ann/k", 1), version, "", attempts=1, sleep=lambda _: None)


def _confusion(folder: Path, diagonal: list[int], classes=("cat", "dog", "bird")) -> None:
    n = len(classes)
    matrix = [[diagonal[i] if i == j else (10 - diagonal[i]) // (n - 1) for j in range(n)] for i in range(n)]
    (folder / CONFUSION_FILE).write_text(json.dumps({"epoch": 2, "split": "test", "classes": list(classes),
                                                     "matrix": matrix}))


def test_the_report_shows_confusion_matrices_and_per_class_accuracy_on_request(tmp_path):
    for seed, diagonal in ((0, [8, 6, 4]), (1, [10, 6, 2])):
        settings = settings_of(f"s{seed}", {"name": "c5l3"}, {}, {"epochs": 3, "seed": seed}, {"group": "G"})
        _confusion(write_run(tmp_path, settings, 60.0 + seed, 2), diagonal)
    write_run(tmp_path, settings_of("old", {"name": "vgg16"}, {}, {"epochs": 3}, {"group": "G"}), 50.0, 2)  # no file
    plain = build_report(tmp_path, tmp_path / "plain")
    assert not any(row.startswith("Acc: ") for row in plain.groups["G"].index)
    assert sorted(p.name for p in plain.figures if p.name.startswith("confusion-")) == ["confusion-s0.png",
                                                                                       "confusion-s1.png"]
    html = plain.html.read_text()
    assert html.count("confusion matrix\">") == 2 and "](figures/confusion-s0.png)" in plain.markdown.read_text()

    report = build_report(tmp_path, per_class=True)
    table = markdown_table(report.markdown.read_text(), "G")
    assert list(table.columns) == ["old", "s0 (2 seeds)"]
    assert list(table.loc["Acc: cat"]) == ["–", "90.00 ± 14.14"]
    assert list(table.loc["Acc: bird"]) == ["–", "30.00 ± 14.14"]
    assert list(table.index[-2:]) == ["BestTestAcc", "BestEpoch"]


def test_a_damaged_confusion_file_is_left_out(tmp_path):
    folder = write_run(tmp_path, settings_of("bad", {"name": "c5l3"}, {}, {"epochs": 3}, {}), 50.0, 2)
    (folder / CONFUSION_FILE).write_text('{"classes": ["a", "b"], "matrix": [[1, 2]]}')
    report = build_report(tmp_path, per_class=True)
    assert not [p for p in report.figures if p.name.startswith("confusion-")]


@pytest.mark.slow  # runs a notebook
def test_a_notebook_run_leaves_the_confusion_matrix_and_the_report_draws_it(workspace):
    from kagglerun.notebook.run import run_local

    summary = run_local(workspace, "tiny", overrides={"training.epochs": 1, "data.train_limit": 256,
                                                      "data.test_limit": 128})
    folder = workspace.results / "tiny"
    assert summary["state"] == "complete" and read_summary(folder)["best_epoch"] == 1
    confusion = json.loads((folder / CONFUSION_FILE).read_text())
    assert confusion["classes"] == [str(i) for i in range(10)] and sum(map(sum, confusion["matrix"])) == 128
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert manifest[CONFUSION_FILE]["sha256"] == file_sha256(folder / CONFUSION_FILE)
    report = build_report(workspace.results, per_class=True)
    assert (report.out_dir / "figures" / "confusion-tiny.png").is_file()
    assert "Acc: 7" in report.groups["Demo: digits"].index
