"""`kagglerun search EXP`: the quota-aware search of an experiment's `[search]` table."""

from __future__ import annotations

import click
from rich import box
from rich.table import Table

from ..kaggle import connect
from ..search.driver import best_trial, load_search, run_search, search_folder
from .app import console, main, workspace
from .views import ConsoleObserver, text


@main.command()
@click.argument("experiment")
@click.option("--poll", type=click.FloatRange(min=0.1), default=15.0, show_default=True,
              help="Seconds between status checks while trials run.")
def search(experiment: str, poll: float) -> None:
    """Search the hyper-parameters of EXP's [search] table under its GPU-hour budget (run it again to continue)."""
    ws = workspace()
    load_search(ws, experiment)  # a bad table is one line before any connection
    with ConsoleObserver(console) as observer:
        state = run_search(ws, experiment, api=connect(), observer=observer, poll=poll)
    table = Table(title=text(f"search {experiment}: {state.state}", "bold"), title_justify="left", box=box.SIMPLE_HEAD)
    keys = sorted({k for t in state.trials for k in t.params})
    for column in ("trial", "state", "rung", *keys, state.metric):
        table.add_column(column)
    for t in state.trials:
        value = f"{t.value:.2f}" if t.value is not None else "–"
        table.add_row(*(text(c) for c in (t.name, t.state, str(t.rung + 1), *(f"{t.params.get(k)}" for k in keys),
                                          value)))
    console.print(table)
    best = best_trial(state)
    line = text(f"spent about {state.spent_seconds / 3600:.2f} of {state.budget_seconds / 3600:.2f} GPU hours")
    if best is not None:
        line.append(f"; best: {best.name} ({state.metric} {best.value:.2f})")
    line.append(f"; study: sqlite:///{search_folder(ws, experiment) / 'study.db'}")
    console.print(line)
