"""`kagglerun init`, `keys`, `list`, `show` and `render`: a new workspace, the settings keys, the experiments
of a workspace and their notebooks."""

from __future__ import annotations

from pathlib import Path

import click

from ..experiments.keys import sections, settings_keys
from ..experiments.show import resolved_settings_toml
from ..experiments.starter import init_workspace
from ..notebook.packs import select_runs
from ..notebook.render import render_experiments
from .app import console, experiment_args, main, pack_options, workspace
from .views import experiments_table, keys_table, text


@main.command()
@click.argument("folder", required=False, default=".", type=click.Path(file_okay=False, path_type=Path))
def init(folder: Path) -> None:
    """Make a new workspace in FOLDER (default: here): experiments/ with a base file and an example,
    models/ with an example model, and a .gitignore. Then: kagglerun run example --epochs 1."""
    for path in init_workspace(folder):
        console.print(text(f"wrote {path}"))
    where = "" if folder == Path(".") else f"cd {folder} && "
    console.print(text(f"next: {where}kagglerun run example --epochs 1"))


@main.command()
@click.argument("section", required=False, type=click.Choice(sections()))
def keys(section: str | None) -> None:
    """Every settings key (or one SECTION's: top, model, data, …) with its type, default, allowed values
    and meaning, from the settings model itself."""
    console.print(keys_table(settings_keys(section)))


@main.command("list")
def list_cmd() -> None:
    """The experiments in experiments/, one row each with their key settings."""
    console.print(experiments_table(workspace()))


@main.command()
@click.argument("experiment")
def show(experiment: str) -> None:
    """The fully resolved settings of one experiment (after inheritance)."""
    click.echo(resolved_settings_toml(workspace().store(), experiment))


@main.command()
@experiment_args
@pack_options
def render(experiments: tuple[str, ...], all_: bool, packs: tuple[str, ...], pack_all: bool) -> None:
    """Write build/EXP/EXP.ipynb and build/EXP/kernel-metadata.json (build/pack_A_B/… for a pack), validated
    as Kaggle's client would."""
    ws = workspace()
    names, groups = select_runs(ws, experiments, all_, packs, pack_all)
    for folder in render_experiments(ws, names, packs=groups):
        line = text("rendered ")
        line.append(str(folder.name), style="bold")
        line.append(f" -> {folder}")
        console.print(line)
