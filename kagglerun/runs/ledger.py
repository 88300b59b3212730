"""The ledger: results/ledger.json, what was pushed to Kaggle, which version, its state, and when it was pulled.

One entry per experiment, holding every pushed version in order (the last is the current one), so a
resumed experiment keeps the history of the sessions that made it. A packed experiment's entry names the
pack's kernel and carries `"pack": {"name": "pack_a_b", "members": ["a", "b"]}`; its runs hold its own
settings hash, so each member is judged (skipped, pulled, verified) on its own, and its `run_state` says how
its own training ended when that differs from the kernel's (one member failing fails the kernel):

    {"format": 1, "experiments": {"bsln_4": {"kernel": "ann/kagglerun-bsln-4", "runs": [
        {"version": 3, "settings_hash": "…", "core_hash": "…", "pushed_at": "…", "state": "complete",
         "failure": "", "finished_at": "…", "resumes": 2, "has_checkpoint": true, "pulled_at": "…"}]}}}

A resumed run alternates between the experiment's two kernels (its own and its partner, slug-b: Kaggle does
not let a kernel take its own output as an input), so each run names the kernel it went to (`kernel`) and,
when resuming, the kernel whose output it was given (`source`). Entries written before that name no kernel
per run: their runs went to the entry's kernel, which they are given on load.

The ledger is written ahead of every push: a run in state "pushing" (version 0, `prior_version` the kernel's
version before the push) is the intent of a push whose answer is not (yet) known; the next command asks
Kaggle whether that version was created and records it, or drops the intent (runs/status.resolve_pushing).

Writes are atomic and serialised by a lock file, so `push --wait` in one terminal and `status` in another
do not lose each other's updates. A corrupt ledger is an error naming the file; it is never overwritten,
and the previous good version is kept beside it as ledger.json.bak.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError

from ..core.contract import atomic_write_bytes
from ..errors import ExperimentError, LedgerError
from ..states import FINISHED
from ..workspace import Workspace

LEDGER_FILE = "ledger.json"
FORMAT = 1
PUSHING = "pushing"  # a run's state between the intent of a push and Kaggle's answer


@dataclass
class Version:
    """One pushed version of an experiment's kernel."""

    version: int
    settings_hash: str
    core_hash: str
    pushed_at: str
    state: str = "queued"  # Kaggle's session state, lower case: queued, running, complete, error, …
    failure: str = ""  # Kaggle's failure message, or ours (e.g. stale output)
    finished_at: str = ""
    resumes: int | None = None  # the version whose checkpoint this one was given as input
    has_checkpoint: bool = False  # its output holds checkpoint_last.pt (so a later push can resume it)
    epochs_done: int | None = None  # from the pulled summary
    # The run's own summary.json state once read (at its end or on pull): complete; stopped by its time budget
    # (Kaggle still says complete; the next push resumes it); failed (a pack member: its kernel's state is error)
    run_state: str = ""
    pulled_at: str = ""
    # Not known: the push answer names no session (kagglesdk ApiSaveKernelResponse has no session id); the
    # version number is the handle. Kept so that ledgers written before still load.
    session_id: int = 0
    # What made the experiment differ from its file (`--set`, a sweep point's or a search trial's values):
    # dotted key -> value; with it `status` and `pull` know experiments that have no file of their own
    overrides: dict[str, Any] = field(default_factory=dict)
    kernel: str = ""  # the kernel it went to: the entry's, or its partner (empty only before loading)
    source: str = ""  # when resuming: the kernel whose output (holding version `resumes`) it was given
    prior_version: int | None = None  # while pushing: the kernel's current version before the push

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def pushing(self) -> bool:
        """The push's answer is not known yet: the version may or may not exist on Kaggle."""
        return self.state == PUSHING

    @property
    def label(self) -> str:
        """`owner/slug v3`: which kernel's which version (a resumed run alternates between two kernels)."""
        return f"{self.kernel} v{self.version}" if self.version else f"{self.kernel} (pushing: answer unknown)"


