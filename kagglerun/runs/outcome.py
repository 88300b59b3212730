"""A finished version's output, fetched verified: every file in its manifest checked for size and SHA-256,
its summary.json for the settings hash the ledger recorded and for being written after the push (else it is
a previous version's output, which Kaggle may serve as the latest). `read_outcome` learns from it how the
training ended; `pull` swaps it into results/.

A pack's kernel holds each member's output in `<member>/`, with its own manifest; each member is judged on
its own, and the members of one pack share one output listing.

Only the files the manifest names are fetched. The files Kaggle's runner adds after the notebook has ended
(`__notebook__.ipynb`, `__results__.html`, `__output__.json`, `custom.css`: papermill and nbconvert, see the
emulator's sessions.py) are in the listing but in no manifest, so they never reach results/EXP.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path, PurePosixPath, PureWindowsPath

from ..core.contract import CHECKPOINT_LAST, MANIFEST_FILE, RUN_STATES, SUMMARY_FILE, file_sha256
from ..errors import PullError
from ..kaggle import DownloadFailed, KaggleKernels, OutputFile, Outputs
from ..kaggle.logs import log_text
from ..states import KernelState, RunState
from .ledger import Version

FILE_TRIES = 3  # per file and attempt: downloads tried again after a short body or a bad checksum


class _Retry(Exception):
    """This attempt got something wrong from the server (short file, bad checksum, stale output); a refused
    download may say how long to wait (Retry-After)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class Unverified(Exception):
    """Every attempt at a run's output got something wrong; args[0] lists what, attempt by attempt."""


def safe_output_name(name: str) -> bool:
    """A name that stays inside the destination folder: relative, no '..', no drive, no backslash."""
    if not name or "\\" in name or "\0" in name or PureWindowsPath(name).drive:
        return False
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts


_NUMBER = (int, float)
# What the ledger, the status table and the report read from a pulled summary.json, and the types they need
# (None allowed where the core writes null). Other keys are the report's to judge.
_SUMMARY_TYPES: dict[str, tuple[type, ...]] = {
    "state": (str,), "settings_hash": (str,), "updated_at": (str,), "experiment": (str, type(None)),
    "epochs_done": (int, type(None)), "epochs_total": (int, type(None)), "best_epoch": (int, type(None)),
    "best_test_acc": (*_NUMBER, type(None)), "final_test_acc": (*_NUMBER, type(None)),
    "error": (str, type(None)),
}


def summary_problem(summary: object) -> str:
    """What is wrong with a summary.json's shape, in words (empty when nothing is)."""
    if not isinstance(summary, dict):
        return f"it is a JSON {type(summary).__name__}, not an object"
    for key, types in _SUMMARY_TYPES.items():
        if key not in summary:
            continue
        value = summary[key]
        if isinstance(value, bool) or not isinstance(value, types) or \
                (isinstance(value, float) and not math.isfinite(value)):
            wanted = " or ".join(word for word, present in (
                ("a string", str in types), ("a number", float in types), ("an integer", int in types and float not in types),
                ("null", type(None) in types)) if present)
            return f"{key} is {json.dumps(value)[:60]}, not {wanted}"
    if summary.get("state") not in RUN_STATES:
        return f"state is {json.dumps(summary.get('state'))[:60]}, not one of {', '.join(RUN_STATES)}"
    return ""


def stale_reason(summary: dict, run: Version) -> str:
    if summary.get("settings_hash") != run.settings_hash:
        return (f"its settings hash {summary.get('settings_hash')} is not v{run.version}'s {run.settings_hash} "
                "(output of another version)")
    try:
        written, pushed = datetime.fromisoformat(summary["updated_at"]), datetime.fromisoformat(run.pushed_at)
    except (KeyError, TypeError, ValueError):
        return "summary.json has no valid updated_at"
    if written < pushed:
        return f"it was written at {summary['updated_at']}, before v{run.version} was pushed (a previous version's output)"
    return ""


