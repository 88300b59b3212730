"""`kagglerun init`, `keys`, `list`, `show` and `render`: a new workspace, the settings keys, the experiments
of a workspace and their notebooks."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ExperimentError, LedgerError
from ..experiments.keys import sections, settings_keys
from ..experiments.show import resolved_settings_toml
from ..experiments.starter import init_workspace
from ..notebook.packs import select_runs
from ..notebook.render import render_experiments
from ..runs.ledger import with_recorded
from ..runs.points import with_sets
from .app import console, experiment_args, main, pack_options, set_option, workspace
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
    """The experiments in experiments/, one row each with their key settings (a sweep's under its file, with
    those pushed with --set and a search's trials)."""
    ws = workspace()
    try:
        ws = with_recorded(ws)
    except LedgerError:  # a corrupt ledger is reported by the commands that use it; the files are still listed
        pass
    console.print(experiments_table(ws))


@main.command()
@click.argument("experiment")
@set_option
def show(experiment: str, sets: tuple[str, ...]) -> None:
    """The fully resolved settings of one experiment (after inheritance and --set)."""
    ws, names = with_sets(workspace(), [experiment], sets)
    if len(names) != 1:
        raise ExperimentError(f"show takes one experiment; --set with several values makes {len(names)}")
    click.echo(resolved_settings_toml(ws.store(), names[0]))


@main.command()
@experiment_args
@pack_options
@set_option
def render(experiments: tuple[str, ...], all_: bool, packs: tuple[str, ...], pack_all: bool,
           sets: tuple[str, ...]) -> None:
    """Write build/EXP/EXP.ipynb and build/EXP/kernel-metadata.json (build/pack_A_B/… for a pack), validated
    as Kaggle's client would."""
    ws = workspace()
    names, groups = select_runs(ws, experiments, all_, packs, pack_all)
    if sets:
        if groups:
            raise ExperimentError("--set renders single experiments; leave out --pack and --pack-all")
        ws, names = with_sets(ws, names, sets)
    for folder in render_experiments(ws, names, packs=groups):
        line = text("rendered ")
        line.append(str(folder.name), style="bold")
        line.append(f" -> {folder}")
        console.print(line)