# Each run's fields with the types Version declares, strictly (no "3" for 3), unknown fields refused.
_VERSIONS = TypeAdapter(list[Version], config=ConfigDict(strict=True, extra="forbid"))


@dataclass
class Record:
    """An experiment's kernel and its pushed versions, oldest first."""

    kernel: str
    versions: list[Version] = field(default_factory=list)
    pack: dict[str, Any] | None = None  # {"name": pack name, "members": [experiment, …]} when packed

    @property
    def latest(self) -> Version | None:
        return self.versions[-1] if self.versions else None

    @property
    def last(self) -> Version:
        """The latest version, of a record known to have one."""
        if not self.versions:
            raise LedgerError(f"ledger record of {self.kernel} has no versions")
        return self.versions[-1]

    def kernel_of(self, run: Version | None) -> str:
        """The kernel `run` went to (the entry's own for runs recorded before alternation)."""
        return (run.kernel if run is not None else "") or self.kernel

    def record(self, run: Version) -> None:
        """Add `run` as the latest version, replacing the intent of its push and any earlier record of the
        same kernel version."""
        self.versions = [r for r in self.versions
                         if not r.pushing and (self.kernel_of(r), r.version) != (self.kernel_of(run), run.version)]
        self.versions.append(run)

    @property
    def pack_name(self) -> str:
        return self.pack["name"] if self.pack else ""

    def output_prefix(self, name: str) -> str:
        """Where experiment `name`'s files lie in its kernel's output: a pack's member's in `<name>/`."""
        return f"{name}/" if self.pack else ""