class Listing:
    """A kernel version's output listing, asked once and shared by a pack's members; forgotten after a bad
    attempt, so the next one gets fresh (signed) URLs."""

    def __init__(self, api: KaggleKernels, kernel: str, version: int):
        self.api, self.kernel, self.version = api, kernel, version
        self._outputs: Outputs | None = None

    def get(self) -> Outputs:
        if self._outputs is None:
            self._outputs = self.api.outputs(self.kernel, self.version)
        return self._outputs

    def forget(self) -> None:
        self._outputs = None


class _Downloader:
    """One attempt at fetching a version's verified output into a staging folder."""

    def __init__(self, listing: Listing, run: Version, staging: Path, prefix: str = ""):
        self.api, self.kernel, self.listing = listing.api, listing.kernel, listing
        self.run, self.staging, self.prefix = run, staging, prefix

    def fetch(self, only: tuple[str, ...] | None = None) -> tuple[dict, dict, str]:
        """Download the manifest's files (only those in `only`, when given) verified, into the staging folder;
        returns the summary, the manifest and the session log."""
        outputs = self.listing.get()
        by_name: dict[str, OutputFile] = {}
        for f in outputs.files:
            if not safe_output_name(f.name):
                raise PullError(f"{self.kernel} v{self.run.version}: refusing output named {f.name!r}: it would "
                                "land outside results/ (an absolute path or '..')")
            if f.name.startswith(self.prefix):  # a pack member's files are under <member>/
                by_name[f.name[len(self.prefix):]] = f
        if MANIFEST_FILE not in by_name:
            raise _Retry(f"the output listing has no {MANIFEST_FILE}")
        manifest = self._manifest(by_name[MANIFEST_FILE])
        for name, expected in sorted(manifest.items()):
            if not safe_output_name(name) or "/" in name:
                raise PullError(f"{self.kernel} v{self.run.version}: refusing manifest entry {name!r}")
            if only is not None and name not in only:
                continue
            if name not in by_name:
                raise _Retry(f"{name} is in the manifest but not in the output listing")
            self._download_verified(by_name[name], name, expected)
        if SUMMARY_FILE not in manifest:
            raise _Retry(f"the output has no {SUMMARY_FILE}")
        try:  # verified against the manifest: asking again would give the same bytes
            summary = json.loads((self.staging / SUMMARY_FILE).read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise PullError(f"{self.kernel} v{self.run.version}: refusing its {SUMMARY_FILE}: not JSON ({e})") from None
        problem = summary_problem(summary)
        if problem:
            raise PullError(f"{self.kernel} v{self.run.version}: refusing its {SUMMARY_FILE}: {problem}")
        stale = stale_reason(summary, self.run)
        if stale:
            raise _Retry(f"stale output: {stale}")
        return summary, manifest, log_text(outputs.log)

    def _manifest(self, item: OutputFile) -> dict:
        path = self.staging / MANIFEST_FILE
        self._download(item, path)
        try:
            manifest = json.loads(path.read_text())
            if not all(isinstance(m["size"], int) and isinstance(m["sha256"], str) for m in manifest.values()):
                raise TypeError
            return manifest
        except (ValueError, KeyError, TypeError, AttributeError):
            raise _Retry(f"{MANIFEST_FILE} is not a manifest (an error page, or truncated)") from None

    def _download_verified(self, item: OutputFile, name: str, expected: dict) -> None:
        """Download one file until it matches the manifest, a few times before giving up this attempt."""
        path = self.staging / name
        for tries_left in reversed(range(FILE_TRIES)):
            try:
                self._download(item, path)
                size = path.stat().st_size
                if size != expected["size"]:
                    raise _Retry(f"{name}: {size} bytes, the manifest says {expected['size']}")
                if file_sha256(path) != expected["sha256"]:
                    raise _Retry(f"{name}: SHA-256 does not match the manifest")
                return
            except _Retry:
                self.api.counters["download_retries"] += 1
                if not tries_left:
                    raise

    def _download(self, item: OutputFile, path: Path) -> None:
        try:
            self.api.download(item.url, path)
        except DownloadFailed as e:  # the next attempt lists again: fresh URLs, in case a signed one expired
            raise _Retry(f"{item.name}: {e}", e.retry_after) from None


def fetch_verified(listing: Listing, run: Version, prefix: str, *, attempts: int, sleep: Callable[[float], None],
                    staging_in: Path | None = None, only: tuple[str, ...] | None = None,
                    into: Callable[[Path, str], None] | None = None) -> tuple[dict, dict, list[str]]:
    """Fetch `run`'s verified output (see `_Downloader`) into a staging folder, up to `attempts` times with a
    fresh listing and a growing pause between them; `into(staging, log)` takes what was fetched before the
    staging folder goes. Returns the summary, the manifest and what went wrong in the bad attempts; raises
    Unverified when every attempt went wrong. OSError (a full disk) is the caller's to explain."""
    problems: list[str] = []
    for attempt in range(1, attempts + 1):
        staging = Path(tempfile.mkdtemp(prefix=f".pull-{run.version}-", dir=staging_in))
        try:
            summary, manifest, log = _Downloader(listing, run, staging, prefix).fetch(only)
            if into is not None:
                into(staging, log)
            return summary, manifest, problems
        except _Retry as e:
            listing.forget()
            problems.append(str(e))
            listing.api.counters["pull_retries"] += 1
            if attempt < attempts:
                # the API's retry policy: the server's Retry-After when a download said one, else its backoff
                delay = listing.api.retry.delay(attempt, e.retry_after)
                if e.retry_after is not None and delay >= 5:
                    listing.api.notify(f"{listing.kernel} v{run.version}: Kaggle asked to wait before downloading "
                                       f"again (Retry-After): waiting {delay:.0f} s, then attempt {attempt + 1} of {attempts}")
                sleep(delay)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    raise Unverified(problems)


def note_summary(run: Version, summary: dict, manifest: dict, *, run_state: bool = True) -> None:
    """Record in `run` what its own summary.json says: complete, stopped by its time budget, or failed; its
    epochs, its checkpoint, and its error as its failure. `run_state=False` leaves the state Kaggle's (a
    single run that Kaggle ended without completing: killed, its summary still says running)."""
    if run_state:
        run.run_state = str(summary.get("state") or "")
    run.epochs_done = summary.get("epochs_done")
    run.has_checkpoint = run.has_checkpoint or CHECKPOINT_LAST in manifest
    if summary.get("state") == RunState.FAILED and summary.get("error"):
        run.failure = str(summary["error"])


def read_outcome(api: KaggleKernels, kernel: str, run: Version, prefix: str = "", *, listing: Listing | None = None,
                 attempts: int = 1, sleep: Callable[[float], None] = time.sleep) -> None:
    """Record in the finished `run` what its output says (a pack member's under `prefix`): whether it holds
    a checkpoint to resume from and, from its verified summary.json, how the training ended (`note_summary`).

    The checkpoint is believed from a verified manifest: a listing may be stale (another version's output,
    served as this one's), and a checkpoint believed from one sends the next push to resume from a version
    that has none. Only output with no manifest yet (a session killed before its first epoch ended, holding
    the checkpoint it resumed from) is taken as listed. A single run that did not complete keeps Kaggle's
    state; its own error, if it wrote one, becomes its failure. A pack member that left no output at all is
    failed at once, with the kernel's failure as its reason; output that cannot be verified in `attempts`
    tries leaves the outcome unknown: Unverified (or PullError for output that must be refused)."""
    listing = listing or Listing(api, kernel, run.version)
    names = {f.name for f in listing.get().files}
    if prefix + MANIFEST_FILE not in names and run.state != KernelState.COMPLETE:
        run.has_checkpoint = run.has_checkpoint or prefix + CHECKPOINT_LAST in names
        if prefix:
            run.run_state = RunState.FAILED  # nothing to wait for: the kernel ended without this member writing anything
        return
    summary, manifest, _ = fetch_verified(listing, run, prefix, attempts=attempts, sleep=sleep, only=(SUMMARY_FILE,))
    note_summary(run, summary, manifest, run_state=bool(prefix) or run.state == KernelState.COMPLETE)


def describe_outcome(run: Version) -> str:
    """How a finished run's training ended, in words (empty while unknown)."""
    if run.run_state == RunState.STOPPED:
        epochs = f" after {run.epochs_done} epochs" if run.epochs_done is not None else ""
        return f"stopped by its time budget{epochs}; push again to resume"
    if run.run_state == RunState.FAILED:
        return f"failed: {run.failure or 'no reason given'}"
    return run.run_state
