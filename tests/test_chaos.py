"""Chaos: 20 tiny experiments through an emulator with every fault switched on, under Kaggle's cap of two
sessions, answers lost after the server acted included. All must end complete and pulled, with continuous
histories and a consistent ledger: every session the emulator ran is in the ledger, none twice."""

from __future__ import annotations

import csv
import json
import time
from collections import Counter

import pytest
from helpers import KEY, USER, make_workspace, start_emulator, tiny_toml

from kagglerun.core.contract import file_sha256
from kagglerun.emulator.faults import FAULTS, FaultConfig
from kagglerun.kaggle import ENDPOINT_ENV, Credentials, KaggleKernels, RetryPolicy
from kagglerun.progress import Observer
from kagglerun.runs.ledger import Ledger
from kagglerun.runs.pull import pull_experiments
from kagglerun.runs.push import PushOptions, push_experiments
from kagglerun.workspace import Workspace

pytestmark = pytest.mark.slow  # trains, runs notebooks or waits on the emulator

EXPERIMENTS = 20
EPOCHS = 2
FAULT_RATES = dict(http_500=0.03, http_503=0.03, http_429=0.03, drop=0.03, slow=0.03, truncate=0.04,
                   cap_reject=0.15, crash=0.08, oom=0.04, timeout=0.08, stale=0.25, drop_after=0.04,
                   http_500_after=0.04)

# The workspace's own main cell (it overrides the package's): the real epoch loop, resume and output
# contract, without the costs a tiny run does not need: importing torchvision for its version string
# (about 3 s per session here) and drawing curves.
FAST_MAIN = """
_versions = lambda: {"python": platform.python_version(), "torch": torch.__version__}
plot_curves = lambda path, rows, title: None
summary = main("run.json")
"""


class Events(Observer):
    """Collects the batch's news, so that a failure shows what happened to the experiment."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def event(self, message: str) -> None:
        self.lines.append(message)


def test_chaos_every_fault_survived(tmp_path, monkeypatch):
    assert set(FAULT_RATES) == set(FAULTS)  # every fault the emulator knows is switched on
    faults = FaultConfig(**FAULT_RATES, retry_after=0.2, slow_seconds=0.3, crash_after=2.0, timeout_after=5.0, seed=7)
    # One thread per session: two sessions on a 2-core runner otherwise fight over the cores.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    handle = start_emulator(tmp_path / "emu", workers=2, gpu_session_cap=2, faults=faults)
    try:
        names = [f"chaos_{i:02d}" for i in range(EXPERIMENTS)]
        ws = Workspace(make_workspace(tmp_path / "ws", {n: tiny_toml(seed=i, epochs=EPOCHS) for i, n in enumerate(names)}))
        (ws.templates).mkdir()
        (ws.templates / "main.py.j2").write_text(FAST_MAIN)
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        api = KaggleKernels(Credentials(USER, KEY), environ={ENDPOINT_ENV: handle.url},
                            retry=RetryPolicy(attempts=8, base_seconds=0.05, cap_seconds=0.5))
        events = Events()
        start = time.time()
        report = push_experiments(ws, names, api=api, options=PushOptions(wait=True, max_running=2, retries=6, poll_seconds=0.3),
                                  observer=events)
        pushed_s = time.time() - start
        pulled = pull_experiments(ws, names, api=api, sleep=lambda s: time.sleep(0.05))
        elapsed = time.time() - start
        stats = handle.stats()
        sessions = Counter(f"{s.owner}/{s.slug}" for s in handle.emulator.state.sessions.values())
    finally:
        handle.stop()

    failed = [r.experiment for r in report.rows if r.state != "complete"]
    assert not failed, "\n".join(line for line in events.lines if any(name in line for name in failed))
    assert [p.action for p in pulled] == ["pulled"] * EXPERIMENTS, [(p.experiment, p.detail) for p in pulled]
    assert stats["peak_running"] <= 2

    entries = Ledger(ws.results).load()
    resumed = 0
    for name in names:
        entry = entries[name]
        versions = [(r.kernel, r.version) for r in entry.versions]
        assert len(set(versions)) == len(versions), f"{name}: a version recorded twice {versions}"
        for kernel in {k for k, _ in versions}:
            numbers = [v for k, v in versions if k == kernel]
            assert numbers == list(range(1, len(numbers) + 1)), f"{name}: {kernel} versions {numbers}"
        assert all(r.finished and r.state != "complete" for r in entry.versions[:-1]), name
        latest = entry.latest
        assert latest.state == "complete" and latest.pulled_at and latest.epochs_done == EPOCHS, name
        assert latest.resumes is None or ((latest.source, latest.resumes) in versions[:-1]
                                          and latest.source != latest.kernel)
        folder = ws.result_dir(name)
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["state"] == "complete" and summary["settings_hash"] == latest.settings_hash
        with open(folder / "history.csv") as f:
            assert [int(r["epoch"]) for r in csv.DictReader(f)] == list(range(1, EPOCHS + 1)), name
        for file, expected in json.loads((folder / "manifest.json").read_text()).items():
            assert file_sha256(folder / file) == expected["sha256"]
        resumed += summary["resumed_from_epoch"] is not None

    # No duplicate session, nothing lost: every session Kaggle ran is one ledger version, and no kernel was its own source
    recorded = Counter(r.kernel for e in entries.values() for r in e.versions)
    assert sessions == recorded and stats["self_sources_refused"] == 0
    injected = {k: v for k, v in stats["faults_injected"].items() if v}
    assert injected.get("drop_after", 0) + injected.get("http_500_after", 0) > 0  # answers were lost after acting
    extra_versions = sum(len(e.versions) - 1 for e in entries.values())
    print(f"\nchaos: {EXPERIMENTS} experiments, cap 2, {elapsed:.0f} s ({pushed_s:.0f} s pushing and following)")
    print(f"faults injected: {sum(injected.values())} {injected}")
    print(f"survived by the client: {dict(sorted(api.counters.items()))}; versions pushed again: {extra_versions} "
          f"({resumed} resumed from a checkpoint); experiments lost: 0; duplicate sessions: 0")
