"""Resume as Kaggle allows it, and pushes that are never lost nor made twice, through the real client and
the emulator: a run over several sessions alternates between its two kernels and ends with one history;
a push whose answer is lost, interrupted, or not written to the ledger is found on Kaggle, not pushed again."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner
from helpers import KEY, USER, client_env, make_workspace, start_emulator, tiny_toml

from kagglerun.cli import main
from kagglerun.emulator.faults import FaultConfig
from kagglerun.errors import KaggleError, LedgerError
from kagglerun.kaggle import ENDPOINT_ENV, Credentials, KaggleKernels, RetryPolicy
from kagglerun.runs import ledger as ledger_module
from kagglerun.runs import plan as plan_module
from kagglerun.runs.ledger import Ledger
from kagglerun.runs.pull import pull_experiments
from kagglerun.runs.push import PushOptions, push_experiments
from kagglerun.runs.status import refresh
from kagglerun.workspace import Workspace

pytestmark = pytest.mark.slow  # trains, runs notebooks or waits on the emulator

KERNEL, PARTNER = f"{USER}/kagglerun-long-a", f"{USER}/kagglerun-long-a-b"
FAST_MAIN = """
_versions = lambda: {"python": platform.python_version(), "torch": torch.__version__}
plot_curves = lambda path, rows, title: None
summary = main("run.json")
"""


def _api(url: str) -> KaggleKernels:
    return KaggleKernels(Credentials(USER, KEY), environ={ENDPOINT_ENV: url},
                         retry=RetryPolicy(attempts=4, base_seconds=0.05, cap_seconds=0.2))


def _fast_workspace(tmp_path, monkeypatch, name: str, toml: str) -> Workspace:
    """A workspace holding one experiment with the fast main cell, and a home without Kaggle credentials."""
    ws = Workspace(make_workspace(tmp_path / "ws", {name: toml}))
    ws.templates.mkdir()
    (ws.templates / "main.py.j2").write_text(FAST_MAIN)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return ws


def test_a_run_needing_four_sessions_alternates_kernels_and_ends_with_one_history(tmp_path, monkeypatch):
    """Each session trains one epoch before its time budget (set well inside the emulator's short session
    limit, as 690 min is inside Kaggle's 12 h) stops it; every push after the first goes to the kernel that
    does not hold the checkpoint, given the other's output."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    handle = start_emulator(tmp_path / "emu", session_limit_s=60.0)
    try:
        ws = _fast_workspace(tmp_path, monkeypatch, "long_a", tiny_toml(epochs=4, extra="time_budget_minutes = 0.001"))
        api = _api(handle.url)
        report = push_experiments(ws, ["long_a"], api=api, options=PushOptions(wait=True, retries=5, poll_seconds=0.3))
        rows = refresh(ws, api)
        pulled = pull_experiments(ws, ["long_a"], api=api)
        sessions = list(handle.emulator.state.sessions.values())
        refused = handle.stats()["self_sources_refused"]
    finally:
        handle.stop()

    assert [r.state for r in report.rows] == ["complete"], [(r.state, r.failure) for r in report.rows]
    versions = Ledger(ws.results).entry("long_a").versions
    assert [(v.kernel, v.version) for v in versions] == [(KERNEL, 1), (PARTNER, 1), (KERNEL, 2), (PARTNER, 2)]
    for before, after in zip(versions, versions[1:], strict=False):
        assert (after.source, after.resumes) == (before.kernel, before.version) and after.source != after.kernel
    assert refused == 0 and all(s.slug not in s.kernel_inputs for s in sessions)  # no kernel is its own source
    assert (rows[0].kernel, rows[0].version, rows[0].state) == (PARTNER, 2, "complete")  # status follows the run
    assert pulled[0].action == "pulled" and "v2" in pulled[0].detail
    folder = ws.result_dir("long_a")
    with open(folder / "history.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3, 4]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["state"] == "complete" and summary["resumed_from_epoch"] == 3


@pytest.fixture(scope="module")
def held(tmp_path_factory):
    """An emulator whose sessions stay queued (nothing trains): pushes and their answers are what is tested."""
    handle = start_emulator(tmp_path_factory.mktemp("emu"), queue_s=3600, gpu_session_cap=100)
    yield handle
    handle.stop()


@pytest.fixture
def ws(tmp_path, held, monkeypatch):
    held.emulator.set_faults(FaultConfig())
    client_env(monkeypatch, tmp_path / "home", held.url)
    name = tmp_path.name.replace("_", "-")[-20:].strip("-")  # a kernel of its own per test
    root = make_workspace(tmp_path / "ws", {"one": tiny_toml(extra=f'[kaggle]\nslug = "k-{name}"')})
    monkeypatch.chdir(root)
    return Workspace(root)


def _kernel_sessions(held, kernel: str) -> int:
    return sum(1 for s in held.emulator.state.sessions.values() if f"{s.owner}/{s.slug}" == kernel)


def _kernel(ws) -> str:
    return f"{USER}/{ws.store().load('one').slug}"


@pytest.mark.parametrize("fault", ["drop_after", "http_500_after"])
def test_a_push_whose_answer_is_lost_is_found_on_kaggle_not_pushed_again(ws, held, fault):
    held.emulator.set_faults(FaultConfig(**{fault: 1.0}, after_only="SaveKernel"))
    api = _api(held.url)
    push_experiments(ws, ["one"], api=api)
    runs = Ledger(ws.results).entry("one").versions
    assert [(r.kernel, r.version, r.state) for r in runs] == [(_kernel(ws), 1, "queued")]
    assert _kernel_sessions(held, _kernel(ws)) == 1 and api.counters["push_found_after_lost_answer"] == 1


def test_ctrl_c_after_kaggle_made_the_version_is_recorded_by_the_next_command(ws, held, monkeypatch):
    real_push = KaggleKernels.push

    def push_then_interrupt(self, folder):
        real_push(self, folder)
        raise KeyboardInterrupt

    monkeypatch.setattr(KaggleKernels, "push", push_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        push_experiments(ws, ["one"], api=_api(held.url))
    monkeypatch.setattr(KaggleKernels, "push", real_push)
    assert Ledger(ws.results).entry("one").latest.pushing  # written ahead: the next command knows
    result = CliRunner().invoke(main, ["status"], catch_exceptions=False)
    assert result.exit_code == 0 and "queued" in result.stdout, result.stdout + result.stderr
    assert [(r.version, r.state) for r in Ledger(ws.results).entry("one").versions] == [(1, "queued")]
    result = CliRunner().invoke(main, ["push", "one"], catch_exceptions=False)
    assert "skipped" in result.stdout and _kernel_sessions(held, _kernel(ws)) == 1


def test_ctrl_c_before_the_push_reached_kaggle_leaves_an_intent_that_is_dropped(ws, held, monkeypatch):
    def interrupted(self, folder):
        raise KeyboardInterrupt

    real_push = KaggleKernels.push
    monkeypatch.setattr(KaggleKernels, "push", interrupted)
    with pytest.raises(KeyboardInterrupt):
        push_experiments(ws, ["one"], api=_api(held.url))
    monkeypatch.setattr(KaggleKernels, "push", real_push)
    rows = refresh(ws, _api(held.url))  # young: it may still be in flight from another terminal
    assert rows[0].state == "pushing: answer unknown" and Ledger(ws.results).entry("one").latest.pushing
    assert push_experiments(ws, ["one"], api=_api(held.url)).plans[0].action == "skip"
    monkeypatch.setattr(plan_module, "IN_FLIGHT_SECONDS", 0.0)  # old enough: nothing was made
    push_experiments(ws, ["one"], api=_api(held.url))
    assert [(r.version, r.state) for r in Ledger(ws.results).entry("one").versions] == [(1, "queued")]
    assert _kernel_sessions(held, _kernel(ws)) == 1


def test_an_answer_the_ledger_cannot_record_is_found_by_the_next_command(ws, held, monkeypatch):
    real_write = ledger_module.atomic_write_bytes

    def full_after_the_intent(path, data):
        if b'"state": "queued"' in data:  # the intent goes in; the answer does not
            raise OSError(28, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(ledger_module, "atomic_write_bytes", full_after_the_intent)
    with pytest.raises(LedgerError, match=r"Kaggle made .* v1 of one, but the ledger could not record it .*"
                                          "the next command finds it on Kaggle") as e:
        push_experiments(ws, ["one"], api=_api(held.url))
    assert "\n" not in str(e.value)
    monkeypatch.setattr(ledger_module, "atomic_write_bytes", real_write)
    refresh(ws, _api(held.url))
    assert [(r.version, r.state) for r in Ledger(ws.results).entry("one").versions] == [(1, "queued")]
    assert _kernel_sessions(held, _kernel(ws)) == 1


def test_a_version_whose_source_kaggle_refused_is_recorded_and_named_for_cancelling(ws, held):
    """Kaggle made the version without the source: it is recorded with the refused source named. SaveKernel's
    answer names no session (ApiSaveKernelResponse), so kagglerun cannot cancel it and says so in one line."""
    (ws.experiments / "one.toml").write_text((ws.experiments / "one.toml").read_text()
                                             + f'kernel_sources = ["{USER}/no-such-kernel"]\n')
    with pytest.raises(KaggleError) as e:
        push_experiments(ws, ["one"], api=_api(held.url))
    message = str(e.value)
    assert f"refused kernel sources {USER}/no-such-kernel; it cannot run without them" in message, message
    assert "cancel it on kaggle.com" in message and "\n" not in message
    (run,) = Ledger(ws.results).entry("one").versions
    assert run.version == 1 and "refused kernel sources" in run.failure and "kaggle.com" in run.failure
    sessions = [s for s in held.emulator.state.sessions.values() if f"{s.owner}/{s.slug}" == _kernel(ws)]
    assert len(sessions) == 1  # recorded, never pushed twice


def test_a_results_folder_that_cannot_be_written_is_found_before_anything_is_pushed(ws, held):
    ws.results.write_text("a file where results/ should be")
    with pytest.raises(LedgerError, match="cannot write the ledger there .*nothing was pushed"):
        push_experiments(ws, ["one"], api=_api(held.url))
    assert _kernel_sessions(held, _kernel(ws)) == 0


def test_a_lost_answer_that_kaggle_cannot_be_asked_about_keeps_the_intent(ws, held, monkeypatch):
    held.emulator.set_faults(FaultConfig(drop_after=1.0, after_only="SaveKernel"))
    real_ask, asked = KaggleKernels.current_version, []

    def unreachable_after_the_push(self, kernel):
        asked.append(kernel)
        if len(asked) > 1:  # the network went down with the push's answer
            raise KaggleError("cannot reach Kaggle at … for the version query: connection refused")
        return real_ask(self, kernel)

    monkeypatch.setattr(KaggleKernels, "current_version", unreachable_after_the_push)
    with pytest.raises(KaggleError, match="could not be asked whether it made the version"):
        push_experiments(ws, ["one"], api=_api(held.url))
    assert Ledger(ws.results).entry("one").latest.pushing  # not forgotten: the version may exist
    monkeypatch.setattr(KaggleKernels, "current_version", real_ask)
    held.emulator.set_faults(FaultConfig())
    push_experiments(ws, ["one"], api=_api(held.url))  # settles it first: found, so nothing is pushed again
    assert [(r.version, r.state) for r in Ledger(ws.results).entry("one").versions] == [(1, "queued")]
    assert _kernel_sessions(held, _kernel(ws)) == 1


def test_a_version_found_after_a_lost_answer_is_checked_for_refused_sources(ws, held):
    held.emulator.set_faults(FaultConfig(drop_after=1.0, after_only="SaveKernel"))
    (ws.experiments / "one.toml").write_text((ws.experiments / "one.toml").read_text()
                                             + f'kernel_sources = ["{USER}/no-such-kernel"]\n')
    # the answer that named the session is lost, so it cannot be cancelled from here: said, and recorded
    with pytest.raises(KaggleError, match=f"refused kernel sources {USER}/no-such-kernel; it cannot run without "
                                          "them and could not be cancelled .*: cancel it on kaggle.com"):
        push_experiments(ws, ["one"], api=_api(held.url))
    (run,) = Ledger(ws.results).entry("one").versions
    assert run.version == 1 and "could not be cancelled" in run.failure and _kernel_sessions(held, _kernel(ws)) == 1


def test_a_checkpoint_is_believed_from_the_ended_versions_own_output_not_a_stale_listing(tmp_path, monkeypatch):
    """v2 dies before writing anything while every output listing serves v1's files as v2's (the stale
    fault): the ledger must not record that v2 holds a checkpoint, or the next push resumes from an output
    that has none."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    handle = start_emulator(tmp_path / "emu")
    try:
        ws = _fast_workspace(tmp_path, monkeypatch, "stale_a", tiny_toml())
        api = _api(handle.url)
        push_experiments(ws, ["stale_a"], api=api, options=PushOptions(wait=True, poll_seconds=0.3))
        handle.emulator.set_faults(FaultConfig(crash=1.0, crash_after=0.2, stale=1.0))
        push_experiments(ws, ["stale_a"], api=api, options=PushOptions(wait=True, force=True, retries=0, poll_seconds=0.3))
        served_stale = handle.stats()["faults_injected"]["stale"]
        handle.emulator.set_faults(FaultConfig())
        plan = push_experiments(ws, ["stale_a"], api=api, options=PushOptions(dry_run=True)).plans[0]
    finally:
        handle.stop()
    first, second = Ledger(ws.results).load()["stale_a"].versions
    assert (first.state, first.has_checkpoint) == ("complete", True)
    assert second.state == "error" and served_stale >= 1
    assert not second.has_checkpoint and second.epochs_done is None
    assert plan.resumes is not None and (plan.resumes.kernel, plan.resumes.version) == (KERNEL.replace("long", "stale"), 1)


def test_a_source_whose_checkpoint_is_gone_is_not_resumed_from_again(tmp_path, monkeypatch):
    """v1 stops on its time budget with a checkpoint, which then disappears from its output on Kaggle: the
    resumed session fails at once in one line, that line reaches the ledger, and the next push starts over
    instead of resuming from v1 again (every retry would fail the same way)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    handle = start_emulator(tmp_path / "emu")
    try:
        ws = _fast_workspace(tmp_path, monkeypatch, "gone_a", tiny_toml(extra="time_budget_minutes = 0.001"))
        api = _api(handle.url)
        once = PushOptions(wait=True, retries=0, poll_seconds=0.3)
        push_experiments(ws, ["gone_a"], api=api, options=once)  # v1: stopped after one epoch
        (first,) = handle.emulator.state.sessions.values()
        (handle.emulator.state.session_dir(first.id) / "working" / "checkpoint_last.pt").unlink()
        push_experiments(ws, ["gone_a"], api=api, options=once)  # resumes from v1, in the partner kernel
        plan = push_experiments(ws, ["gone_a"], api=api, options=PushOptions(dry_run=True)).plans[0]
    finally:
        handle.stop()
    stopped, resumed = Ledger(ws.results).load()["gone_a"].versions
    assert stopped.run_state == "stopped" and stopped.has_checkpoint
    assert (resumed.source, resumed.resumes, resumed.state) == (stopped.kernel, 1, "error")
    assert "push planned a resume from" in resumed.failure and not resumed.has_checkpoint
    assert (plan.action, plan.resumes) == ("push", None) and "no checkpoint, starting over" in plan.reason
