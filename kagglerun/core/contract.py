"""The output contract: the files every run leaves in its output folder, written atomically after each epoch.

    settings.json          the resolved settings (written by the notebook before the core runs)
    history.csv            one row per finished epoch: HISTORY_COLUMNS (+ VAL_COLUMNS with a validation split);
                           lr is the learning rate of the epoch's first step
    summary.json           SUMMARY_KEYS: state, best and final accuracy, params, time, device, versions, hashes
    checkpoint_last.pt     everything needed to resume (model, optimizer, schedule, scaler, RNG, history)
    checkpoint_best.pt     the weights of the best epoch: on validation accuracy with data.val_split
                           (summary "selection" = "val"), else on test accuracy ("test")
    curves.png             train and test loss, test accuracy (%) against epoch
    confusion.json         the best checkpoint on the test set: {"epoch", "split", "classes", "matrix" (rows: true
                           class, columns: predicted; counts), "per_class_acc" (%), "accuracy" (%)}, at the run's end
    manifest.json          {file name: {"size": bytes, "sha256": hex}} of the files above, written last

Accuracies are percentages, losses per-sample means. `state` is one of RUN_STATES.
Part of the training core: standard library and torch only (matplotlib lazily).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SETTINGS_FILE = "settings.json"
HISTORY_FILE = "history.csv"
SUMMARY_FILE = "summary.json"
CHECKPOINT_LAST = "checkpoint_last.pt"
CHECKPOINT_BEST = "checkpoint_best.pt"
CURVES_FILE = "curves.png"
CONFUSION_FILE = "confusion.json"
MANIFEST_FILE = "manifest.json"
LOG_FILE = "log.txt"  # not the core's: the session log that `pull` leaves beside the outputs
# The words in the error of a session that push planned as a resume and that found no checkpoint where push
# said: `push` looks for them in a version's failure to stop resuming from that source
RESUME_MISSING = "push planned a resume from"
PULLED_MARK = ".pulled.json"  # not the core's: `pull` marks a folder it filled (kernel, version); a local run removes it
CONTRACT_FILES = (SETTINGS_FILE, HISTORY_FILE, SUMMARY_FILE, CHECKPOINT_LAST, CHECKPOINT_BEST, CURVES_FILE,
                  CONFUSION_FILE)

HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds")
VAL_COLUMNS = ("val_loss", "val_acc")  # history columns of a run with a validation split (data.val_split)
# Top-level settings that only present a run (its caption, group, order, description), not how it trains.
PRESENTATION_KEYS = ("description", "report")
RUN_STATES = ("running", "complete", "stopped", "failed")
# best_epoch: the epoch chosen on `selection` ("val" accuracy with a split, else "test");
# test_acc_at_best: its test accuracy (the result); best_test_acc: the best test accuracy of any epoch;
# stopped_early / stop_reason: training.early_stopping_patience ended a complete run before its last epoch.
SUMMARY_KEYS = (
    "experiment", "state", "engine", "epochs_done", "epochs_total", "best_test_acc", "best_epoch",
    "final_test_acc", "final_test_loss", "params", "total_seconds", "device", "precision", "versions",
    "settings_hash", "core_hash", "started_at", "updated_at", "resumed_from_epoch", "error",
    "selection", "best_val_acc", "test_acc_at_best", "stopped_early", "stop_reason", "num_classes", "class_names",
    "data_sizes",
)
_writes = True  # False in the other processes of a data-parallel run: only rank 0 writes (distributed.py)


def silence_writes() -> None:
    """From now on this process writes no file of the contract (it is not rank 0 of a data-parallel run)."""
    global _writes
    _writes = False


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def now_iso() -> str:
    """The current UTC time as summary.json and the ledger record it."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_summary(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A run's summary.json, or None when it is missing or unreadable (a run still starting, a foreign folder)."""
    try:
        summary = json.loads((Path(folder) / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def settings_hash(settings: dict[str, Any]) -> str:
    """Stable hash of what resolved settings train: all but PRESENTATION_KEYS, so that relabelling or
    regrouping an experiment does not make it "changed". Identical in kagglerun and in the notebook."""
    return full_settings_hash({k: v for k, v in settings.items() if k not in PRESENTATION_KEYS})


def full_settings_hash(settings: dict[str, Any]) -> str:
    """Stable hash of resolved settings, presentation included: what ledgers recorded before presentation was
    left out of `settings_hash` (see runs/plan.py, which still accepts it)."""
    return hashlib.sha256(canonical_json(settings).encode()).hexdigest()[:16]


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it: readers never see half a file."""
    if not _writes:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; results are ordinary files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_history(path: str | os.PathLike[str], rows: list[dict[str, Any]]) -> None:
    columns = HISTORY_COLUMNS + (VAL_COLUMNS if rows and "val_acc" in rows[0] else ())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row[k]) for k in columns})
    atomic_write_text(path, buf.getvalue())


def read_history(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    with open(path, newline="") as f:
        rows = []
        for row in csv.DictReader(f):
            columns = [k for k in HISTORY_COLUMNS + VAL_COLUMNS if k in row]
            rows.append({k: (int(row[k]) if k == "epoch" else float(row[k])) for k in columns})
        return rows


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    import torch

    if not _writes:
        return
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint`; a damaged file is a clear error naming it."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise RuntimeError(f"{path}: corrupt checkpoint ({type(e).__name__}: {e}); delete it to start over") from None
    if not isinstance(state, dict) or "epoch" not in state:
        raise RuntimeError(f"{path}: not a kagglerun checkpoint (no 'epoch'); delete it to start over")
    return state


def write_manifest(out_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Record size and SHA-256 of every contract file present, so a download can be verified."""
    out = Path(out_dir)
    manifest: dict[str, dict[str, Any]] = {}
    if not _writes:
        return manifest
    for name in CONTRACT_FILES:
        p = out / name
        if p.is_file():
            manifest[name] = {"size": p.stat().st_size, "sha256": file_sha256(p)}
    atomic_write_json(out / MANIFEST_FILE, manifest)
    return manifest


def plot_curves(path: str | os.PathLike[str], rows: list[dict[str, Any]], title: str) -> None:
    """Train and test loss and test accuracy against epoch, as one PNG."""
    if not _writes:
        return
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(10, 3.6), dpi=100)
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], label="train loss")
    ax_loss.plot(epochs, [r["test_loss"] for r in rows], label="test loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss (per-sample mean)")
    ax_loss.legend()
    ax_acc.plot(epochs, [r["train_acc"] for r in rows], label="train acc", alpha=0.6)
    ax_acc.plot(epochs, [r["test_acc"] for r in rows], label="test acc")
    if rows and "val_acc" in rows[0]:
        ax_loss.plot(epochs, [r["val_loss"] for r in rows], label="val loss")
        ax_loss.legend()
        ax_acc.plot(epochs, [r["val_acc"] for r in rows], label="val acc")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.legend()
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
