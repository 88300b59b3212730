"""Experiment files: the shipped study, inheritance, and bad input that names file and key."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from helpers import REPO, write_experiment

from kagglerun.cli import main
from kagglerun.errors import ExperimentError
from kagglerun.workspace import Workspace

SEED_TABLE = {  # name: (model, optimizer, colour jitter, dropout, batchnorm, epochs), from the seed study's table in README.md
    "bsln_1": ("c5l3", "adam", False, "all", False, 150),
    "bsln_2": ("c5l3", "sgd", False, "all", False, 150),
    "bsln_3": ("c5l3", "adam", True, "linear", True, 150),
    "bsln_4": ("c5l3", "adam", True, "none", True, 150),
    "bsln_5": ("c5l3", "adam", False, "linear", True, 150),
    "bsln_6": ("c5l3", "adam", True, "linear", True, 256),
    "vgg16": ("vgg16", "adam", True, "linear", True, 150),
    "res18": ("resnet18", "adam", True, "none", True, 150),
    "res50": ("resnet50", "adam", True, "none", True, 150),
    "mnist_bsln": ("c5l3", "adam", False, "linear", True, 100),
    "mnist_res18": ("resnet18", "adam", False, "none", True, 150),
}


def test_the_seed_study_ships_with_its_settings():
    store = Workspace(REPO).store()
    for name, (model, opt, jitter, dropout, bn, epochs) in SEED_TABLE.items():
        s = store.load(name)
        assert (s.model.name, s.training.optimizer, s.data.color_jitter, s.model.dropout, s.model.batchnorm,
                s.training.epochs) == (model, opt, jitter, dropout, bn, epochs), name
        assert s.training.batch_size == 64 and s.training.lr_schedule == "none"
        if opt == "adam":
            assert (s.training.lr, s.training.weight_decay) == (3e-4, 1e-6)
        else:
            assert (s.training.lr, s.training.momentum) == (1e-3, 0.9)
        assert (s.data.rotation, s.data.hflip) == (15.0, True)
        if name.startswith("mnist"):
            assert (s.data.dataset, s.data.mean, s.data.std, s.data.translate) == ("mnist", (0.1307,), (0.3081,), 0.0)
        else:
            assert (s.data.dataset, s.data.mean, s.data.std, s.data.translate) == ("cifar10", (0.5,) * 3, (0.5,) * 3, 0.1)
        assert s.kaggle.machine_shape == "NvidiaTeslaT4" and s.kaggle.gpu
    demos = [n for n in store.names() if n.startswith("demo_")]
    assert len(demos) >= 4 and all(store.load(n).data.dataset == "digits" for n in demos)


def test_inheritance_merges_sections_and_settings_are_frozen(workspace):
    write_experiment(workspace, "child", 'extends = "tiny"\n[training]\nlr = 1\n')
    s = workspace.store().load("child")
    assert s.training.lr == 1.0 and s.model.width == 0.125 and s.data.dataset == "digits"
    with pytest.raises(Exception):
        s.training.lr = 2.0  # type: ignore[misc]
    assert s.with_overrides(**{"training.epochs": 1}).training.epochs == 1
    assert s.hash != s.with_overrides(**{"training.epochs": 1}).hash


@pytest.mark.parametrize("text, expected", [
    ("[model\nname = 1", "malformed TOML"),
    ('extends = "tiny"\n[training]\nlrr = 0.1\n', "training.lrr: unknown key"),
    ('extends = "tiny"\n[model]\nname = "resnet99"\n', "model.name: no model 'resnet99'"),
    ('extends = "tiny"\n[training]\nlr = -0.1\n', "training.lr: Input should be greater than 0"),
    ('extends = "tiny"\n[training]\nepochs = "150"\n', "training.epochs: Input should be a valid integer"),
    ('extends = "nope"\n', "extends: no base named 'nope'"),
    ('extends = "bad"\n', "extends: cycle"),
    ('extends = "tiny"\nname = "x"\n', "name: unknown key"),
])
def test_bad_experiment_files_name_file_and_key(workspace, text, expected):
    path = write_experiment(workspace, "bad", text)
    with pytest.raises(ExperimentError) as err:
        workspace.store().load("bad")
    assert expected in str(err.value) and str(path) in str(err.value)
    result = CliRunner().invoke(main, ["show", "bad"])
    assert result.exit_code == 1
    assert expected in result.output and len(result.output.strip().splitlines()) == 1


def test_unknown_names_and_empty_globs(workspace):
    store = workspace.store()
    with pytest.raises(ExperimentError, match="unknown experiment 'tiyn'.*did you mean tiny"):
        store.select(["tiyn"])
    with pytest.raises(ExperimentError, match="glob 'zzz_\\*' matches no experiment"):
        store.select(["zzz_*"])
    assert store.select(["ti*"]) == ["tiny"]
    result = CliRunner().invoke(main, ["render", "zzz_*"])
    assert result.exit_code == 1 and "matches no experiment" in result.output


def test_list_shows_every_experiment_and_marks_an_invalid_one(workspace):
    write_experiment(workspace, "broken", 'extends = "tiny"\n[training]\nlr = -1\n')
    result = CliRunner().invoke(main, ["list"])
    assert result.exit_code == 0, result.output
    assert "tiny" in result.output and "x0.125" in result.output and "Demo: digits" in result.output
    assert "broken" in result.output and "training.lr: Input should be greater than 0" in " ".join(result.output.split())


def test_show_prints_resolved_settings_as_toml(workspace):
    import tomllib

    result = CliRunner().invoke(main, ["show", "tiny"])
    assert result.exit_code == 0, result.output
    shown = tomllib.loads(result.output)
    assert shown["model"]["width"] == 0.125 and shown["data"]["dataset"] == "digits"
    assert shown["training"]["epochs"] == 2 and "train_limit" not in shown["data"]  # unset: a comment


def test_list_and_status_fit_an_80_column_terminal_without_cutting_names(workspace):
    from rich.console import Console

    from kagglerun.cli.views import experiments_table, status_table
    from kagglerun.progress import StatusRow

    write_experiment(workspace, "scratch_mnist_res18_long", 'extends = "tiny"\nengine = "scratch"\n')
    narrow = Console(width=80, record=True)
    narrow.print(experiments_table(workspace))
    text = narrow.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "scratch_mnist_res18_long" in text  # a name is never folded
    rows = [StatusRow("bsln_3", "someone/kagglerun-pack-bsln-3-bsln-4", 2, "error", 812.0,
                      "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", pack="pack_bsln_3_bsln_4")]
    for width, kernel_shown in ((80, False), (120, True)):
        console = Console(width=width, record=True)
        console.print(status_table(rows))
        text = console.export_text()
        assert max(len(line) for line in text.splitlines()) <= width
        header = next(line for line in text.splitlines() if "experiment" in line)
        assert ("kernel" in header) == kernel_shown and "bsln_3" in text and "RuntimeError" in text


def test_the_linear_only_settings_use_the_seed_codes_dropout_rate():
    store = Workspace(REPO).store()
    for name in ("bsln_3", "bsln_5", "bsln_6", "mnist_bsln", "scratch_mnist_bsln"):
        s = store.load(name)
        assert (s.model.dropout, s.model.linear_dropout) == ("linear", 0.3), name
    for name in ("bsln_1", "bsln_2"):
        s = store.load(name)
        assert (s.model.dropout, s.model.conv_dropout, s.model.linear_dropout) == ("all", 0.3, 0.5), name
    assert "Where the seed's report and code disagree" in (REPO / "README.md").read_text()
