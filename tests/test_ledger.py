"""The ledger in results/: readable, atomic, serialised, and never silently overwritten when corrupt."""

from __future__ import annotations

import json
import threading

import pytest

from kagglerun.errors import LedgerError
from kagglerun.runs.ledger import Ledger, Record, Version


def _run(version: int, **kw) -> Version:
    return Version(version=version, settings_hash="s" * 16, core_hash="c" * 16, pushed_at="2024-01-01T00:00:00+00:00", **kw)


def test_round_trip_is_indented_json_with_history(tmp_path):
    ledger = Ledger(tmp_path)
    with ledger.update() as entries:
        entries["bsln_4"] = Record("ann/kagglerun-bsln-4", [_run(1, state="error"), _run(2, resumes=1)])
    text = (tmp_path / "ledger.json").read_text()
    assert text.startswith("{\n  ") and '"kernel": "ann/kagglerun-bsln-4"' in text
    loaded = ledger.load()["bsln_4"]
    assert [r.version for r in loaded.versions] == [1, 2] and loaded.latest.resumes == 1


def test_previous_version_is_kept_as_bak(tmp_path):
    ledger = Ledger(tmp_path)
    with ledger.update() as entries:
        entries["a"] = Record("ann/a-kernel", [_run(1)])
    first = (tmp_path / "ledger.json").read_text()
    with ledger.update() as entries:
        entries["a"].latest.state = "complete"
    assert (tmp_path / "ledger.json.bak").read_text() == first


@pytest.mark.parametrize("content, message", [
    ("{not json", "corrupt ledger"),
    ('{"format": 1}', 'no "experiments" object'),
    ('{"format": 9, "experiments": {}}', "ledger format 9 is not 1"),
    ('{"format": 1, "experiments": {"a": {"runs": []}}}', "entry 'a'"),
    ('{"format": 1, "experiments": {"a": {"kernel": "x/y", "runs": [{"version": 1, "bogus": 2}]}}}', "entry 'a'"),
])
def test_corrupt_ledger_is_a_clear_error_and_is_never_overwritten(tmp_path, content, message):
    path = tmp_path / "ledger.json"
    path.write_text(content)
    ledger = Ledger(tmp_path)
    with pytest.raises(LedgerError, match=message) as e, ledger.update() as entries:
        entries["b"] = Record("ann/b-kernel")
    assert str(path) in str(e.value) and "will not overwrite" in str(e.value)
    assert path.read_text() == content


def test_concurrent_updates_lose_nothing(tmp_path):
    ledger = Ledger(tmp_path)

    def add(i: int) -> None:
        for v in range(1, 6):
            with Ledger(tmp_path).update() as entries:
                entries.setdefault(f"exp_{i}", Record(f"ann/exp-{i}")).versions.append(_run(v))

    threads = [threading.Thread(target=add, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = ledger.load()
    assert sorted(entries) == [f"exp_{i}" for i in range(6)]
    assert all([r.version for r in e.versions] == [1, 2, 3, 4, 5] for e in entries.values())
    json.loads((tmp_path / "ledger.json").read_text())


def test_a_ledger_written_before_alternation_loads_with_each_run_in_the_entrys_kernel(tmp_path):
    old = {"format": 1, "experiments": {"a": {"kernel": "ann/kagglerun-a", "runs": [
        {"version": 1, "settings_hash": "s", "core_hash": "c", "pushed_at": "2024-01-01T00:00:00+00:00",
         "state": "complete", "resumes": None, "session_id": 7}]}}}
    (tmp_path / "ledger.json").write_text(json.dumps(old))
    entry = Ledger(tmp_path).load()["a"]
    assert entry.latest.kernel == "ann/kagglerun-a" and entry.latest.label == "ann/kagglerun-a v1"
    assert not entry.latest.pushing and entry.latest.prior_version is None


def test_recording_a_version_replaces_the_intent_of_its_push_and_keeps_both_kernels(tmp_path):
    entry = Record("ann/k-a", [_run(1, kernel="ann/k-a"), _run(1, kernel="ann/k-a-b"),
                               _run(0, state="pushing", kernel="ann/k-a", prior_version=1)])
    assert entry.latest.pushing and "answer unknown" in entry.latest.label
    entry.record(_run(2, kernel="ann/k-a"))
    assert [(r.kernel, r.version) for r in entry.versions] == [("ann/k-a", 1), ("ann/k-a-b", 1), ("ann/k-a", 2)]


def test_an_unwritable_results_folder_is_found_before_anything_is_pushed(tmp_path):
    results = tmp_path / "results"
    results.write_text("not a folder")  # unwritable for root too (the tests may run as root)
    with pytest.raises(LedgerError, match=f"{results}: cannot write the ledger there .*nothing was pushed"):
        Ledger(results).check_writable()
    results.unlink()
    Ledger(results).check_writable()
    assert list(results.iterdir()) == []  # the check leaves nothing behind


def test_bookkeeping_writes_leave_the_backup_alone(tmp_path):
    ledger = Ledger(tmp_path)
    with ledger.update() as entries:
        entries["a"] = Record("ann/a-kernel", [_run(1)])
    with ledger.update(backup=False) as entries:
        entries["a"].versions.append(_run(0, state="pushing"))
    assert not (tmp_path / "ledger.json.bak").exists() and ledger.load()["a"].latest.pushing