class Ledger:
    """results/ledger.json. Read with `load()`; change with `with ledger.update() as entries: …`."""

    def __init__(self, results_dir: Path):
        self.path = Path(results_dir) / LEDGER_FILE
        self.backup = self.path.with_name(LEDGER_FILE + ".bak")
        self._lock_path = self.path.with_name("." + LEDGER_FILE + ".lock")

    def load(self) -> dict[str, Record]:
        """Every entry by experiment name; an absent ledger is empty."""
        raw = self._read_bytes()
        return self._parse(raw) if raw is not None else {}

    def entry(self, name: str) -> Record | None:
        return self.load().get(name)

    def check_writable(self) -> None:
        """Raise LedgerError unless results/ can be written (checked before anything is pushed: a push that
        Kaggle runs must reach the ledger)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.path.parent, prefix=".write-check-"):
                pass
            if self.path.exists() and not os.access(self.path, os.W_OK):
                raise PermissionError(errno.EACCES, "Permission denied")
        except OSError as e:
            raise LedgerError(f"{self.path.parent}: cannot write the ledger there ({e.strerror or e}); "
                              "nothing was pushed") from None

    @contextlib.contextmanager
    def update(self, *, backup: bool = True) -> Iterator[dict[str, Record]]:
        """Lock, load, let the caller change the entries, then write them back atomically. `backup=False`
        leaves ledger.json.bak as it is (the intent of a push and its answer: bookkeeping, not an edit)."""
        with self._locked():
            raw = self._read_bytes()
            entries = self._parse(raw) if raw is not None else {}
            before = _ledger_dict(entries)
            yield entries
            data = _ledger_dict(entries)
            if raw is not None and data == before:  # nothing changed: leave the file (and its backup) alone
                return
            text = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
            if raw is not None and backup:  # keep the last good version: a hand edit gone wrong can be undone
                atomic_write_bytes(self.backup, raw)
            atomic_write_bytes(self.path, text)

    def _read_bytes(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise LedgerError(f"{self.path}: cannot read the ledger: {e.strerror}") from None

    def _parse(self, raw: bytes) -> dict[str, Record]:
        hint = (f"; the previous version is in {self.backup}" if self.backup.exists() else "") + \
            " (fix or move it aside; kagglerun will not overwrite it)"
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise LedgerError(f"{self.path}: corrupt ledger: {e}{hint}") from None
        if not isinstance(data, dict) or not isinstance(data.get("experiments"), dict):
            raise LedgerError(f"{self.path}: corrupt ledger: no \"experiments\" object{hint}")
        if data.get("format") != FORMAT:
            raise LedgerError(f"{self.path}: ledger format {data.get('format')!r} is not {FORMAT}{hint}")
        entries = {}
        for name, item in data["experiments"].items():
            try:
                if not isinstance(item, dict):
                    raise TypeError("not an object")
                if not isinstance(item.get("kernel"), str):
                    raise TypeError("kernel: not a string")
                runs = _VERSIONS.validate_json(json.dumps(item.get("runs", [])))  # JSON mode: objects for dataclasses
                pack = item.get("pack")
                if pack is not None and not (isinstance(pack, dict) and isinstance(pack.get("name"), str)
                                             and isinstance(pack.get("members"), list)):
                    raise TypeError("pack needs a name and a list of members")
                kernel = str(item["kernel"])
                for run in runs:  # runs recorded before alternation went to the entry's kernel
                    run.kernel = run.kernel or kernel
                entries[name] = Record(kernel, runs, pack)
            except ValidationError as e:
                err = e.errors()[0]
                where = ".".join(str(p) for p in ("runs", *err["loc"]))
                raise LedgerError(f"{self.path}: corrupt ledger: entry {name!r}: {where}: {err['msg']}{hint}") from None
            except (TypeError, KeyError, AttributeError) as e:
                raise LedgerError(f"{self.path}: corrupt ledger: entry {name!r}: {e}{hint}") from None
        return entries

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; single-process use is still safe
            yield
            return
        try:
            lock = open(self._lock_path, "a")  # noqa: SIM115 (closed below, after the unlock)
        except OSError as e:
            raise LedgerError(f"{self._lock_path}: cannot open the ledger's lock file: {e.strerror} "
                              "(it must be a file; move it aside)") from None
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _version_dict(r: Version) -> dict[str, Any]:
    item = dataclasses.asdict(r)
    if not item["overrides"]:  # absent when empty: ledgers read the same as before overrides
        del item["overrides"]
    return item


def _entry_dict(e: Record) -> dict[str, Any]:
    item: dict[str, Any] = {"kernel": e.kernel, "runs": [_version_dict(r) for r in e.versions]}
    if e.pack is not None:  # absent for single runs: ledgers written before packing read the same
        item["pack"] = e.pack
    return item


def _ledger_dict(entries: dict[str, Record]) -> dict[str, Any]:
    return {"format": FORMAT, "experiments": {name: _entry_dict(e) for name, e in sorted(entries.items())}}


def select_recorded(ws: Workspace, patterns: tuple[str, ...] | list[str], all_: bool, *, required: bool = False) -> list[str]:
    """Experiments for `status` and `pull`: the given names or globs (checked against experiments/), else,
    with --all or when nothing is named and `required` is False, every experiment in the ledger."""
    if patterns:
        return with_recorded(ws).store().select(patterns)
    if required and not all_:
        raise ExperimentError("name at least one experiment (or a glob, or --all)")
    names = sorted(Ledger(ws.results).load())
    if not names:
        raise ExperimentError(f"nothing has been pushed from this workspace yet ({ws.results / LEDGER_FILE} "
                              "has no experiments); push one first")
    return names


def recorded_points(ws: Workspace) -> dict[str, dict[str, Any]]:
    """Experiments pushed with overrides that the experiment files do not make (`push --set`, search
    trials): name -> the overrides of its latest version."""
    known = set(ws.store().names())
    return {name: dict(e.latest.overrides) for name, e in Ledger(ws.results).load().items()
            if name not in known and e.latest is not None and e.latest.overrides}


def with_recorded(ws: Workspace) -> Workspace:
    """The workspace knowing the experiments recorded in the ledger with their overrides."""
    return ws.with_points(recorded_points(ws))
