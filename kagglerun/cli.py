"""The `kagglerun` command: a thin click layer; each command parses options and calls one library function."""

from __future__ import annotations

import contextlib
import functools
import sys

import click
from rich.console import Console

from .errors import ExitStatus, KagglerunError

console = Console()
err_console = Console(stderr=True)


class _Group(click.Group):
    """Turns our errors into one line on stderr and a named exit code; Ctrl-C into 130."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KagglerunError as e:
            if ctx.obj and ctx.obj.get("traceback"):
                raise
            err_console.print(f"[bold red]error:[/] {e}", highlight=False, markup=True, soft_wrap=True)
            sys.exit(int(e.exit_status))
        except KeyboardInterrupt:
            err_console.print("interrupted")
            sys.exit(int(ExitStatus.INTERRUPTED))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--traceback", is_flag=True, help="Show the full traceback of an error.")
@click.version_option(package_name="kagglerun")
@click.pass_context
def main(ctx: click.Context, traceback: bool) -> None:
    """Experiments as TOML files, pushed to Kaggle GPU kernels, compared in one report."""
    ctx.obj = {"traceback": traceback}


def _workspace():
    from .workspace import find_workspace

    return find_workspace()


def _experiment_args(func):
    """EXP… names or globs, or --all."""

    @click.argument("experiments", nargs=-1)
    @click.option("--all", "all_", is_flag=True, help="Every experiment in experiments/.")
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


@main.command("list")
def list_cmd() -> None:
    """The experiments in experiments/, one row each with their key settings."""
    from .listing import experiments_table

    console.print(experiments_table(_workspace()))


@main.command()
@click.argument("experiment")
def show(experiment: str) -> None:
    """The fully resolved settings of one experiment (after inheritance)."""
    from .listing import resolved_settings_toml

    click.echo(resolved_settings_toml(_workspace(), experiment))


def _pack_options(func):
    """--pack a,b (repeatable) and --pack-all: several experiments in one kernel, one GPU each on a T4 x2."""

    @click.option("--pack", "packs", multiple=True, metavar="A,B",
                  help="Run these experiments in one notebook, one GPU each on Kaggle's T4 x2 (repeatable).")
    @click.option("--pack-all", is_flag=True, help="Pack the selected experiments two by two, in order.")
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


@main.command()
@_experiment_args
@_pack_options
def render(experiments: tuple[str, ...], all_: bool, packs: tuple[str, ...], pack_all: bool) -> None:
    """Write build/EXP/EXP.ipynb and build/EXP/kernel-metadata.json (build/pack_A_B/… for a pack), validated
    as Kaggle's client would."""
    from .render import render_experiments, select_runs

    ws = _workspace()
    names, groups = select_runs(ws, experiments, all_, packs, pack_all)
    for folder in render_experiments(ws, names, packs=groups):
        console.print(f"rendered [bold]{folder.name}[/] -> {folder}", highlight=False)


@main.command()
@click.argument("experiment")
@click.option("--epochs", type=click.IntRange(min=1), help="Override training.epochs for a quick run.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Override training.batch_size.")
@click.option("--train-limit", type=click.IntRange(min=1), help="Use only the first N training images.")
@click.option("--test-limit", type=click.IntRange(min=1), help="Use only the first N test images.")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), help="Override training.device.")
@click.option("--fresh", is_flag=True, help="Move an existing results/EXP aside instead of resuming from it.")
def run(experiment: str, fresh: bool, **overrides) -> None:
    """Execute the experiment's notebook locally (nbclient) into results/EXP/, resuming when possible."""
    from .local import run_local

    keys = {"epochs": "training.epochs", "batch_size": "training.batch_size", "device": "training.device",
            "train_limit": "data.train_limit", "test_limit": "data.test_limit"}
    dotted = {keys[k]: v for k, v in overrides.items() if v is not None}
    summary = run_local(_workspace(), experiment, overrides=dotted, fresh=fresh, console=console)
    console.print(
        f"[bold]{experiment}[/]: {summary['state']}, best test accuracy {summary['best_test_acc']:.2f} % "
        f"at epoch {summary['best_epoch']} of {summary['epochs_done']}", highlight=False,
    )


