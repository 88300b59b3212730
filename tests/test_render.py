"""Rendering: Kaggle-ready folders that pass the official client's own push checks, byte-identical, all or nothing."""

from __future__ import annotations

import json
import re

import nbformat
import pytest
from click.testing import CliRunner
from helpers import REPO, write_experiment

from kagglerun.cli import main
from kagglerun.errors import RenderError
from kagglerun.kaggle import validate_kernel_folder
from kagglerun.notebook.render import render_experiments
from kagglerun.workspace import Workspace


def test_every_shipped_experiment_renders_and_passes_the_kaggle_clients_checks(tmp_path):
    ws = Workspace(tmp_path)
    (tmp_path / "experiments").symlink_to(REPO / "experiments")
    names = ws.store().names()
    folders = render_experiments(ws, names, owner="someone")
    assert [f.name for f in folders] == names
    for folder in folders:
        request = validate_kernel_folder(folder)  # the client's kernels_push up to the network call
        assert request.slug == f"someone/kagglerun-{folder.name.replace('_', '-')}"
        assert request.kernel_type == "notebook" and request.language == "python"
        assert request.enable_gpu is True and request.machine_shape == "NvidiaTeslaT4"
        assert json.loads(request.text)["metadata"]["kernelspec"]["name"] == "python3"


def test_the_notebook_is_self_contained_and_carries_settings_as_data(workspace):
    folder = render_experiments(workspace, ["tiny"], owner="someone")[0]
    nb = nbformat.read(folder / "tiny.ipynb", as_version=4)
    nbformat.validate(nb)
    header, settings_cell, folders_cell, *core_cells, import_cell, last = nb.cells
    assert header.cell_type == "markdown" and "tiny" in header.source and "a tiny digits run" in header.source
    assert settings_cell.source.startswith("%%writefile run.json\n")
    spec = json.loads(settings_cell.source.split("\n", 1)[1])
    s = workspace.store().load("tiny")
    assert spec["settings"] == s.as_dict() and spec["settings_hash"] == s.hash
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
    # The core, written as a package exactly as it is in the repository (relative imports and all)
    for cell in core_cells:
        target, source = cell.source.split("\n", 1)
        assert target.startswith("%%writefile kagglerun_payload/")
        origin = REPO / "kagglerun" / target.removeprefix("%%writefile kagglerun_payload/")
        if origin.name != "__init__.py" or origin.parent.name != "kagglerun":
            assert source == origin.read_text().rstrip("\n"), target
    code = "\n".join(c.source for c in core_cells + [import_cell])
    assert not re.search(r"\bimport kagglerun\b|from kagglerun\b|import click|import jinja2|import pydantic", code)
    assert "from kagglerun_payload.core.train import main" in import_cell.source
    assert "a tiny digits run" not in code + last.source  # settings never spliced into code
    assert 'main("run.json")' in last.source
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    assert meta["id"] == "someone/kagglerun-tiny" and meta["code_file"] == "tiny.ipynb"


def test_rendering_is_byte_identical(workspace):
    first = render_experiments(workspace, ["tiny"], owner="o")[0]
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    again = render_experiments(workspace, ["tiny"], owner="o")[0]
    assert {p.name: p.read_bytes() for p in again.iterdir()} == before


def test_a_workspace_template_overrides_the_packages(workspace):
    (workspace.root / "templates").mkdir()
    (workspace.root / "templates" / "header.md.j2").write_text("# My lab: {{ name }}\n")
    nb = nbformat.read(render_experiments(workspace, ["tiny"], owner="o")[0] / "tiny.ipynb", as_version=4)
    assert nb.cells[0].source == "# My lab: tiny"


def test_rendering_is_all_or_nothing(workspace):
    write_experiment(workspace, "other", 'extends = "tiny"\n')
    render_experiments(workspace, ["other"], owner="o")
    before = (workspace.build / "other" / "other.ipynb").read_bytes()
    write_experiment(workspace, "other", 'extends = "tiny"\n[training]\nepochs = 3\n')
    (workspace.root / "templates").mkdir()
    (workspace.root / "templates" / "header.md.j2").write_text("{{ no_such_variable }}\n")
    with pytest.raises(RenderError, match="header.md.j2.*no_such_variable"):
        render_experiments(workspace, ["other", "tiny"], owner="o")
    assert (workspace.build / "other" / "other.ipynb").read_bytes() == before
    assert not (workspace.build / "tiny").exists()
    assert not [p for p in workspace.build.iterdir() if p.name.startswith(".render-")]


def test_a_title_that_does_not_slugify_to_the_id_is_refused(workspace):
    write_experiment(workspace, "titled", 'extends = "tiny"\n[kaggle]\ntitle = "Something else entirely"\n')
    result = CliRunner().invoke(main, ["render", "titled"])
    assert result.exit_code == 1
    assert "titled" in result.output and "title does not resolve" in result.output
    write_experiment(workspace, "titled", 'extends = "tiny"\n[kaggle]\ntitle = "abc"\nslug = "abcde"\n')
    result = CliRunner().invoke(main, ["render", "titled"])
    assert result.exit_code == 1 and "five characters" in result.output
