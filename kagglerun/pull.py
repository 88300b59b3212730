"""Pull finished runs' outputs into results/EXP/: verified, never stale, swapped in whole.

Each file named in the run's manifest.json is downloaded into a temporary folder beside results/EXP and
checked for size and SHA-256; summary.json must carry the settings hash the ledger recorded for that
version and must have been written after that version was pushed (else it is a previous version's output,
which Kaggle may serve as the latest). Only then does the folder replace results/EXP, so good results are
never overwritten by an error page, a partial file or stale output. The session log becomes log.txt.

A pack's kernel holds each member's output in `<member>/`, with its own manifest; each member is pulled
into results/<member>/ by the same verified path, judged against its own settings hash, and the members
of one pack share one output listing.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Callable

from .core.contract import MANIFEST_FILE, SUMMARY_FILE, atomic_write_text, file_sha256
from .errors import PullError
from .follow import refresh_entry
from .kaggle_api import DownloadFailed, KaggleKernels, OutputFile, Outputs, log_text
from .ledger import Ledger, Run, now_iso
from .workspace import Workspace

LOG_FILE = "log.txt"
ATTEMPTS = 5  # per experiment: listings tried again after stale output or a file that kept failing
FILE_TRIES = 3  # per file and attempt: downloads tried again after a short body or a bad checksum


class _Retry(Exception):
    """This attempt got something wrong from the server (short file, bad checksum, stale output)."""


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

    def fetch(self) -> tuple[dict, str]:
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
            if name not in by_name:
                raise _Retry(f"{name} is in the manifest but not in the output listing")
            self._download_verified(by_name[name], name, expected)
        summary = json.loads((self.staging / SUMMARY_FILE).read_text()) if SUMMARY_FILE in manifest else None
        if summary is None:
            raise _Retry(f"the output has no {SUMMARY_FILE}")
        stale = _stale_reason(summary, self.run)
        if stale:
            raise _Retry(f"stale output: {stale}")
        return summary, log_text(outputs.log)

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
    if run.state != "complete":
        return PullResult(name, "skipped", f"v{run.version} ended {run.state}: {run.failure or 'no reason given'}")
    final = ws.result_dir(name)
    if not force and run.pulled_at and _local_copy_matches(final, run):
        return PullResult(name, "up to date", f"v{run.version}", _best(final))
    ws.results.mkdir(parents=True, exist_ok=True)
    listings = {} if listings is None else listings
    listing = listings.setdefault((entry.kernel, run.version), _Listing(api, entry.kernel, run.version))
    problems: list[str] = []
    for attempt in range(1, attempts + 1):
        staging = Path(tempfile.mkdtemp(prefix=f".pull-{name}-", dir=ws.results))
        try:
            summary, log = _Downloader(listing, run, staging, entry.output_prefix(name)).fetch()
            atomic_write_text(staging / LOG_FILE, log)
            _swap_in(staging, final)
            break
        except _Retry as e:
            listing.forget()
            problems.append(str(e))
            api.counters["pull_retries"] += 1
            sleep(min(8.0, 0.5 * 2 ** (attempt - 1)))
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise PullError(f"{name}: the disk is full while pulling into {ws.results}; "
                                f"{final} was left as it was — free some space and pull again") from None
            raise PullError(f"{name}: cannot write into {ws.results}: {e.strerror or e}; "
                            f"{final} was left as it was") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    else:
        reason = problems[-1]
        with ledger.update() as entries:
            entries[name].latest.failure = f"pull failed: {reason}"
        raise PullError(f"{name}: could not get a verified copy of {entry.kernel} v{run.version} in {attempts} "
                        f"attempts ({reason}); {final} was left as it was")
    with ledger.update() as entries:
        latest = entries[name].latest
        latest.pulled_at = now_iso()
        latest.run_state = str(summary.get("state") or "")
        latest.epochs_done = summary.get("epochs_done")
        latest.has_checkpoint = latest.has_checkpoint or latest.run_state == "stopped"
    detail = f"v{run.version}" + (f" of {entry.pack_name}" if entry.pack else "") + (f" after {len(problems)} bad attempt(s): {problems[-1]}" if problems else "")
    return PullResult(name, "pulled", detail, summary.get("best_test_acc"))


def _best(folder: Path) -> float | None:
    try:
        return json.loads((folder / SUMMARY_FILE).read_text()).get("best_test_acc")
    except (OSError, ValueError):
        return None


def pull_experiments(ws: Workspace, names: list[str], *, api: KaggleKernels, force: bool = False,
                     on_result: Callable[[PullResult], None] | None = None,
                     sleep: Callable[[float], None] = time.sleep) -> list[PullResult]:
    """Pull each named experiment (see `pull_one`); one that cannot be pulled does not stop the others,
    and the first such error is raised at the end."""
    results, first_error = [], None
    listings: dict[tuple[str, int], _Listing] = {}
    for name in names:
        try:
            result = pull_one(ws, api, name, force=force, sleep=sleep, listings=listings)
        except PullError as e:
            first_error = first_error or e
            result = PullResult(name, "refused", str(e))
        results.append(result)
        if on_result:
            on_result(result)
    if first_error is not None:
        more = sum(r.action == "refused" for r in results) - 1
        raise PullError(f"{first_error}" + (f" (and {more} more)" if more else ""))
    return results
