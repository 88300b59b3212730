"""`kagglerun list`, `show` and `render`: the experiments of a workspace and their notebooks."""

from __future__ import annotations

import click

from ..experiments.show import resolved_settings_toml
from ..notebook.packs import select_runs
from ..notebook.render import render_experiments
from .app import console, experiment_args, main, pack_options, workspace
from .views import experiments_table, text


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
