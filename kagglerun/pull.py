"""Pull finished runs' outputs into results/EXP/: verified, never stale, swapped in whole.

Each file named in the run's manifest.json is downloaded into a temporary folder beside results/EXP and
checked for size and SHA-256; summary.json must carry the settings hash the ledger recorded for that
version and must have been written after that version was pushed (else it is a previous version's output,
which Kaggle may serve as the latest). Only then does the folder replace results/EXP, so good results are
never overwritten by an error page, a partial file or stale output. The session log becomes log.txt.

A pack's kernel holds each member's output in `<member>/`, with its own manifest; each member is pulled
into results/<member>/ by the same verified path, judged against its own settings hash, and the members
of one pack share one output listing.

A pack's kernel ends in error when any member failed; each member whose own summary.json says "complete" is
still pulled, and a member that failed (or left no output) is reported with its reason, without waiting
for output that will never come. A run stopped by its time budget (summary.json "stopped") is pulled too,
and recorded as stopped with its checkpoint, so the next push resumes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Callable, Iterator

from .core.contract import (
    CHECKPOINT_LAST, MANIFEST_FILE, SUMMARY_FILE, atomic_write_text, file_sha256, now_iso, read_summary,
)
from .errors import KernelError, PullError
from .follow import refresh_entry
from .kaggle_api import DownloadFailed, KaggleKernels, OutputFile, Outputs, log_text
from .ledger import Ledger, Run
from .workspace import Workspace

LOG_FILE = "log.txt"
ATTEMPTS = 5  # per experiment: listings tried again after stale output or a file that kept failing
FILE_TRIES = 3  # per file and attempt: downloads tried again after a short body or a bad checksum


class _Retry(Exception):
    """This attempt got something wrong from the server (short file, bad checksum, stale output)."""


class Unverified(Exception):
    """Every attempt at a run's output got something wrong; args[0] lists what, attempt by attempt."""


@dataclass
class PullResult:
    experiment: str
    action: str  # pulled, up to date, skipped, refused
    detail: str = ""
    best_test_acc: float | None = None


def safe_output_name(name: str) -> bool:
    """A name that stays inside the destination folder: relative, no '..', no drive, no backslash."""
    if not name or "\\" in name or "\0" in name or PureWindowsPath(name).drive:
        return False
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts


def _stale_reason(summary: dict, run: Run) -> str:
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


