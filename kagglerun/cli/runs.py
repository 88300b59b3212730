"""`kagglerun run`, `push`, `status` and `pull`: runs here and on Kaggle."""

from __future__ import annotations

import click

from ..errors import KernelError, RunError
from ..kaggle import KaggleKernels, connect
from ..notebook.packs import select_runs
from ..notebook.run import run_local
from ..runs.ledger import select_recorded
from ..runs.pull import pull_experiments
from ..runs.push import PushOptions, push_experiments
from ..runs.status import refresh, watch
from ..states import RowState
from .app import console, experiment_args, main, pack_options, workspace
from .views import ConsoleObserver, failure_lines, status_table, text


def _kaggle() -> KaggleKernels:
    return connect()


@main.command()
@click.argument("experiment")
@click.option("--epochs", type=click.IntRange(min=1), help="Override training.epochs for a quick run.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Override training.batch_size.")
@click.option("--train-limit", type=click.IntRange(min=1), help="Use only the first N training images.")
@click.option("--test-limit", type=click.IntRange(min=1), help="Use only the first N test images.")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), help="Override training.device.")
@click.option("--fresh", is_flag=True, help="Move an existing results/EXP aside instead of resuming from it.")
def run(experiment: str, fresh: bool, **overrides: object) -> None:
    """Execute the experiment's notebook locally (nbclient) into results/EXP/, resuming when possible."""
    keys = {"epochs": "training.epochs", "batch_size": "training.batch_size", "device": "training.device",
            "train_limit": "data.train_limit", "test_limit": "data.test_limit"}
    dotted = {keys[k]: v for k, v in overrides.items() if v is not None}
    with ConsoleObserver(console) as observer:
        summary = run_local(workspace(), experiment, overrides=dotted, fresh=fresh, observer=observer)
    line = text(experiment, "bold")
    best = summary["best_test_acc"]
    if summary.get("selection") == "val" and summary.get("test_acc_at_best") is not None:
        line.append(f": {summary['state']}, test accuracy {summary['test_acc_at_best']:.2f} % at epoch "
                    f"{summary['best_epoch']} of {summary['epochs_done']} (chosen on validation accuracy, "
                    f"{summary['best_val_acc']:.2f} %); best test accuracy {best:.2f} %")
    else:
        line.append(f": {summary['state']}, best test accuracy "
                    + (f"{best:.2f} % at epoch {summary['best_epoch']}" if best is not None else "n/a")
                    + f" of {summary['epochs_done']}")
    if summary.get("stop_reason"):
        line.append(f"; {summary['stop_reason']}")
    console.print(line)


@main.command()
@experiment_args
@pack_options
@click.option("--dry-run", is_flag=True, help="Render, validate and show what would be pushed; send nothing.")
@click.option("--force", is_flag=True, help="Push even experiments unchanged since their last successful push.")
@click.option("--wait", is_flag=True, help="Keep at most --max-running sessions, push the rest as slots free up, "
              "wait until all have finished.")
@click.option("--max-running", type=click.IntRange(min=1), default=2, show_default=True,
              help="Sessions running at once with --wait (Kaggle allows 2 GPU sessions).")
@click.option("--retries", type=click.IntRange(min=0), default=2, show_default=True,
              help="With --wait, push a run that dies again (resuming from its checkpoint) up to this many times.")
@click.option("--poll", type=click.FloatRange(min=0.1), default=15.0, show_default=True,
              help="Seconds between status checks with --wait.")
def push(experiments: tuple[str, ...], all_: bool, packs: tuple[str, ...], pack_all: bool, dry_run: bool,
         force: bool, wait: bool, max_running: int, retries: int, poll: float) -> None:
    """Render, validate and push experiments (and packs) to Kaggle GPU kernels through the official client."""
    ws = workspace()
    names, groups = select_runs(ws, experiments, all_, packs, pack_all)
    api = None if dry_run else _kaggle()
    options = PushOptions(force=force, dry_run=dry_run, wait=wait, max_running=max_running, retries=retries,
                          poll_seconds=poll)
    with ConsoleObserver(console) as observer:
        report = push_experiments(ws, names, api=api, packs=groups, options=options, observer=observer)
    console.print(status_table(report.rows, "dry run: nothing sent" if dry_run else None))
    if wait and report.not_complete:
        failed = ", ".join(f"{r.experiment} ({r.failure or r.state})" for r in report.not_complete)
        raise RunError(f"{len(report.not_complete)} of {len(report.rows)} experiments did not complete: {failed}")


@main.command()
@click.argument("experiments", nargs=-1)
@click.option("--watch", "watching", is_flag=True, help="Refresh until every run has finished.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=15.0, show_default=True,
              help="Seconds between refreshes with --watch.")
def status(experiments: tuple[str, ...], watching: bool, interval: float) -> None:
    """One table: experiment, kernel, version, state, elapsed, failure reason (all pushed experiments by default)."""
    ws = workspace()
    names = select_recorded(ws, experiments, all_=True)
    api = _kaggle()
    if watching:
        with ConsoleObserver(console) as observer:
            rows = watch(ws, api, names, interval=interval, observer=observer)
    else:
        rows = refresh(ws, api, names)
    console.print(status_table(rows))
    for line in failure_lines(rows):
        console.print(line)
    unknown = [r for r in rows if r.state == RowState.UNKNOWN]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise KernelError(f"{unknown[0].experiment}: {unknown[0].failure}{more}")


@main.command()
@experiment_args
@click.option("--force", is_flag=True, help="Download again even when results/EXP already holds that version.")
def pull(experiments: tuple[str, ...], all_: bool, force: bool) -> None:
    """Download finished runs' verified outputs into results/EXP/, idempotently (--all: every pushed experiment)."""
    ws = workspace()
    names = select_recorded(ws, experiments, all_, required=True)
    with ConsoleObserver(console) as observer:
        pull_experiments(ws, names, api=_kaggle(), force=force, observer=observer)
