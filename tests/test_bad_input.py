"""The bad-input table: each case runs the real CLI on a workspace holding the bad input, and gets one line
on stderr that names what is wrong, a non-zero exit, no traceback, and every file as it was.

`python tests/test_bad_input.py` prints the table's rows (case, exit status, the line) for BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from helpers import KEY, USER, make_workspace, tiny_toml  # noqa: E402

from kagglerun.cli import main  # noqa: E402

RUN = {"version": 1, "settings_hash": "x", "core_hash": "y", "pushed_at": "2024-01-01T00:00:00+00:00",
       "state": "complete", "finished_at": "2024-01-01T01:00:00+00:00"}


def ledger(ws: Path, runs: object = None, **entry: object) -> None:
    item = {"kernel": f"{USER}/kagglerun-tiny", "runs": [RUN] if runs is None else runs, **entry}
    (ws / "results").mkdir(exist_ok=True)
    (ws / "results" / "ledger.json").write_text(json.dumps({"format": 1, "experiments": {"tiny": item}}))


def deep_chain(ws: Path) -> None:
    for i in range(1200):
        (ws / "experiments" / f"deep_{i}.toml").write_text(f'extends = "deep_{i + 1}"\n')
    (ws / "experiments" / "deep_1200.toml").write_text(tiny_toml())


def a_result(ws: Path) -> Path:
    folder = ws / "results" / "done"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text('{"state": "complete"}\n')
    return folder


def symlink_to_elsewhere(path: Path) -> None:
    target = path.parent.parent / "elsewhere"
    target.mkdir(exist_ok=True)
    (target / "keep.txt").write_text("mine\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target, target_is_directory=True)


def a_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a folder\n")


def broken_template(ws: Path) -> None:
    (ws / "templates").mkdir()
    (ws / "templates" / "report.html.j2").write_text("<html>{% for run in %}</html>\n")
    a_result(ws)
    (ws / "results" / "report").mkdir()
    (ws / "results" / "report" / "report.html").write_text("the last good report\n")


@dataclass(frozen=True)
class Case:
    case: str  # what the user did wrong, as BENCHMARKS.md's table names it
    setup: Callable[[Path], object]
    args: tuple[str, ...]
    expect: str  # in the one line the user gets


CASES = [
    Case("NaN in settings (`lr = nan`)", lambda ws: (ws / "experiments" / "tiny.toml").write_text(
        tiny_toml(extra="lr = nan")), ("show", "tiny"), "tiny.toml: training.lr: Input should be a finite number"),
    Case("infinity in settings (`time_budget_minutes = inf`)", lambda ws: (ws / "experiments" / "tiny.toml").write_text(
        tiny_toml(extra="time_budget_minutes = inf")), ("render", "tiny"),
        "tiny.toml: training.time_budget_minutes: Input should be a finite number"),
    Case("a 1,200-deep `extends` chain", deep_chain, ("show", "deep_0"),
         "deep_0.toml: extends: a chain of more than 64 files (deep_0 -> deep_1 -> deep_2 -> …); shorten it"),
    Case("results/EXP is a file", lambda ws: a_file(ws / "results" / "tiny"), ("run", "tiny"),
         "results/tiny is a file, not a folder: move it aside"),
    Case("results/EXP is a symlink", lambda ws: symlink_to_elsewhere(ws / "results" / "tiny"), ("run", "tiny"),
         "results/tiny is a symlink (to "),
    Case("results/EXP is a file, on pull", lambda ws: (ledger(ws), a_file(ws / "results" / "tiny")), ("pull", "--all"),
         "tiny: …/results/tiny is a file, not a folder: move it aside; nothing was pulled"),
    Case("build/EXP is a file", lambda ws: a_file(ws / "build" / "tiny"), ("render", "tiny"),
         "build/tiny is a file, not a folder: move it aside"),
    Case("build/EXP is a symlink", lambda ws: symlink_to_elsewhere(ws / "build" / "tiny"), ("render", "tiny"),
         "build/tiny is a symlink (to "),
    Case("the ledger's lock file is a folder", lambda ws: (ledger(ws), (ws / "results" / ".ledger.json.lock").mkdir()),
         ("status",), "results/.ledger.json.lock: cannot open the ledger's lock file: Is a directory (it must be a file"),
    Case("a ledger with a wrong type (`\"version\": \"1\"`)", lambda ws: ledger(ws, [{**RUN, "version": "1"}]),
         ("status",), "corrupt ledger: entry 'tiny': runs.0.version: Input should be a valid integer"),
    Case("a ledger whose runs are not a list", lambda ws: ledger(ws, "v1"), ("pull", "--all"),
         "corrupt ledger: entry 'tiny': runs: Input should be a valid array"),
    Case("a ledger entry that is not an object", lambda ws: (ws / "results").mkdir() or (
        ws / "results" / "ledger.json").write_text('{"format": 1, "experiments": {"tiny": []}}'),
        ("status",), "corrupt ledger: entry 'tiny': not an object"),
    Case("a broken report template (templates/report.html.j2)", broken_template, ("report",),
         "templates/report.html.j2 line 1: Expected an expression"),
    Case("an experiment named like a pack (`pack_a_b.toml`)", lambda ws: (ws / "experiments" / "pack_a_b.toml").write_text(
        tiny_toml()), ("render", "pack_a_b"), "pack_a_b.toml: experiment names may not start with 'pack_'"),
]


def files(root: Path) -> dict[str, bytes | str]:
    """Every file and link under `root`, links not followed (their targets are listed as such)."""
    found: dict[str, bytes | str] = {}
    for folder, dirs, names in os.walk(root):
        for name in names + [d for d in dirs if (Path(folder) / d).is_symlink()]:
            path = Path(folder) / name
            key = str(path.relative_to(root))
            if path.is_symlink():
                found[key] = "-> " + os.readlink(path)
            elif not name.startswith(".ledger.json.lock"):
                found[key] = path.read_bytes()
    return found


def run_case(case: Case, root: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str, Path, dict]:
    """Set the case up in a fresh workspace and run its command; (exit, stdout, stderr, workspace, its files
    before the command)."""
    ws = make_workspace(root / "ws", {"tiny": tiny_toml()})
    case.setup(ws)
    before = files(root)
    monkeypatch.chdir(ws)
    monkeypatch.setenv("HOME", str(root))
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    monkeypatch.setenv("KAGGLERUN_KAGGLE_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: no case may need it
    monkeypatch.delenv("KAGGLERUN_WORKSPACE", raising=False)
    result = CliRunner().invoke(main, list(case.args))
    return result.exit_code, result.stdout, result.stderr, ws, before


@pytest.mark.parametrize("case", CASES, ids=[c.case for c in CASES])
def test_bad_input_is_one_line_naming_it_and_changes_nothing(case, tmp_path, monkeypatch):
    code, out, err, ws, before = run_case(case, tmp_path, monkeypatch)
    assert code != 0, out + err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert case.expect in " ".join(err.replace(str(ws), "…").split()), err
    assert "Traceback" not in out + err
    assert files(tmp_path) == before


MARKUP = "[/] [bold red]boom[/bold red] \x1b[2J\x1b[31mred\x07 $x$"  # rich markup, escape sequences, a bell
SHOWN = "[/] [bold red]boom[/bold red] red $x$"  # what the terminal gets: the text, without the controls


def test_text_from_kaggle_files_and_arguments_is_printed_as_text(tmp_path, monkeypatch):
    """A failure message in the ledger (Kaggle's or ours) with markup and escape sequences: status and
    pull --all print it as written, without the control characters, and do not crash."""
    ws = make_workspace(tmp_path / "ws", {"tiny": tiny_toml()})
    monkeypatch.chdir(ws)
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    monkeypatch.setenv("KAGGLERUN_KAGGLE_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("COLUMNS", "300")
    ledger(ws, [{**RUN, "failure": "pull failed: " + MARKUP}])  # finished: status asks Kaggle nothing
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code == 0, result.output
    assert SHOWN in result.stdout and "\x1b" not in result.stdout and "\x07" not in result.stdout
    ledger(ws, [{**RUN, "state": "error", "failure": MARKUP}])  # ended in error: pull skips it, says why
    result = CliRunner().invoke(main, ["pull", "--all"])
    assert result.exit_code == 0, result.output
    assert "tiny: skipped v1 ended error: " + SHOWN in " ".join(result.stdout.split()).replace("  ", " ")
    assert "\x1b" not in result.stdout
    result = CliRunner().invoke(main, ["show", MARKUP.replace(" ", "")])  # an argument, in an error line
    assert result.exit_code == 1 and "[/][boldred]boom[/boldred]red$x$" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "\x1b" not in result.stderr


def test_every_view_prints_markup_as_text():
    """The views `push --wait`, `status --watch` and `pull` draw with: events, the live table, failure lines,
    pull results and epoch bars."""
    import io

    from rich.console import Console

    from kagglerun.cli.views import ConsoleObserver, failure_lines, status_table
    from kagglerun.progress import EpochProgress, PullResult, StatusRow

    buffer = io.StringIO()
    console = Console(file=buffer, width=300, force_terminal=False)
    row = StatusRow(MARKUP, MARKUP, 3, "error", 12.0, MARKUP, 2, [MARKUP], MARKUP)
    console.print(status_table([row], MARKUP))
    for line in failure_lines([row]):
        console.print(line)
    with ConsoleObserver(console, MARKUP) as observer:
        observer.event(MARKUP)
        observer.event("warning: " + MARKUP)
        observer.pulled(PullResult(MARKUP, "refused", MARKUP))
        observer.epochs(EpochProgress(MARKUP, 1, 2, 50.0))
        observer.rows([row])
    printed = buffer.getvalue()
    assert printed.count(SHOWN) >= 6, printed
    assert "\x1b[2J" not in printed and "\x07" not in printed


def test_mathtext_in_a_report_label_is_drawn_as_written(tmp_path, monkeypatch):
    from test_report import ADAM, settings_of, write_run

    ws = make_workspace(tmp_path / "ws", {})
    label = "$\\frac{a$ 50% [/]"
    for i, text in enumerate((label, "$x$")):
        write_run(ws / "results", settings_of(f"run_{i}", {"name": "c5l3"}, {}, {**ADAM, "epochs": 3},
                                               {"group": "g", "label": text, "order": i}), 80.0, 2)
    monkeypatch.chdir(ws)
    result = CliRunner().invoke(main, ["report"])
    assert result.exit_code == 0, result.output
    assert label in (ws / "results" / "report" / "report.md").read_text()


def test_a_retry_after_wait_says_what_it_waits_for_and_gives_up_after_a_bound():
    import requests

    from kagglerun.errors import KaggleError
    from kagglerun.kaggle.client import KaggleKernels
    from kagglerun.kaggle.credentials import Credentials

    sleeps: list[float] = []
    told: list[str] = []
    api = KaggleKernels(Credentials(USER, KEY), environ={"KAGGLERUN_KAGGLE_ENDPOINT": "http://127.0.0.1:9"},
                        sleep=sleeps.append)
    api.notify = told.append

    def too_many() -> None:
        response = requests.Response()
        response.status_code, response.headers["Retry-After"] = 429, "3600"  # an hour: more than the cap
        raise requests.HTTPError("429 Client Error: Too Many Requests for url: x", response=response)

    with pytest.raises(KaggleError, match=r"^Kaggle kept rate-limiting the push of tiny \(HTTP 429\) after 6 "
                                          r"attempts; wait a few minutes and try again$"):
        api._call("push of tiny", too_many)
    assert sleeps == [api.retry.retry_after_cap] * (api.retry.attempts - 1)  # bounded, however long it asks
    assert told[0] == "Kaggle asked to wait before the push of tiny (HTTP 429, rate limit): waiting 120 s, then try 2 of 6"
    assert len(told) == api.retry.attempts - 1


@pytest.mark.slow  # an emulator
def test_push_wait_at_a_session_cap_says_what_it_waits_for_and_gives_up_after_a_bound(tmp_path, monkeypatch):
    """Kaggle refuses every push (sessions started elsewhere hold the cap): `push --wait` waits, says so
    once, and gives up with one line after `cap_wait_seconds`, counted in polls (no clock is read)."""
    from helpers import client_env, start_emulator

    from kagglerun.emulator.faults import FaultConfig
    from kagglerun.errors import SessionCapError
    from kagglerun.kaggle import connect
    from kagglerun.progress import Collect
    from kagglerun.runs.push import PushOptions, push_experiments
    from kagglerun.workspace import Workspace

    handle = start_emulator(tmp_path / "emu", faults=FaultConfig(cap_reject=1.0))
    try:
        ws = Workspace(make_workspace(tmp_path / "ws", {"tiny": tiny_toml(), "tiny_b": tiny_toml(seed=1)}))
        client_env(monkeypatch, tmp_path / "home", handle.url)
        observer, sleeps = Collect(), []
        options = PushOptions(wait=True, poll_seconds=60, cap_wait_seconds=600)
        with pytest.raises(SessionCapError) as raised:
            push_experiments(ws, ["tiny", "tiny_b"], api=connect(), options=options, observer=observer,
                             sleep=sleeps.append)
    finally:
        handle.stop()
    message = str(raised.value)
    assert message.startswith("gave up after 10 min of Kaggle refusing to start a session (") and \
        message.endswith("not pushed: tiny, tiny_b") and "Maximum batch GPU session count" in message, message
    assert "\n" not in message and len(sleeps) == 10
    waiting = [e for e in observer.events if "waiting for a session to end" in e]
    assert len(waiting) == 1 and waiting[0].endswith("(giving up after 10 min)"), observer.events


@pytest.mark.slow  # trains two tiny runs through the emulator
def test_pull_keeps_the_user_s_files_and_a_local_run_and_refuses_a_bad_summary_in_one_line(tmp_path, monkeypatch):
    from helpers import client_env, start_emulator

    from kagglerun.core.contract import atomic_write_json, write_manifest
    from kagglerun.kaggle import connect
    from kagglerun.runs.push import PushOptions, push_experiments
    from kagglerun.workspace import Workspace

    handle = start_emulator(tmp_path / "emu")
    try:
        ws = Workspace(make_workspace(tmp_path / "ws", {"tiny": tiny_toml(), "tiny_b": tiny_toml(seed=1)}))
        client_env(monkeypatch, tmp_path / "home", handle.url)
        push_experiments(ws, ["tiny", "tiny_b"], api=connect(), options=PushOptions(wait=True, poll_seconds=0.3))
        # results/tiny holds a local run, and the user's own files beside it
        local = ws.result_dir("tiny")
        (local / "plots").mkdir(parents=True)
        (local / "summary.json").write_text('{"state": "complete", "local": true}\n')
        (local / "notes.md").write_text("mine\n")
        (local / "plots" / "a.png").write_bytes(b"png")
        # tiny_b's output on Kaggle has a summary.json of the wrong type (its manifest agrees: it verifies)
        [working] = [p.parent for p in (tmp_path / "emu").rglob("summary.json")
                     if json.loads(p.read_text()).get("experiment") == "tiny_b"]
        summary = json.loads((working / "summary.json").read_text())
        atomic_write_json(working / "summary.json", {**summary, "best_test_acc": "high"})
        write_manifest(working)
        monkeypatch.chdir(ws.root)
        result = CliRunner().invoke(main, ["pull", "--all"])
        assert result.exit_code == 3, result.output
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output, result.stderr
        assert "kagglerun-tiny-b v1: refusing its summary.json: best_test_acc is \"high\", not a number" in \
            result.stderr, result.stderr
        assert "tiny: pulled v1; the local run that was there is kept in" in " ".join(result.stdout.split())
        assert not ws.result_dir("tiny_b").exists()
        pulled = json.loads((local / "summary.json").read_text())
        assert pulled["experiment"] == "tiny" and "local" not in pulled and (local / "log.txt").is_file()
        assert (local / "notes.md").read_text() == "mine\n" and (local / "plots" / "a.png").read_bytes() == b"png"
        [kept] = (ws.results / ".previous").glob("tiny-*")
        assert json.loads((kept / "summary.json").read_text())["local"] is True

        # pulled again: the pulled run's files are replaced, the user's stay, nothing more goes to .previous
        result = CliRunner().invoke(main, ["pull", "tiny", "--force"])
        assert result.exit_code == 0, result.output
        assert (local / "notes.md").read_text() == "mine\n" and (local / "plots" / "a.png").is_file()
        assert list((ws.results / ".previous").glob("tiny-*")) == [kept]
    finally:
        handle.stop()


def table() -> None:
    """Print BENCHMARKS.md's rows: each case, the exit status and the line, as they come out now."""
    import tempfile

    print("| input | command | exit | the line it gives |")
    print("|---|---|---|---|")
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
            code, _, err, ws, _ = run_case(case, Path(tmp), mp)
            line = err.strip().replace(str(ws), "…").replace(tmp, "…").replace("|", "\\|")
            print(f"| {case.case} | `kagglerun {' '.join(case.args)}` | {code} | `{line}` |")


if __name__ == "__main__":
    table()
