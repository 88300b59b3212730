"""`kagglerun demo`: the whole loop offline — an emulator, push the demo_* grid, wait, pull, report.

It needs no Kaggle account: it talks to the emulator with the emulator's own test credentials (never the
user's, never written to ~/.kaggle), through the same official-client code path a real push takes."""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .follow import StatusRow
from .kaggle_api import ENDPOINT_ENV, Credentials, KaggleKernels
from .pull import pull_experiments
from .push import push_experiments
from .workspace import Workspace

DEMO_PATTERN = "demo_*"


@dataclass
class DemoOutcome:
    rows: list[StatusRow]
    best: dict[str, float | None] = field(default_factory=dict)  # best test accuracy (%) per experiment
    report: Any = None  # the kagglerun.report.Report built from the pulled results


def run_demo(ws: Workspace, *, endpoint: str | None = None, poll_seconds: float = 2.0,
             on_event: Callable[[str], None] | None = None,
             on_progress: Callable[[list[StatusRow]], None] | None = None) -> DemoOutcome:
    """Push every demo_* experiment to an emulator (started here on a free port with a throwaway state
    folder, or the one at `endpoint`), wait with at most two sessions running, pull, and build the report."""
    from .emulator import TEST_KEY, TEST_USERNAME, EmulatorConfig, start_in_thread

    event = on_event or (lambda message: None)
    names = ws.store().select([DEMO_PATTERN])
    credentials = Credentials(TEST_USERNAME, TEST_KEY, "the emulator's test credentials")
    with contextlib.ExitStack() as stack:
        if endpoint is None:
            state = stack.enter_context(tempfile.TemporaryDirectory(prefix="kagglerun-demo-emulator-"))
            handle = stack.enter_context(start_in_thread(EmulatorConfig(
                port=0, state_dir=Path(state), credentials={TEST_USERNAME: TEST_KEY})))
            endpoint = handle.url
            event(f"emulator started on {endpoint}")
        api = KaggleKernels(credentials, environ={ENDPOINT_ENV: endpoint})
        # --force: the demo shows the whole loop every time, whatever an earlier demo left in the ledger.
        report = push_experiments(ws, names, api=api, force=True, wait=True, max_running=2,
                                  poll_seconds=poll_seconds, on_event=event, on_progress=on_progress)
        pulled = pull_experiments(ws, names, api=api)
    outcome = DemoOutcome(report.rows, {r.experiment: r.best_test_acc for r in pulled})
    from .report import build_report

    outcome.report = build_report(ws.results, names=names, templates=ws.templates)
    return outcome
