"""The user's loop through the real `kaggle` client against the emulator: push, status, pull, resume, and the
failures that must leave results/ and the ledger as they were."""

from __future__ import annotations

import errno
import json
import time

import pytest
from click.testing import CliRunner
from helpers import USER, check_contract, client_env, ledger_json, make_workspace, snapshot, start_emulator, tiny_toml

from kagglerun.cli import main
from kagglerun.errors import PullError
from kagglerun.experiments import ExperimentStore
from kagglerun.kaggle import KaggleKernels, OutputFile, Outputs, connect
from kagglerun.runs.ledger import Ledger
from kagglerun.runs.pull import pull_one
from kagglerun.runs.push import PushOptions, push_experiments
from kagglerun.workspace import Workspace

pytestmark = pytest.mark.slow  # trains, runs notebooks or waits on the emulator

DEMO_TINY = """
extends = "digits_base"
[model]
width = 0.125
[data]
train_limit = 256
test_limit = 128
[training]
epochs = 2
device = "cpu"
"""


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    handle = start_emulator(tmp_path_factory.mktemp("emu"), workers=2, gpu_session_cap=2)
    yield handle
    handle.stop()


def cli(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_push_status_pull_a_demo_experiment(emulator, tmp_path, monkeypatch):
    ws = make_workspace(tmp_path / "ws", {"demo_tiny": DEMO_TINY})
    client_env(monkeypatch, tmp_path / "home", emulator.url)
    monkeypatch.chdir(ws)

    code, out, err = cli("push", "demo_*", "--dry-run")
    assert code == 0 and "would push" in out and not (ws / "results" / "ledger.json").exists()
    code, out, err = cli("push", "demo_tiny")
    assert code == 0, err
    run = ledger_json(ws)["experiments"]["demo_tiny"]
    assert run["kernel"] == f"{USER}/kagglerun-demo-tiny" and run["runs"][0]["version"] == 1

    code, out, err = cli("status", "--watch", "--interval", "0.5")
    assert code == 0 and "complete" in out, err
    code, out, err = cli("pull", "demo_tiny")
    assert code == 0 and "pulled" in out, err
    folder = ws / "results" / "demo_tiny"
    settings = ExperimentStore(ws / "experiments").load("demo_tiny")
    summary = check_contract(folder, settings.hash, 2)
    assert "epoch    2/2" in (folder / "log.txt").read_text()
    assert ledger_json(ws)["experiments"]["demo_tiny"]["runs"][0]["pulled_at"]

    # Idempotent: a second pull and a second push change nothing.
    before = snapshot(ws / "results")
    assert "up to date" in cli("pull", "--all")[1]
    code, out, _ = cli("push", "demo_tiny")
    assert code == 0 and "skipped" in out and "unchanged since v1" in out
    assert snapshot(ws / "results") == before

    # Output names that would escape results/EXP are refused, and nothing changes.
    real_outputs = KaggleKernels.outputs

    def evil_outputs(self, kernel, version=None, page_size=50):
        got = real_outputs(self, kernel, version, page_size)
        return Outputs(got.files + [OutputFile("../../escape.txt", got.files[0].url)], got.log)

    monkeypatch.setattr(KaggleKernels, "outputs", evil_outputs)
    code, out, err = cli("pull", "demo_tiny", "--force")
    assert code != 0 and "refusing output named '../../escape.txt'" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setattr(KaggleKernels, "outputs", real_outputs)
    assert snapshot(ws / "results") == before and not (ws / "escape.txt").exists()

    # A full disk during pull: a clear error, the results as they were.
    real_download, calls = KaggleKernels.download, []

    def disk_full(self, url, dest):
        calls.append(dest)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_download(self, url, dest)

    monkeypatch.setattr(KaggleKernels, "download", disk_full)
    code, out, err = cli("pull", "demo_tiny", "--force")
    assert code != 0 and "the disk is full" in err and "left as it was" in err
    assert snapshot(ws / "results") == before
    assert summary["best_test_acc"] > 0


def test_five_experiments_wait_under_a_cap_of_two(emulator, tmp_path, monkeypatch):
    ws = make_workspace(tmp_path / "ws", {f"tiny_{i}": tiny_toml(seed=i) for i in range(5)})
    client_env(monkeypatch, tmp_path / "home", emulator.url)
    monkeypatch.chdir(ws)
    start = time.time()
    code, out, err = cli("push", "tiny_*", "--wait", "--max-running", "2", "--poll", "0.5")
    assert code == 0, err
    assert out.count("complete") >= 5
    code, out, err = cli("pull", "--all")
    assert code == 0 and out.count("pulled") == 5, err
    store = ExperimentStore(ws / "experiments")
    for i in range(5):
        check_contract(ws / "results" / f"tiny_{i}", store.load(f"tiny_{i}").hash, 2)
    assert emulator.stats()["peak_running"] == 2
    print(f"five runs pushed, followed and pulled in {time.time() - start:.1f} s")


def test_cancelled_run_resumes_and_stale_output_is_refused(tmp_path, monkeypatch):
    """A run stopped mid-way (here cancelled, as Kaggle's time limit would kill it) is pushed again to its
    partner kernel with the first one's output attached and continues from its checkpoint: one continuous
    history. Output of the previous
    version served as the latest is detected and never used."""
    from kagglerun.emulator.faults import FaultConfig

    handle = start_emulator(tmp_path / "emu")
    try:
        ws_root = make_workspace(tmp_path / "ws", {"long_a": tiny_toml(epochs=8)})
        client_env(monkeypatch, tmp_path / "home", handle.url)
        ws, api = Workspace(ws_root), connect()
        push_experiments(ws, ["long_a"], api=api)
        # The push answer names no session (as Kaggle's): the emulator's own state says which one runs v1.
        session_id = handle.emulator.state.kernel(USER, "kagglerun-long-a").sessions[0]
        history = tmp_path / "emu" / "sessions" / str(session_id) / "working" / "history.csv"
        deadline = time.time() + 60
        while time.time() < deadline and (not history.exists() or len(history.read_text().splitlines()) < 3):
            time.sleep(0.2)
        api.cancel(session_id)
        while not api.status(f"{USER}/kagglerun-long-a", 1).finished:
            time.sleep(0.2)
        report = push_experiments(ws, ["long_a"], api=api, options=PushOptions(wait=True, poll_seconds=0.5))
        runs = Ledger(ws.results).entry("long_a").versions
        assert [r.state for r in runs] == ["cancel_acknowledged", "complete"]
        assert runs[0].has_checkpoint and runs[1].resumes == 1, report.plans[0].reason
        # resumed in the partner kernel, given the first kernel's output: no kernel is its own source
        assert [r.kernel for r in runs] == [f"{USER}/kagglerun-long-a", f"{USER}/kagglerun-long-a-b"]
        assert runs[1].source == runs[0].kernel and handle.stats()["self_sources_refused"] == 0

        assert pull_one(ws, api, "long_a").action == "pulled"
        summary = check_contract(ws.results / "long_a", ExperimentStore(ws.experiments).load("long_a").hash, 8)
        assert summary["resumed_from_epoch"] >= 2

        # Pushed afresh (--force) into its own kernel again, as v2: that kernel's v1 output served as v2's is refused
        push_experiments(ws, ["long_a"], api=api, options=PushOptions(force=True, wait=True, poll_seconds=0.5))
        assert Ledger(ws.results).entry("long_a").latest.label == f"{USER}/kagglerun-long-a v2"
        before = snapshot(ws.results)
        handle.emulator.set_faults(FaultConfig(stale=1.0, seed=3))
        with pytest.raises(PullError, match="stale output: it was written at .* before v2 was pushed"):
            pull_one(ws, api, "long_a", sleep=lambda s: None)
        assert snapshot(ws.results).keys() == before.keys()  # nothing pulled; only the ledger notes why
        assert "stale output" in Ledger(ws.results).entry("long_a").latest.failure

        handle.emulator.set_faults(FaultConfig())
        assert pull_one(ws, api, "long_a").action == "pulled"
        check_contract(ws.results / "long_a", ExperimentStore(ws.experiments).load("long_a").hash, 8)
    finally:
        handle.stop()


@pytest.fixture
def settled(tmp_path):
    """A workspace with earlier results and a ledger, to show that failures leave both untouched."""
    ws = make_workspace(tmp_path / "ws", {"tiny_a": tiny_toml(), "wrong_a": tiny_toml(seed=5)})
    (ws / "results" / "tiny_a").mkdir(parents=True)
    (ws / "results" / "tiny_a" / "summary.json").write_text('{"state": "complete"}\n')
    ledger = {"format": 1, "experiments": {"wrong_a": {"kernel": f"{USER}/no-such-kernel", "runs": [
        {"version": 1, "settings_hash": "x", "core_hash": "y", "pushed_at": "2024-01-01T00:00:00+00:00",
         "state": "running"}]}}}
    (ws / "results" / "ledger.json").write_text(json.dumps(ledger, indent=2))
    # as the ledger writes it, every field spelt out: a push refused outright then leaves its bytes as they were
    entries = Ledger(ws / "results").load()
    (ws / "results" / "ledger.json").unlink()
    with Ledger(ws / "results").update() as fresh:
        fresh.update(entries)
    return ws


@pytest.mark.parametrize("case, args, message", [
    ("no credentials", ["push", "tiny_a"], "no Kaggle credentials: set KAGGLE_API_TOKEN"),
    ("wrong slug", ["pull", "wrong_a"], f"HTTP 403) (Permission 'kernels.get' was denied): the kernel slug "
                                        f"{USER}/no-such-kernel is wrong"),
    ("emulator down", ["push", "tiny_a"], "cannot reach Kaggle at http://127.0.0.1:9"),
    ("session cap", ["push", "tiny_a"], "Maximum batch GPU session count of 2 reached.; use --wait"),
    ("unknown experiment", ["push", "tiny_b"], "unknown experiment 'tiny_b'"),
    ("glob matches nothing", ["push", "nope_*"], "glob 'nope_*' matches no experiment"),
])
def test_failures_are_one_clear_line_and_change_nothing(settled, tmp_path, monkeypatch, case, args, message):
    handle = None
    url = "http://127.0.0.1:9"
    if case in ("wrong slug", "session cap"):
        from kagglerun.emulator.faults import FaultConfig

        faults = FaultConfig(cap_reject=1.0) if case == "session cap" else FaultConfig()
        handle = start_emulator(tmp_path / "emu", faults=faults)
        url = handle.url
    try:
        client_env(monkeypatch, tmp_path / "home", url)
        if case == "no credentials":
            monkeypatch.delenv("KAGGLE_USERNAME")
            monkeypatch.delenv("KAGGLE_KEY")
        monkeypatch.chdir(settled)
        before = snapshot(settled / "results")
        code, out, err = cli(*args)
        assert code != 0
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err + out
        assert snapshot(settled / "results") == before
    finally:
        if handle:
            handle.stop()


def test_a_kernel_kaggle_does_not_know_spoils_neither_status_nor_pull_of_the_others(settled, emulator, tmp_path,
                                                                                    monkeypatch):
    """wrong_a's kernel is not on Kaggle (deleted there, or recorded by another account): its row says so,
    tiny_a is followed and pulled all the same, and the command ends with one line and exit status 3."""
    client_env(monkeypatch, tmp_path / "home", emulator.url)
    monkeypatch.chdir(settled)
    code, out, err = cli("push", "tiny_a", "--wait", "--poll", "0.3")
    assert code == 0 and "wrong_a: not counted as running" in " ".join((out + err).split()), out + err
    wrong_before = Ledger(settled / "results").entry("wrong_a")
    code, out, err = cli("status")
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 4}
    assert "complete" in rows["tiny_a"] and "unknown" in rows["wrong_a"], out
    assert code == 3 and len(err.strip().splitlines()) == 1 and err.startswith("error: wrong_a: Kaggle denied"), err
    code, out, err = cli("pull", "--all")
    assert code == 3 and "tiny_a: pulled" in " ".join(out.split()) and "wrong_a: refused" in out, out
    assert "no-such-kernel" in err and len(err.strip().splitlines()) == 1, err
    check_contract(settled / "results" / "tiny_a", ExperimentStore(settled / "experiments").load("tiny_a").hash, 2)
    assert Ledger(settled / "results").entry("wrong_a") == wrong_before
