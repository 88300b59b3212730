"""`kagglerun demo`: the whole loop offline — an emulator, push the demo_* grid, wait, pull, report.

It needs no Kaggle account: it talks to the emulator with the emulator's own test credentials (never the
user's, never written to ~/.kaggle), through the same official-client code path a real push takes."""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .emulator import TEST_KEY, TEST_USERNAME, EmulatorConfig, start_in_thread
from .kaggle import ENDPOINT_ENV, Credentials, KaggleKernels
from .progress import SILENT, Observer, StatusRow
from .report import Report, build_report
from .runs.pull import pull_experiments
from .runs.push import PushOptions, push_experiments
from .workspace import Workspace

DEMO_PATTERN = "demo_*"


@dataclass
class DemoOutcome:
    rows: list[StatusRow]
    report: Report  # built from the pulled results
    best: dict[str, float | None] = field(default_factory=dict)  # best test accuracy (%) per experiment


def run_demo(ws: Workspace, *, endpoint: str | None = None, poll_seconds: float = 2.0,
             observer: Observer = SILENT) -> DemoOutcome:
    """Push every demo_* experiment to an emulator (started here on a free port with a throwaway state
    folder, or the one at `endpoint`), wait with at most two sessions running, pull, and build the report."""
    names = ws.store().select([DEMO_PATTERN])
    credentials = Credentials(TEST_USERNAME, TEST_KEY, "the emulator's test credentials")
    with contextlib.ExitStack() as stack:
        if endpoint is None:
            state = stack.enter_context(tempfile.TemporaryDirectory(prefix="kagglerun-demo-emulator-"))
            handle = stack.enter_context(start_in_thread(EmulatorConfig(
                port=0, state_dir=Path(state), credentials={TEST_USERNAME: TEST_KEY})))
            endpoint = handle.url
            observer.event(f"emulator started on {endpoint}")
        api = KaggleKernels(credentials, environ={ENDPOINT_ENV: endpoint})
        # --force: the demo shows the whole loop every time, whatever an earlier demo left in the ledger.
        options = PushOptions(force=True, wait=True, max_running=2, poll_seconds=poll_seconds)
        report = push_experiments(ws, names, api=api, options=options, observer=observer)
        pulled = pull_experiments(ws, names, api=api)
    built = build_report(ws.results, names=names, templates=ws.templates, presentation=ws.store().presentation())
    return DemoOutcome(report.rows, built, {r.experiment: r.best_test_acc for r in pulled})