@main.command()
@click.option("--port", type=click.IntRange(0, 65535), default=7777, show_default=True,
              help="Port on 127.0.0.1 (KAGGLE_API_ENVIRONMENT=TEST means 7777).")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True, help="Notebooks run at once.")
@click.option("--state", "state_dir", type=click.Path(file_okay=False), help="State folder [~/.cache/kagglerun/emulator].")
@click.option("--credentials", metavar="USER:KEY", help="Accepted credentials [$KAGGLE_USERNAME:$KAGGLE_KEY, else the test pair].")
@click.option("--gpu-cap", type=click.IntRange(min=1), default=2, show_default=True, help="Concurrent GPU sessions allowed.")
@click.option("--gpu-quota-hours", type=float, default=30.0, show_default=True, help="Weekly GPU quota.")
@click.option("--session-limit", type=float, default=43200.0, show_default=True, help="Session time limit in seconds.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), help="KAGGLERUN_DATA for the notebooks.")
@click.option("--datasets", "datasets_dir", type=click.Path(file_okay=False), help="Folder of owner/slug data sets.")
@click.option("--faults", metavar="SPEC", help="Fault rates, e.g. 'all=0.05' or 'http_500=0.1,truncate=0.2' (off by default).")
@click.option("--fault-seed", type=int, help="Seed of the fault dice.")
def emulator(credentials, faults, fault_seed, gpu_cap, session_limit, **options) -> None:
    """A loopback server that speaks Kaggle's kernels API and runs pushed notebooks locally (Ctrl-C stops it)."""
    import logging
    from pathlib import Path

    from .emulator import EmulatorConfig, FaultConfig, default_credentials, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    user, sep, key = (credentials or "").partition(":")
    if credentials and not (sep and user and key):
        raise click.BadParameter("expected USER:KEY", param_hint="--credentials")
    try:
        fault_config = FaultConfig.parse(faults, fault_seed)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--faults") from None
    given = {k: Path(v) if k.endswith("_dir") else v for k, v in options.items() if v is not None}
    config = EmulatorConfig(**given, credentials={user: key} if credentials else default_credentials(),
                            gpu_session_cap=gpu_cap, session_limit_s=session_limit, faults=fault_config)
    serve(config, ready=lambda h: console.print(f"Kaggle emulator on {h.url} (Ctrl-C stops it)", highlight=False))


def _kaggle():
    from .kaggle_api import connect

    return connect()


def _print_events(message: str) -> None:
    style = "yellow" if message.startswith("warning") else "dim"
    console.print(f"[{style}]{message}[/]", highlight=False)


@main.command()
@_experiment_args
@_pack_options
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
def push(experiments, all_, packs, pack_all, dry_run, force, wait, max_running, retries, poll) -> None:
    """Render, validate and push experiments (and packs) to Kaggle GPU kernels through the official client."""
    from rich.live import Live

    from .errors import RunError
    from .follow import status_table
    from .push import push_experiments
    from .render import select_runs

    ws = _workspace()
    names, groups = select_runs(ws, experiments, all_, packs, pack_all)
    api = None if dry_run else _kaggle()
    live = Live(status_table([]), console=console, auto_refresh=False, transient=True)
    with live if wait else contextlib.nullcontext():
        def progress(rows):
            live.update(status_table(rows, "kagglerun push --wait"), refresh=True)

        report = push_experiments(ws, names, api=api, packs=groups, force=force, dry_run=dry_run, wait=wait,
                                  max_running=max_running, retries=retries, poll_seconds=poll,
                                  on_event=_print_events, on_progress=progress if wait else None)
    console.print(status_table(report.rows, "dry run: nothing sent" if dry_run else None))
    if wait and report.not_complete:
        failed = ", ".join(f"{r.experiment} ({r.failure or r.state})" for r in report.not_complete)
        raise RunError(f"{len(report.not_complete)} of {len(report.rows)} experiments did not complete: {failed}")


@main.command()
@click.argument("experiments", nargs=-1)
@click.option("--watch", is_flag=True, help="Refresh until every run has finished.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=15.0, show_default=True,
              help="Seconds between refreshes with --watch.")
def status(experiments, watch, interval) -> None:
    """One table: experiment, kernel, version, state, elapsed, failure reason (all pushed experiments by default)."""
    from rich.live import Live

    from .errors import KernelError
    from .follow import UNKNOWN, failure_details, refresh, status_table
    from .follow import watch as watch_runs
    from .ledger import select_recorded

    ws = _workspace()
    names = select_recorded(ws, experiments, all_=True)
    api = _kaggle()
    if watch:
        with Live(status_table([]), console=console, auto_refresh=False, transient=True) as live:
            rows = watch_runs(ws, api, names, interval=interval,
                              on_update=lambda r: live.update(status_table(r), refresh=True))
    else:
        rows = refresh(ws, api, names)
    console.print(status_table(rows))
    for name, reason, tail in failure_details(rows):
        console.print(f"[red]{name}[/]: {reason}", highlight=False)
        for line in tail:
            console.print(f"    {line}", highlight=False, markup=False)
    unknown = [r for r in rows if r.state == UNKNOWN]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise KernelError(f"{unknown[0].experiment}: {unknown[0].failure}{more}")


@main.command()
@_experiment_args
@click.option("--force", is_flag=True, help="Download again even when results/EXP already holds that version.")
def pull(experiments, all_, force) -> None:
    """Download finished runs' verified outputs into results/EXP/, idempotently (--all: every pushed experiment)."""
    from .ledger import select_recorded
    from .pull import pull_experiments

    ws = _workspace()
    names = select_recorded(ws, experiments, all_, required=True)

    def show(result):
        best = f", best test accuracy {result.best_test_acc:.2f} %" if result.best_test_acc is not None else ""
        style = {"pulled": "green", "refused": "red"}.get(result.action, "dim")
        console.print(f"[bold]{result.experiment}[/]: [{style}]{result.action}[/] {result.detail}{best}",
                      highlight=False)

    pull_experiments(ws, names, api=_kaggle(), force=force, on_result=show)


@main.command()
@click.option("--endpoint", metavar="URL", help="Use an emulator already running there instead of starting one.")
@click.option("--poll", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Seconds between status checks.")
def demo(endpoint, poll) -> None:
    """The whole loop offline: start the emulator, push the demo_* grid, wait, pull, build the report."""
    from rich.live import Live

    from .demo import run_demo
    from .follow import status_table

    with Live(status_table([]), console=console, auto_refresh=False, transient=True) as live:
        outcome = run_demo(_workspace(), endpoint=endpoint, poll_seconds=poll, on_event=_print_events,
                           on_progress=lambda rows: live.update(status_table(rows, "kagglerun demo"), refresh=True))
    console.print(status_table(outcome.rows))
    for name, best in outcome.best.items():
        shown = f"{best:.2f} %" if best is not None else "n/a"
        console.print(f"[bold]{name}[/]: best test accuracy {shown}", highlight=False)
    from .report import terminal_table

    console.print(terminal_table(outcome.report))
    console.print(f"report: {outcome.report.html}", highlight=False, soft_wrap=True)


@main.command()
@click.argument("experiments", nargs=-1)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Write the report there (default: results/report).")
def report(experiments: tuple[str, ...], out_dir: str | None) -> None:
    """Comparison report of results/ (EXP… names or globs): tables, curves, Markdown, self-contained HTML, CSV."""
    from .report import build_report, terminal_table

    ws = _workspace()
    # workers=None: draw figures in one process per CPU when there are enough of them to pay (BENCHMARKS.md)
    built = build_report(ws.results, out_dir, list(experiments) or None, templates=ws.templates, workers=None)
    console.print(terminal_table(built))
    console.print(f"report: {built.html}", highlight=False, soft_wrap=True)


if __name__ == "__main__":  # pragma: no cover
    main()
