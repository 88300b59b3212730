"""`kagglerun demo` end to end, and the scratch engine against the torch core on the same digits experiment."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from helpers import write_experiment

from kagglerun.cli import main

pytestmark = pytest.mark.slow  # trains, runs notebooks or waits on the emulator

TWIN = """\
extends = "digits_base"
engine = "{engine}"

[training]
epochs = 6  # after 4 epochs the two can still be 3 points apart on 355 test images; after 6 they agree

[report]
label = "{engine}"
"""


def best(ws, name: str) -> float:
    return json.loads((ws.result_dir(name) / "summary.json").read_text())["best_test_acc"]


def test_demo_runs_the_loop_and_both_engines_agree_through_the_emulator(workspace):
    for engine in ("torch", "scratch"):
        write_experiment(workspace, f"demo_{engine}", TWIN.format(engine=engine))
    result = CliRunner().invoke(main, ["demo", "--poll", "0.5"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "demo_torch: best test accuracy" in out and "demo_scratch: best test accuracy" in out
    assert "report: " + str(workspace.results / "report" / "report.html") in out
    assert "Demo: digits" in out and "best %" in out  # the main table
    torch_acc, scratch_acc = best(workspace, "demo_torch"), best(workspace, "demo_scratch")
    assert torch_acc >= 90.0
    assert abs(torch_acc - scratch_acc) <= 2.0, (torch_acc, scratch_acc)
    table = (workspace.results / "report" / "report.md").read_text()
    assert "| engine |" in table.replace("**", "")  # the two engines side by side, as the seed's Table 4


def test_both_engines_agree_through_kagglerun_run(workspace):
    for engine in ("torch", "scratch"):
        write_experiment(workspace, f"twin_{engine}", TWIN.format(engine=engine))
        result = CliRunner().invoke(main, ["run", f"twin_{engine}"])
        assert result.exit_code == 0, result.output
    assert abs(best(workspace, "twin_torch") - best(workspace, "twin_scratch")) <= 2.0
