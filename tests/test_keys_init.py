"""Finding your way: `kagglerun keys` from the settings model, `kagglerun init` making a workspace whose
example trains at once, and validation errors that list every problem of a file, one line each."""

from __future__ import annotations

import json
import tomllib

import pytest
from click.testing import CliRunner
from helpers import write_experiment

from kagglerun.cli import main
from kagglerun.experiments.keys import sections, settings_keys
from kagglerun.experiments.settings import Settings
from kagglerun.experiments.starter import FILES
from kagglerun.workspace import Workspace


def _shown_keys(toml_text: str) -> set[str]:
    """Every dotted key `show` prints, set or unset (an unset one is a comment '# key (unset)')."""
    keys, section = set(), ""
    for line in toml_text.splitlines():
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1] + "."
        elif line.startswith("# ") and line.endswith(" (unset)"):
            keys.add(section + line[2:].removesuffix(" (unset)"))
        elif " = " in line and not line.startswith("#"):
            keys.add(section + line.split(" = ", 1)[0])
    return keys


def test_keys_lists_every_key_that_show_prints_with_type_default_range_and_meaning(workspace):
    listed = {k.key: k for k in settings_keys()}
    for name in ("tiny", "bsln_1"):
        if name == "bsln_1":
            write_experiment(workspace, "bsln_1", 'extends = "cifar10_base"\n[model]\ndropout = "all"\n')
        shown = CliRunner().invoke(main, ["show", name])
        assert shown.exit_code == 0, shown.output
        keys = _shown_keys(shown.output)
        assert len(keys) > 50 and keys <= set(listed), keys - set(listed)
    assert all(k.meaning for k in listed.values()), [k.key for k in listed.values() if not k.meaning]
    lr = listed["training.lr"]
    assert (lr.type, lr.default, lr.allowed) == ("float", "0.0003", "> 0, <= 10")
    assert listed["training.epochs"].default == "required"
    assert listed["model.dropout"].allowed == '"none", "linear", "all"'
    assert listed["data.train_limit"].type == "int or unset" and listed["kaggle.model_sources"].type == "list of string"
    # every field of the model, nothing else (so the list cannot drift from it)
    fields = {f"{s}.{k}" for s, f in Settings.model_fields.items() if hasattr(f.annotation, "model_fields")
              for k in f.annotation.model_fields}  # type: ignore[union-attr]
    assert set(listed) == fields | {"description", "engine"}


def test_the_keys_command_shows_all_or_one_section_and_refuses_an_unknown_one(workspace):
    result = CliRunner().invoke(main, ["keys", "training"])
    assert result.exit_code == 0, result.output
    assert "training.lr" in result.output and "learning" in result.output and "model.name" not in result.output
    assert sections() == ["top", "model", "data", "training", "kaggle", "report"]
    everything = CliRunner().invoke(main, ["keys"])
    assert all(k.key in everything.output for k in settings_keys())
    bad = CliRunner().invoke(main, ["keys", "modle"])
    assert bad.exit_code == 2 and "modle" in bad.output


def test_a_validation_error_lists_every_problem_of_the_file_one_line_each(workspace):
    path = write_experiment(workspace, "bad", 'extends = "tiny"\n[model]\nwidth = "x"\nbogus = 1\n'
                                              '[training]\nepochs = "2"\nlr = -1\n[kaggle]\ngpu = "yes"\n')
    result = CliRunner().invoke(main, ["show", "bad"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 5 and all(str(path) in line for line in lines), result.output
    for key in ("model.width", "model.bogus: unknown key", "training.epochs", "training.lr", "kaggle.gpu"):
        assert sum(key in line for line in lines) == 1, key


def test_init_makes_a_workspace_and_overwrites_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["init", "study"])
    assert result.exit_code == 0, result.output
    root = tmp_path / "study"
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == sorted(FILES)
    assert "kagglerun run example --epochs 1" in result.output
    ignored = (root / ".gitignore").read_text().splitlines()
    assert "build/" in ignored and "results/**/checkpoint_*.pt" in ignored
    store = Workspace(root).store()
    s = store.load("example")
    assert s.data.dataset == "digits" and store.model(s).kind == "workspace" and not s.kaggle.internet
    monkeypatch.chdir(root)
    rendered = CliRunner().invoke(main, ["render", "example"])  # builds the example model on a dummy batch
    assert rendered.exit_code == 0, rendered.output
    (root / "models" / "small_cnn.py").write_text("# mine\n")
    again = CliRunner().invoke(main, ["init", str(root)])
    assert again.exit_code == 1 and "already exists" in again.output and len(again.output.strip().splitlines()) == 1
    assert (root / "models" / "small_cnn.py").read_text() == "# mine\n"


@pytest.mark.slow
def test_the_example_of_a_new_workspace_runs_at_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KAGGLERUN_WORKSPACE", raising=False)
    assert CliRunner().invoke(main, ["init"]).exit_code == 0
    result = CliRunner().invoke(main, ["run", "example", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "results" / "example" / "summary.json").read_text())
    assert summary["state"] == "complete" and summary["epochs_done"] == 1
    assert tomllib.loads((tmp_path / "experiments" / "example.toml").read_text())["model"]["name"] == "small_cnn"
