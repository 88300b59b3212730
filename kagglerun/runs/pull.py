"""Pull finished runs' outputs into results/EXP/: verified, never stale, the run's files swapped in whole.

Each file named in the run's manifest.json is downloaded into a temporary folder beside results/EXP and
checked for size and SHA-256; summary.json must carry the settings hash the ledger recorded for that
version and must have been written after that version was pushed (else it is a previous version's output,
which Kaggle may serve as the latest). Only then do its files replace the run's files in results/EXP, so good
results are never overwritten by an error page, a partial file or stale output; anything else the user keeps
there stays. A run there that was not pulled (a local run: no .pulled.json) is first copied to
results/.previous/. The session log becomes log.txt.

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

from ..core.contract import (
    CONTRACT_FILES,
    LOG_FILE,
    MANIFEST_FILE,
    PULLED_MARK,
    SUMMARY_FILE,
    atomic_write_json,
    atomic_write_text,
    file_sha256,
    now_iso,
    read_summary,
)
from ..errors import KernelError, PullError, WorkspaceError
from ..kaggle import KaggleKernels
from ..notebook.payload import PAYLOAD_PACKAGE
from ..progress import SILENT, Observer, PullResult
from ..states import KernelState, PullAction, RunState
from ..workspace import Workspace, real_folder
from .ledger import Ledger, Record, Version
from .outcome import Listing, Unverified, describe_outcome, fetch_verified, note_summary, read_outcome, stale_reason
from .status import refresh_entry

RUN_FILE = "run.json"  # core/train.py's: the notebook's settings cell writes it (not imported: that loads torch)
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


def _owned(folder: Path, name: str) -> set[str]:
    """The names in results/NAME that belong to a run (the output contract, what its manifest lists, and
    what pull or a local run add beside them); anything else there is the user's and stays."""
    owned = {*CONTRACT_FILES, MANIFEST_FILE, LOG_FILE, PULLED_MARK, RUN_FILE, PAYLOAD_PACKAGE, f"{name}.ipynb"}
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        if isinstance(manifest, dict):
            owned |= {str(n).split("/")[0] for n in manifest}
    except (OSError, ValueError):
        pass
    return owned


def _swap_in(staging: Path, final: Path) -> None:
    """Replace the run's files in `final` by `staging`'s with renames on one file system: the new folder
    goes in whole, then the user's own files (not the run's, see `_owned`) are moved over from the old one,
    which goes only at the end (and stays, hidden beside it, if one of them could not be moved)."""
    old = None
    real_folder(final)
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, old / final.name)
    try:
        os.replace(staging, final)
    except OSError:
        if old is not None:
            os.replace(old / final.name, final)
        raise
    if old is None:
        return
    previous, left = old / final.name, False
    ours = _owned(previous, final.name)
    for entry in sorted(previous.iterdir()):
        if entry.name in ours or (final / entry.name).exists():
            continue
        try:
            os.replace(entry, final / entry.name)
        except OSError:
            left = True
    if not left:
        shutil.rmtree(old, ignore_errors=True)


def _holds_local_run(folder: Path) -> bool:
    """results/EXP holds a run that pull did not put there (a local run, or one pulled before pulls were marked)."""
    return not folder.is_symlink() and (folder / SUMMARY_FILE).is_file() and not (folder / PULLED_MARK).exists()


def _finished_run(ledger: Ledger, api: KaggleKernels, name: str, entry: Record) -> tuple[Record, Version] | PullResult:
    """The experiment's last version, refreshed from Kaggle when it had not finished; a skip when it still has not."""
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
    return entry, run


def pull_one(ws: Workspace, api: KaggleKernels, name: str, *, force: bool = False, attempts: int = ATTEMPTS,
             sleep: Callable[[float], None] = time.sleep,
             listings: dict[tuple[str, int], Listing] | None = None) -> PullResult:
    """Pull the latest version of one experiment if it has finished; see the module docstring.

    `listings` keeps output listings between calls, so a pack's members share one."""
    ledger = Ledger(ws.results)
    entry = ledger.entry(name)
    if entry is None or entry.latest is None:
        return PullResult(name, PullAction.SKIPPED, "never pushed (not in the ledger)")
    settled = _finished_run(ledger, api, name, entry)
    if isinstance(settled, PullResult):
        return settled
    entry, run = settled
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
    try:
        real_folder(ws.results).mkdir(parents=True, exist_ok=True)
        real_folder(final)
    except WorkspaceError as e:  # this experiment's problem: pull --all goes on with the others
        raise PullError(f"{name}: {e}; nothing was pulled") from None

    moved: list[Path] = []

    def swap_in(staging: Path, log: str) -> None:
        atomic_write_text(staging / LOG_FILE, log)
        atomic_write_json(staging / PULLED_MARK, {"kernel": kernel, "version": run.version, "pulled_at": now_iso()})
        if _holds_local_run(final):  # not from Kaggle: nothing else has a copy of it
            moved.append(ws.keep_copy(name))
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
        (f" after {len(problems)} bad attempt(s): {problems[-1]}" if problems else "") + \
        (f"; the local run that was there is kept in {moved[0]}" if moved else "")
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
    best = (read_summary(folder) or {}).get("best_test_acc")
    return best if isinstance(best, int | float) and not isinstance(best, bool) else None


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
