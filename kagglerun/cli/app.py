"""The `kagglerun` group: one line per error on stderr with a named exit code, Ctrl-C as 130, the consoles."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.text import Text

from ..errors import ExitStatus, Interrupted, KagglerunError
from ..workspace import Workspace, find_workspace
from .views import plain

console = Console()
err_console = Console(stderr=True)


class _Group(click.Group):
    """Turns our errors into one line on stderr and a named exit code; Ctrl-C into 130."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KagglerunError as e:
            if ctx.obj and ctx.obj.get("traceback"):
                raise
            line = Text("interrupted:" if isinstance(e, Interrupted) else "error:", style="bold red")
            line.append(" " + plain(e))
            err_console.print(line, soft_wrap=True)
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


def workspace() -> Workspace:
    return find_workspace()


def experiment_args(func: Callable) -> Callable:
    """EXP… names or globs, or --all."""

    @click.argument("experiments", nargs=-1)
    @click.option("--all", "all_", is_flag=True, help="Every experiment in experiments/.")
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper


def pack_options(func: Callable) -> Callable:
    """--pack a,b (repeatable) and --pack-all: several experiments in one kernel, one GPU each on a T4 x2."""

    @click.option("--pack", "packs", multiple=True, metavar="A,B",
                  help="Run these experiments in one notebook, one GPU each on Kaggle's T4 x2 (repeatable).")
    @click.option("--pack-all", is_flag=True, help="Pack the selected experiments two by two, in order.")
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper


def set_option(func: Callable) -> Callable:
    """--set KEY=VALUE (repeatable): a settings override; KEY=V1,V2 makes one experiment per value."""

    @click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                  help="Override a setting, e.g. training.lr=0.01 (repeatable; KEY=V1,V2 makes one experiment "
                  "per value, named EXP.lr0.01 …).")
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper
