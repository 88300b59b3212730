"""The `kagglerun` command: a thin click layer; each command parses options and calls one library function."""

from __future__ import annotations

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


@main.command()
@_experiment_args
def render(experiments: tuple[str, ...], all_: bool) -> None:
    """Write build/EXP/EXP.ipynb and build/EXP/kernel-metadata.json, validated as Kaggle's client would."""
    from .render import render_experiments

    ws = _workspace()
    names = ws.store().select(experiments, all_)
    for folder in render_experiments(ws, names):
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


if __name__ == "__main__":  # pragma: no cover
    main()
