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
from collections.abc import Callable, Iterator
from pathlib import Path

from ..core.contract import LOG_FILE, MANIFEST_FILE, SUMMARY_FILE, atomic_write_text, file_sha256, now_iso, read_summary
from ..errors import KernelError, PullError
from ..kaggle import KaggleKernels
from ..progress import SILENT, Observer, PullResult
from ..states import KernelState, PullAction, RunState
from ..workspace import Workspace
from .ledger import Ledger, Version
from .outcome import Listing, Unverified, describe_outcome, fetch_verified, note_summary, read_outcome, stale_reason
from .status import refresh_entry

ATTEMPTS = 5  # per experiment: listings tried again after stale output or a file that kept failing


def _local_copy_matches(folder: Path, run: Version) -> bool:
    """results/EXP already holds this version's verified output."""
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        summary = json.loads((folder / SUMMARY_FILE).read_text())
        return not stale_reason(summary, run) and all(
            (folder / n).stat().st_size == m["size"] and file_sha256(folder / n) == m["sha256"]
            for n, m in manifest.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


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
             listings: dict[tuple[str, int], Listing] | None = None) -> PullResult:
    """Pull the latest version of one experiment if it has finished; see the module docstring.

    `listings` keeps output listings between calls, so a pack's members share one."""
    ledger = Ledger(ws.results)
    entry = ledger.entry(name)
    if entry is None or entry.latest is None:
        return PullResult(name, PullAction.SKIPPED, "never pushed (not in the ledger)")
    run = entry.last
    if not run.finished:
        with ledger.update() as entries:
            refresh_entry(api, name, entries[name])
            entry = entries[name]
            if entry.latest is None:  # an intent Kaggle shows nothing for: never pushed
                return PullResult(name, PullAction.SKIPPED, "never pushed (its last push made no version)")
            run = entry.last
    if run.pushing:
        return PullResult(name, PullAction.SKIPPED, f"{run.label}: Kaggle does not show the version yet")
    if not run.finished:
        return PullResult(name, PullAction.SKIPPED, f"v{run.version} is still {run.state}")
    kernel = entry.kernel_of(run)
    of_pack = f" of {entry.pack_name}" if entry.pack else ""
    listings = {} if listings is None else listings
    listing = listings.setdefault((kernel, run.version), Listing(api, kernel, run.version))
    final = ws.result_dir(name)
    if run.state != KernelState.COMPLETE:
        if not entry.pack:
            return PullResult(name, PullAction.SKIPPED, f"v{run.version} ended {run.state}: {run.failure or 'no reason given'}")
        # A pack's kernel fails when any member does: this member's own summary says whether it completed
        if not run.run_state:  # not learnt when the kernel ended (refresh): read it now, and keep it
            run = dataclasses.replace(run)  # the network stays outside the ledger's lock
            with _pull_errors(ledger, name, kernel, run.version, final):
                read_outcome(api, kernel, run, entry.output_prefix(name), listing=listing, attempts=attempts,
                             sleep=sleep)
            with ledger.update() as entries:
                if (entries[name].last.kernel, entries[name].last.version) == (run.kernel, run.version):
                    entries[name].versions[-1] = run
        if run.run_state != RunState.COMPLETE:
            return PullResult(name, PullAction.SKIPPED, f"v{run.version}{of_pack} ended {run.state}; {name} "
                                               f"{describe_outcome(run) or 'left no readable output'}")
    if not force and run.pulled_at and _local_copy_matches(final, run):
        return PullResult(name, PullAction.UP_TO_DATE, f"v{run.version}", _best(final))
    ws.results.mkdir(parents=True, exist_ok=True)

    def swap_in(staging: Path, log: str) -> None:
        atomic_write_text(staging / LOG_FILE, log)
        _swap_in(staging, final)

    with _pull_errors(ledger, name, kernel, run.version, final):
        summary, manifest, problems = fetch_verified(listing, run, entry.output_prefix(name), attempts=attempts,
                                                      sleep=sleep, staging_in=ws.results, into=swap_in)
    with ledger.update() as entries:
        latest = entries[name].last
        latest.pulled_at = now_iso()
        note_summary(latest, summary, manifest)
        run = latest
    detail = f"v{run.version}{of_pack}" + (f", {describe_outcome(run)}" if run.run_state != RunState.COMPLETE else "") + \
        (f" after {len(problems)} bad attempt(s): {problems[-1]}" if problems else "")
    return PullResult(name, PullAction.PULLED, detail, summary.get("best_test_acc"))


@contextlib.contextmanager
def _pull_errors(ledger: Ledger, name: str, kernel: str, version: int, final: Path) -> Iterator[None]:
    """Turn a fetch that never got a verified answer (noted in the ledger), or a full disk, into a PullError."""
    try:
        yield
    except Unverified as e:
        problems = e.args[0]
        with ledger.update() as entries:
            entries[name].last.failure = f"pull failed: {problems[-1]}"
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
                     observer: Observer = SILENT, sleep: Callable[[float], None] = time.sleep) -> list[PullResult]:
    """Pull each named experiment (see `pull_one`); one that cannot be pulled, or whose kernel Kaggle does
    not know, does not stop the others, and the first such error is raised at the end."""
    results, first_error = [], None
    listings: dict[tuple[str, int], Listing] = {}
    for name in names:
        try:
            result = pull_one(ws, api, name, force=force, sleep=sleep, listings=listings)
        except (PullError, KernelError) as e:
            first_error = first_error or e
            result = PullResult(name, PullAction.REFUSED, str(e))
        results.append(result)
        observer.pulled(result)
    if first_error is not None:
        more = sum(r.action == PullAction.REFUSED for r in results) - 1
        raise type(first_error)(f"{first_error}" + (f" (and {more} more)" if more else ""))
    return results