def _local_copy_matches(folder: Path, run: Run) -> bool:
    """results/EXP already holds this version's verified output."""
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        summary = json.loads((folder / SUMMARY_FILE).read_text())
        return not _stale_reason(summary, run) and all(
            (folder / n).stat().st_size == m["size"] and file_sha256(folder / n) == m["sha256"]
            for n, m in manifest.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


class _Listing:
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

    def __init__(self, listing: _Listing, run: Run, staging: Path, prefix: str = ""):
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
        summary = json.loads((self.staging / SUMMARY_FILE).read_text()) if SUMMARY_FILE in manifest else None
        if summary is None:
            raise _Retry(f"the output has no {SUMMARY_FILE}")
        stale = _stale_reason(summary, self.run)
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
            raise _Retry(f"{item.name}: {e}") from None


def _swap_in(staging: Path, final: Path) -> None:
    """Replace `final` by `staging` with renames on one file system; the old folder goes only at the end."""
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, old / final.name)
    try:
        os.replace(staging, final)
    except OSError:
        if old is not None:
            os.replace(old / final.name, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fetch_verified(listing: _Listing, run: Run, prefix: str, *, attempts: int, sleep: Callable[[float], None],
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
                sleep(min(8.0, 0.5 * 2 ** (attempt - 1)))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    raise Unverified(problems)


def _note_summary(run: Run, summary: dict, manifest: dict) -> None:
    """Record in `run` what its own summary.json says: complete, stopped by its time budget, or failed."""
    run.run_state = str(summary.get("state") or "")
    run.epochs_done = summary.get("epochs_done")
    run.has_checkpoint = run.has_checkpoint or CHECKPOINT_LAST in manifest
    if run.run_state == "failed" and summary.get("error"):
        run.failure = str(summary["error"])


def read_outcome(api: KaggleKernels, kernel: str, run: Run, prefix: str = "", *, listing: _Listing | None = None,
                 attempts: int = 1, sleep: Callable[[float], None] = time.sleep) -> None:
    """Record in the finished `run` what its output says (a pack member's under `prefix`): whether it holds
    a checkpoint to resume from and, from its verified summary.json, how the training ended (`_note_summary`).

    A single run that did not complete is only checked for its checkpoint. A pack member that left no
    output at all is failed at once, with the kernel's failure as its reason; output that cannot be verified
    in `attempts` tries leaves the outcome unknown: Unverified (or PullError for output that must be refused)."""
    listing = listing or _Listing(api, kernel, run.version)
    names = {f.name for f in listing.get().files}
    run.has_checkpoint = run.has_checkpoint or prefix + CHECKPOINT_LAST in names
    if run.state != "complete" and not prefix:
        return
    if prefix + MANIFEST_FILE not in names and run.state != "complete":
        run.run_state = "failed"  # nothing to wait for: the kernel ended without this member writing anything
        return
    summary, manifest, _ = _fetch_verified(listing, run, prefix, attempts=attempts, sleep=sleep, only=(SUMMARY_FILE,))
    _note_summary(run, summary, manifest)


def describe_outcome(run: Run) -> str:
    """How a finished run's training ended, in words (empty while unknown)."""
    if run.run_state == "stopped":
        epochs = f" after {run.epochs_done} epochs" if run.epochs_done is not None else ""
        return f"stopped by its time budget{epochs}; push again to resume"
    if run.run_state == "failed":
        return f"failed: {run.failure or 'no reason given'}"
    return run.run_state


def pull_one(ws: Workspace, api: KaggleKernels, name: str, *, force: bool = False, attempts: int = ATTEMPTS,
             sleep: Callable[[float], None] = time.sleep,
             listings: dict[tuple[str, int], _Listing] | None = None) -> PullResult:
    """Pull the latest version of one experiment if it has finished; see the module docstring.

    `listings` keeps output listings between calls, so a pack's members share one."""
    ledger = Ledger(ws.results)
    entry = ledger.entry(name)
    if entry is None or entry.latest is None:
        return PullResult(name, "skipped", "never pushed (not in the ledger)")
    run = entry.latest
    if not run.finished:
        with ledger.update() as entries:
            refresh_entry(api, name, entries[name])
            run = entries[name].latest
    if not run.finished:
        return PullResult(name, "skipped", f"v{run.version} is still {run.state}")
    of_pack = f" of {entry.pack_name}" if entry.pack else ""
    listings = {} if listings is None else listings
    listing = listings.setdefault((entry.kernel, run.version), _Listing(api, entry.kernel, run.version))
    final = ws.result_dir(name)
    if run.state != "complete":
        if not entry.pack:
            return PullResult(name, "skipped", f"v{run.version} ended {run.state}: {run.failure or 'no reason given'}")
        # A pack's kernel fails when any member does: this member's own summary says whether it completed
        if not run.run_state:  # not learnt when the kernel ended (refresh): read it now, and keep it
            run = dataclasses.replace(run)  # the network stays outside the ledger's lock
            with _pull_errors(ledger, name, entry.kernel, run.version, final):
                read_outcome(api, entry.kernel, run, entry.output_prefix(name), listing=listing, attempts=attempts,
                             sleep=sleep)
            with ledger.update() as entries:
                if entries[name].latest.version == run.version:
                    entries[name].runs[-1] = run
        if run.run_state != "complete":
            return PullResult(name, "skipped", f"v{run.version}{of_pack} ended {run.state}; {name} "
                                               f"{describe_outcome(run) or 'left no readable output'}")
    if not force and run.pulled_at and _local_copy_matches(final, run):
        return PullResult(name, "up to date", f"v{run.version}", _best(final))
    ws.results.mkdir(parents=True, exist_ok=True)

    def swap_in(staging: Path, log: str) -> None:
        atomic_write_text(staging / LOG_FILE, log)
        _swap_in(staging, final)

    with _pull_errors(ledger, name, entry.kernel, run.version, final):
        summary, manifest, problems = _fetch_verified(listing, run, entry.output_prefix(name), attempts=attempts,
                                                      sleep=sleep, staging_in=ws.results, into=swap_in)
    with ledger.update() as entries:
        latest = entries[name].latest
        latest.pulled_at = now_iso()
        _note_summary(latest, summary, manifest)
        run = latest
    detail = f"v{run.version}{of_pack}" + (f", {describe_outcome(run)}" if run.run_state != "complete" else "") + \
        (f" after {len(problems)} bad attempt(s): {problems[-1]}" if problems else "")
    return PullResult(name, "pulled", detail, summary.get("best_test_acc"))


@contextlib.contextmanager
def _pull_errors(ledger: Ledger, name: str, kernel: str, version: int, final: Path) -> Iterator[None]:
    """Turn a fetch that never got a verified answer (noted in the ledger), or a full disk, into a PullError."""
    try:
        yield
    except Unverified as e:
        problems = e.args[0]
        with ledger.update() as entries:
            entries[name].latest.failure = f"pull failed: {problems[-1]}"
        raise PullError(f"{name}: could not get a verified copy of {kernel} v{version} in {len(problems)} "
                        f"attempts ({problems[-1]}); {final} was left as it was") from None
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise PullError(f"{name}: the disk is full while pulling into {final.parent}; "
                            f"{final} was left as it was — free some space and pull again") from None
        raise PullError(f"{name}: cannot write into {final.parent}: {e.strerror or e}; "
                        f"{final} was left as it was") from None


def _best(folder: Path) -> float | None:
    return (read_summary(folder) or {}).get("best_test_acc")


def pull_experiments(ws: Workspace, names: list[str], *, api: KaggleKernels, force: bool = False,
                     on_result: Callable[[PullResult], None] | None = None,
                     sleep: Callable[[float], None] = time.sleep) -> list[PullResult]:
    """Pull each named experiment (see `pull_one`); one that cannot be pulled, or whose kernel Kaggle does
    not know, does not stop the others, and the first such error is raised at the end."""
    results, first_error = [], None
    listings: dict[tuple[str, int], _Listing] = {}
    for name in names:
        try:
            result = pull_one(ws, api, name, force=force, sleep=sleep, listings=listings)
        except (PullError, KernelError) as e:
            first_error = first_error or e
            result = PullResult(name, "refused", str(e))
        results.append(result)
        if on_result:
            on_result(result)
    if first_error is not None:
        more = sum(r.action == "refused" for r in results) - 1
        raise type(first_error)(f"{first_error}" + (f" (and {more} more)" if more else ""))
    return results
