"""`kagglerun emulator` and `kagglerun demo`: the loopback Kaggle, alone or running the whole loop."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from ..demo import run_demo
from ..emulator import EmulatorConfig, FaultConfig, default_credentials, serve
from .app import console, main, workspace
from .views import ConsoleObserver, report_table, status_table, text


@main.command()
@click.option("--port", type=click.IntRange(0, 65535), default=7777, show_default=True,
              help="Port on 127.0.0.1 (KAGGLE_API_ENVIRONMENT=TEST means 7777).")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True, help="Notebooks run at once.")
@click.option("--state", "state_dir", type=click.Path(file_okay=False), help="State folder [~/.cache/kagglerun/emulator].")
@click.option("--credentials", metavar="USER:KEY", help="Accepted credentials [$KAGGLE_USERNAME:$KAGGLE_KEY, else the test pair].")
@click.option("--token", metavar="TOKEN", help="Also accept this API token (Bearer) for the credentials' user.")
@click.option("--gpu-cap", type=click.IntRange(min=1), default=2, show_default=True, help="Concurrent GPU sessions allowed.")
@click.option("--cpu-cap", type=click.IntRange(min=1), default=10, show_default=True, help="Concurrent CPU sessions allowed.")
@click.option("--gpu-quota-hours", type=float, default=30.0, show_default=True, help="Weekly GPU quota.")
@click.option("--session-limit", type=float, default=43200.0, show_default=True, help="Session time limit in seconds.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), help="KAGGLERUN_DATA for the notebooks.")
@click.option("--datasets", "datasets_dir", type=click.Path(file_okay=False), help="Folder of owner/slug data sets.")
@click.option("--input-layout", type=click.Choice(["nested", "flat"]), default="nested", show_default=True,
              help="Sources under /kaggle/input: notebooks|datasets/OWNER/SLUG (Kaggle now), or SLUG (older).")
@click.option("--faults", metavar="SPEC", help="Fault rates, e.g. 'all=0.05' or 'http_500=0.1,truncate=0.2' (off by default).")
@click.option("--fault-seed", type=int, help="Seed of the fault dice.")
def emulator(credentials: str | None, token: str | None, faults: str | None, fault_seed: int | None, gpu_cap: int,
             cpu_cap: int, session_limit: float, **options: Any) -> None:
    """A loopback server that speaks Kaggle's kernels API and runs pushed notebooks locally (Ctrl-C stops it)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    user, sep, key = (credentials or "").partition(":")
    if credentials and not (sep and user and key):
        raise click.BadParameter("expected USER:KEY", param_hint="--credentials")
    try:
        fault_config = FaultConfig.parse(faults, fault_seed)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--faults") from None
    given: dict[str, Any] = {k: Path(v) if k.endswith("_dir") else v for k, v in options.items() if v is not None}
    accepted = {user: key} if credentials else default_credentials()
    tokens = {token: next(iter(accepted))} if token else {}
    config = EmulatorConfig(**given, credentials=accepted, tokens=tokens, gpu_session_cap=gpu_cap,
                            cpu_session_cap=cpu_cap, session_limit_s=session_limit, faults=fault_config)
    serve(config, ready=lambda h: console.print(text(f"Kaggle emulator on {h.url} (Ctrl-C stops it)")))


@main.command()
@click.option("--endpoint", metavar="URL", help="Use an emulator already running there instead of starting one.")
@click.option("--poll", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Seconds between status checks.")
def demo(endpoint: str | None, poll: float) -> None:
    """The whole loop offline: start the emulator, push the demo_* grid, wait, pull, build the report."""
    with ConsoleObserver(console, title="kagglerun demo") as observer:
        outcome = run_demo(workspace(), endpoint=endpoint, poll_seconds=poll, observer=observer)
    console.print(status_table(outcome.rows))
    for name, best in outcome.best.items():
        line = text(name, "bold")
        line.append(": best test accuracy " + (f"{best:.2f} %" if best is not None else "n/a"))
        console.print(line)
    console.print(report_table(outcome.report))
    console.print(text(f"report: {outcome.report.html}"), soft_wrap=True)
