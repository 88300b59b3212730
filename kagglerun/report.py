"""The comparison report: reads results/, pools seeds, writes report.md, report.html, summary.csv and figures.

Input is the output contract (kagglerun/core/contract.py) of each `results/<EXP>/` folder. Each report
group (settings `report.group`) becomes one table in the seed study's layout (settings as rows, experiments
as columns, ending with BestTestAcc and BestEpoch) and one overlay of its test curves. Runs whose resolved
settings differ only in `training.seed` (and name, description, kaggle.*, report.label/order) are pooled
into one column: mean ± standard deviation in the tables, a shaded band on the curves.
"""

from __future__ import annotations

import base64
import dataclasses
import fnmatch
import io
import json
import multiprocessing
import os
import re
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from .core.contract import HISTORY_COLUMNS, HISTORY_FILE, SETTINGS_FILE, SUMMARY_FILE
from .errors import WorkspaceError

REPORT_DIR = "report"
FIGURES_DIR = "figures"
LOG_FILE = "log.txt"  # the Kaggle (or local) log that `pull` leaves beside the outputs
LOG_TAIL_LINES = 30
PACKAGE_TEMPLATES = Path(__file__).parent / "templates"
UNGROUPED = "Other experiments"

# Keys that name or place a run rather than describe how it trained.
IDENTITY_KEYS = frozenset(
    {"name", "description", "kaggle.slug", "kaggle.title", "kaggle.owner", "report.label", "report.order",
     "report.also"}
)
# Keys a run may differ in and still be "the same experiment with another seed".
SEED_POOL_IGNORES = IDENTITY_KEYS | {"training.seed"}
# Row titles of the seed study's tables, in its row order; any other setting follows as its dotted key.
ROW_TITLES = {
    "model.name": "Model",
    "data.dataset": "Dataset",
    "training.optimizer": "Optimizer",
    "training.lr": "LR",
    "data.color_jitter": "ExtraDataAug",
    "model.dropout": "Dropout",
    "model.batchnorm": "BatchNorm",
    "training.seed": "Seed",
    "training.epochs": "MaxEpoch",
}
# Shown in every group table even when equal across the group: what the model is and how long it trained.
PINNED_FIRST, PINNED_LAST = "model.name", "training.epochs"
# Lines of a log that look like they carry a credential are masked before they reach the report.
_SECRET_RE = re.compile(
    r"(?i)(\w*(?:key|token|secret|password|passwd|authorization)\w*)[\"']?\s*[:=]\s*(?:bearer\s+)?\S+")
# Cells right-aligned in a table: numbers, with a spread, a unit or a progress ("41/150"), or a dash.
_NUMERIC_CELL = re.compile(r"–|\d[\d.]*( ± [\d.]+)?( (M|k|s|min|h))?|\d+/[\d?]+")
# Below this many figures a process pool costs more than it saves, whatever `workers` asks.
_POOL_MIN_FIGURES = 24


@dataclass(frozen=True)
class Run:
    """One experiment's results folder, read leniently: a run may be finished, going or dead."""

    name: str
    folder: Path
    settings: dict[str, Any]
    flat: dict[str, Any]  # settings flattened to dotted keys, lists as tuples
    summary: dict[str, Any]
    history: pd.DataFrame  # HISTORY_COLUMNS, one row per epoch found, sorted, possibly with gaps
    log_tail: str | None

    @property
    def state(self) -> str:
        return str(self.summary.get("state") or "unknown")

    @property
    def group(self) -> str:
        return str(self.flat.get("report.group") or "")

    @property
    def title(self) -> str:
        return str(self.flat.get("report.label") or self.name)

    @property
    def order(self) -> int:
        order = self.flat.get("report.order")
        return order if isinstance(order, int) else 0

    @property
    def seed(self) -> Any:
        return self.flat.get("training.seed")

    @property
    def epochs_total(self) -> int | None:
        return _as_int(self.summary.get("epochs_total") or self.flat.get("training.epochs"))

    @property
    def epochs_done(self) -> int:
        done = _as_int(self.summary.get("epochs_done"))
        if done is None:
            done = int(self.history["epoch"].max()) if len(self.history) else 0
        return done

    @property
    def best(self) -> tuple[float | None, int | None]:
        """Best test accuracy and its epoch: the summary's, else found in the history."""
        acc, epoch = _as_float(self.summary.get("best_test_acc")), _as_int(self.summary.get("best_epoch"))
        if acc is None:
            scored = self.history.dropna(subset=["test_acc"])
            if len(scored):
                row = scored.loc[scored["test_acc"].idxmax()]
                acc, epoch = float(row["test_acc"]), int(row["epoch"])
        return acc, epoch

    @property
    def final_acc(self) -> float | None:
        acc = _as_float(self.summary.get("final_test_acc"))
        if acc is None:
            scored = self.history.dropna(subset=["test_acc"])
            acc = float(scored["test_acc"].iloc[-1]) if len(scored) else None
        return acc

    @property
    def seconds(self) -> float | None:
        seconds = _as_float(self.summary.get("total_seconds"))
        if seconds is None and len(self.history):
            seconds = float(self.history["seconds"].sum())
        return seconds


@dataclass
class Entry:
    """One column of a table: a single run, or runs that differ only in their seed."""

    runs: list[Run]
    title: str = ""  # the column title: report.label (else the name), unique within the group

    @property
    def seeds_note(self) -> str:
        return f" ({len(self.runs)} seeds)" if len(self.runs) > 1 else ""

    @property
    def name(self) -> str:
        return self.runs[0].name + self.seeds_note

    @property
    def group(self) -> str:
        return self.runs[0].group

    @property
    def order(self) -> int:
        return min(r.order for r in self.runs)

    @property
    def state(self) -> str:
        states = [r.state for r in self.runs]
        if len(set(states)) == 1:
            return states[0]
        return ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states)))

    @property
    def complete(self) -> bool:
        return all(r.state == "complete" for r in self.runs)

    def setting(self, key: str) -> str:
        """The entry's value of one dotted setting, as a table cell; several when its runs disagree."""
        values = list(dict.fromkeys(_cell(r.flat.get(key)) for r in self.runs))
        return ", ".join(values)


@dataclass(frozen=True)
class Skipped:
    """A results folder that holds no report data (no settings.json or summary.json, or unreadable)."""

    name: str
    reason: str
    log_tail: str | None = None


@dataclass(frozen=True)
class Report:
    """What `build_report` wrote, and the tables it wrote them from."""

    out_dir: Path
    markdown: Path
    html: Path
    summary_csv: Path
    figures: list[Path]
    table: pd.DataFrame  # the main table: one row per entry (seeds pooled), values formatted for display
    summary: pd.DataFrame  # summary.csv: one row per experiment, numbers as numbers
    groups: dict[str, pd.DataFrame] = field(default_factory=dict)  # group -> table in the seed's layout
    problems: list[str] = field(default_factory=list)  # experiments that failed or have not finished
    skipped: list[Skipped] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- reading


def load_runs(results_dir: Path, names: list[str] | None = None) -> tuple[list[Run], list[Skipped]]:
    """Read every `results_dir/<EXP>/` folder (or those matching `names`, which may be globs).

    A name with no folder is reported as skipped (a run not pulled yet should not hide the others);
    names that match nothing at all are an error, as they are most likely a typo.
    """
    results_dir = Path(results_dir)
    folders = sorted(p for p in results_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if results_dir.is_dir() else []
    runs, skipped = [], []
    if names:
        chosen = []
        for pattern in names:
            matches = [f for f in folders if fnmatch.fnmatchcase(f.name, pattern)]
            if not matches:
                skipped.append(Skipped(pattern, f"no results folder in {results_dir} (not run or not pulled yet)"))
            chosen.extend(m for m in matches if m not in chosen)
        if not chosen:
            raise WorkspaceError(f"no results for {', '.join(map(repr, names))} in {results_dir}")
        folders = sorted(chosen)
    for folder in folders:
        settings = _read_json(folder / SETTINGS_FILE)
        summary = _read_json(folder / SUMMARY_FILE)
        if isinstance(settings, dict) and isinstance(summary, dict):
            runs.append(Run(
                name=folder.name, folder=folder, settings=settings, flat=_flatten(settings), summary=summary,
                history=_read_history(folder / HISTORY_FILE), log_tail=_log_tail(folder / LOG_FILE),
            ))
        elif (folder / SETTINGS_FILE).exists() or (folder / SUMMARY_FILE).exists() or (folder / LOG_FILE).exists():
            # A run that died before its first epoch; folders of other kinds (the report itself) are ignored.
            missing = [n for n, d in ((SETTINGS_FILE, settings), (SUMMARY_FILE, summary)) if not isinstance(d, dict)]
            skipped.append(Skipped(folder.name, f"no readable {' or '.join(missing)}", _log_tail(folder / LOG_FILE)))
    return runs, skipped


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_history(path: Path) -> pd.DataFrame:
    """The history as numbers; unreadable rows are dropped, so a partial file still plots."""
    try:
        frame = pd.read_csv(path, on_bad_lines="skip")
    except (OSError, ValueError, pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
        frame = pd.DataFrame()
    # The checks below cost more than reading; a well-formed file (the usual case) skips the repairs.
    if list(frame.columns) != list(HISTORY_COLUMNS):
        frame = frame.reindex(columns=list(HISTORY_COLUMNS))
    if not all(pd.api.types.is_numeric_dtype(t) for t in frame.dtypes):
        frame = frame.apply(pd.to_numeric, errors="coerce")
    if frame["epoch"].dtype.kind != "i":
        frame = frame.dropna(subset=["epoch"]).astype({"epoch": int})
    if not (frame["epoch"].is_monotonic_increasing and frame["epoch"].is_unique):
        # A resumed run may write an epoch twice; the later row is the one its checkpoint continued from.
        frame = frame.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)
    return frame


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str | None:
    """The last lines of a log, read from its end (Kaggle logs can be large), with credentials masked."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    tail = text.splitlines()[-lines:]
    return "\n".join(_SECRET_RE.sub(lambda m: f"{m.group(1)}=***", line) for line in tail)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = tuple(value) if isinstance(value, list) else value
    return flat


def _as_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(number) else number


def _as_int(value: Any) -> int | None:
    number = _as_float(value)
    return None if number is None else int(number)


# ---------------------------------------------------------------------------------------------- pooling


def pool_seeds(runs: list[Run]) -> list[Entry]:
    """Runs that differ only in their seed as one entry each; entries in report order: groups by natural
    name (ungrouped last), then `report.order`, then name."""
    buckets: dict[tuple, list[Run]] = {}
    for run in runs:
        key = tuple(sorted((k, repr(v)) for k, v in run.flat.items()
                           if k not in SEED_POOL_IGNORES and not k.startswith("kaggle.")))
        buckets.setdefault(key, []).append(run)
    entries = []
    for members in buckets.values():
        members.sort(key=lambda r: (str(r.seed), r.name))
        # Equal settings *and* seed are repeats (say, a local and a Kaggle run), not a spread: keep them apart.
        if len({repr(r.seed) for r in members}) == len(members):
            entries.append(Entry(members))
        else:
            entries.extend(Entry([r]) for r in members)
    entries.sort(key=lambda e: (e.group == "", _natural(e.group), e.order, _natural(e.runs[0].name)))
    seen: set[tuple[str, str]] = set()
    for entry in entries:
        title = entry.runs[0].title + entry.seeds_note
        entry.title = title if (entry.group, title) not in seen else f"{title} [{entry.runs[0].name}]"
        seen.add((entry.group, entry.title))
    return entries


def _natural(text: str) -> list:
    """Sort key that puts "Table 2" before "Table 10"."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def varying_keys(runs: Iterable[Run], ignore: frozenset[str] = IDENTITY_KEYS) -> list[str]:
    """Dotted settings whose value is not the same in every run: the seed's rows in its order, then the rest."""
    runs = list(runs)
    keys = sorted({k for r in runs for k in r.flat}, key=lambda k: (k not in ROW_TITLES, list(ROW_TITLES).index(k)
                                                                   if k in ROW_TITLES else 0, k))
    return [k for k in keys if k not in ignore and len({repr(r.flat.get(k)) for r in runs}) > 1]


# ---------------------------------------------------------------------------------------------- tables


def _cell(value: Any) -> str:
    """A setting as the seed's tables show it: ✓ for true, blank for false or unset."""
    if value is True:
        return "✓"
    if value is False or value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ", ".join(_cell(v) for v in value)
    return str(value)


def _stat(values: list[float | None], digits: int) -> str:
    """One value as is; several as mean ± sample standard deviation; none as a dash."""
    numbers = [v for v in values if v is not None]
    if not numbers:
        return "–"
    if len(numbers) == 1:
        return f"{numbers[0]:.{digits}f}"
    return f"{np.mean(numbers):.{digits}f} ± {np.std(numbers, ddof=1):.{digits}f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _params(count: Any) -> str:
    count = _as_float(count)
    if count is None:
        return "–"
    return f"{count / 1e6:.2f} M" if count >= 1e5 else f"{count / 1e3:.1f} k"


def _progress(entry: Entry) -> str:
    parts = [f"{r.epochs_done}/{r.epochs_total or '?'}" for r in entry.runs]
    return ", ".join(dict.fromkeys(parts))


def group_table(entries: list[Entry]) -> pd.DataFrame:
    """The seed's layout: settings as rows, entries as columns, ending with BestTestAcc and BestEpoch."""
    runs = [r for e in entries for r in e.runs]
    pooled = any(len(e.runs) > 1 for e in entries)
    varying = [k for k in varying_keys(runs, IDENTITY_KEYS | {"report.group"})
               if k not in (PINNED_FIRST, PINNED_LAST) and not (pooled and k == "training.seed")]
    rows: dict[str, list[str]] = {}
    if any(e.runs[0].title != e.runs[0].name for e in entries):
        rows["Experiment"] = [", ".join(r.name for r in e.runs) for e in entries]
    for key in (PINNED_FIRST, *varying, PINNED_LAST):
        rows[ROW_TITLES.get(key, key)] = [e.setting(key) for e in entries]
    if pooled:
        rows["Seeds"] = [f"{len(e.runs)}: " + e.setting("training.seed") for e in entries]
    if not all(e.complete for e in entries):
        rows["State"] = [e.state + ("" if e.complete else f" ({_progress(e)})") for e in entries]
    rows["BestTestAcc"] = [_stat([r.best[0] for r in e.runs], 2) for e in entries]
    rows["BestEpoch"] = [_stat([r.best[1] for r in e.runs], 0) for e in entries]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=[e.title for e in entries])
    table.index.name = "Setting"
    return table


MAIN_COLUMNS = ("experiment", "group", "state", "epochs", "best test acc (%)", "best epoch",
                "final test acc (%)", "params", "wall time", "device")


def main_table(entries: list[Entry]) -> pd.DataFrame:
    """One row per entry, formatted for display: the table the terminal shows."""
    rows = [{
        "experiment": e.name,
        "group": e.group,
        "state": e.state,
        "epochs": _progress(e),
        "best test acc (%)": _stat([r.best[0] for r in e.runs], 2),
        "best epoch": _stat([r.best[1] for r in e.runs], 0),
        "final test acc (%)": _stat([r.final_acc for r in e.runs], 2),
        "params": _params(e.runs[0].summary.get("params")),
        "wall time": _duration(_mean([r.seconds for r in e.runs])),  # mean over seeds
        "device": ", ".join(dict.fromkeys(str(r.summary.get("device") or "–") for r in e.runs)),
    } for e in entries]
    return pd.DataFrame(rows, columns=list(MAIN_COLUMNS))


def _mean(values: list[float | None]) -> float | None:
    numbers = [v for v in values if v is not None]
    return float(np.mean(numbers)) if numbers else None


def summary_frame(runs: list[Run]) -> pd.DataFrame:
    """summary.csv: one row per experiment, the settings that vary across them, and its results."""
    varying = varying_keys(runs)
    rows = []
    for run in runs:
        best_acc, best_epoch = run.best
        row: dict[str, Any] = {"experiment": run.name}
        row.update({k: _csv_value(run.flat.get(k)) for k in varying})
        row.update({
            "best_test_acc": best_acc, "best_epoch": best_epoch, "final_test_acc": run.final_acc,
            "params": _as_int(run.summary.get("params")), "wall_seconds": run.seconds,
            "device": run.summary.get("device"), "state": run.state,
            "epochs_done": run.epochs_done, "epochs_total": run.epochs_total,
        })
        rows.append(row)
    columns = ["experiment", *varying, "best_test_acc", "best_epoch", "final_test_acc", "params",
               "wall_seconds", "device", "state", "epochs_done", "epochs_total"]
    return pd.DataFrame(rows, columns=columns).astype({"best_epoch": "Int64", "params": "Int64"})


def _csv_value(value: Any) -> Any:
    return " ".join(map(str, value)) if isinstance(value, tuple) else value


# ---------------------------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class _Curves:
    """What one line (or band) of a figure needs; plain arrays, so it pickles cheaply to a worker."""

    label: str
    epoch: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray
    test_acc: np.ndarray
    test_loss_std: np.ndarray | None = None
    test_acc_std: np.ndarray | None = None


@dataclass(frozen=True)
class _RunFigure:
    curves: _Curves
    title: str
    best: tuple[float | None, int | None]
    epochs_total: int | None


@dataclass(frozen=True)
class _GroupFigure:
    title: str
    curves: list[_Curves]


def _run_curves(run: Run) -> _Curves:
    h = run.history
    return _Curves(run.name, h["epoch"].to_numpy(), h["train_loss"].to_numpy(), h["test_loss"].to_numpy(),
                   h["test_acc"].to_numpy())


def _entry_curves(entry: Entry) -> _Curves:
    """Mean over seeds per epoch; the standard deviation where two or more seeds reached that epoch."""
    if len(entry.runs) == 1:
        return dataclasses.replace(_run_curves(entry.runs[0]), label=entry.title)
    stacked = pd.concat([r.history for r in entry.runs])
    by_epoch = stacked.groupby("epoch")
    mean, std = by_epoch.mean(), by_epoch.std(ddof=1)
    return _Curves(entry.title, mean.index.to_numpy(), mean["train_loss"].to_numpy(),
                   mean["test_loss"].to_numpy(), mean["test_acc"].to_numpy(),
                   std["test_loss"].to_numpy(), std["test_acc"].to_numpy())


class _RunPlotter:
    """Draws every run's figure on one reused Agg figure, blitting instead of redrawing.

    Axes, ticks and labels cost nine tenths of a figure, and most runs share them: their axis limits are
    rounded to a few steps (x: the planned epochs; loss: 0 to a round number; accuracy: whole tens to
    fives), so the frame is drawn once per distinct set of limits and each run only adds its lines.
    """

    def __init__(self) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.fig = Figure(figsize=(6.4, 2.5), dpi=64)
        self.canvas = FigureCanvasAgg(self.fig)
        self.ax_loss, self.ax_acc = self.fig.subplots(1, 2)
        (self.train,) = self.ax_loss.plot([], [], label="train loss", lw=1.2)
        (self.test,) = self.ax_loss.plot([], [], label="test loss", lw=1.2)
        (self.acc,) = self.ax_acc.plot([], [], color="C2", lw=1.2)
        (self.best,) = self.ax_acc.plot([], [], "o", color="C3", ms=4)
        self.ax_loss.set(xlabel="epoch", ylabel="loss")
        self.ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)")
        self.ax_loss.legend(loc="upper right", fontsize=8, frameon=False)
        self.title = self.fig.suptitle("", fontsize=10)
        self.fig.subplots_adjust(left=0.09, right=0.985, bottom=0.19, top=0.87, wspace=0.28)
        self.artists = (self.train, self.test, self.acc, self.best, self.title)
        self.frames: dict[tuple, Any] = {}  # axis limits -> the drawn frame, without lines or title

    def _frame(self, limits: tuple) -> Any:
        """Set the axes to `limits` (the lines' transforms depend on them) and return their drawn frame."""
        x, loss, acc = limits
        for ax, y in ((self.ax_loss, loss), (self.ax_acc, acc)):
            ax.set_xlim(*x)
            ax.set_ylim(*y)
        if limits not in self.frames:
            if len(self.frames) >= 64:  # bound the memory: 64 frames of 410 x 160 RGBA are 17 MB
                self.frames.clear()
            for artist in self.artists:
                artist.set_visible(False)
            self.canvas.draw()
            self.frames[limits] = self.canvas.copy_from_bbox(self.fig.bbox)
            for artist in self.artists:
                artist.set_visible(True)
        return self.frames[limits]

    def png(self, job: _RunFigure) -> bytes:
        from PIL import Image

        c = job.curves
        self.canvas.restore_region(self._frame(_run_limits(job)))
        self.train.set_data(c.epoch, c.train_loss)
        self.test.set_data(c.epoch, c.test_loss)
        self.acc.set_data(c.epoch, c.test_acc)
        acc, epoch = job.best
        self.best.set_data(*(([epoch], [acc]) if acc is not None and epoch is not None else ([], [])))
        self.title.set_text(job.title)
        for ax, lines in ((self.ax_loss, (self.train, self.test)), (self.ax_acc, (self.acc, self.best))):
            for line in lines:
                ax.draw_artist(line)
        self.fig.draw_artist(self.title)
        buf = io.BytesIO()
        Image.frombuffer("RGBA", self.canvas.get_width_height(), self.canvas.buffer_rgba()).convert("RGB") \
            .save(buf, format="png", compress_level=1)  # level 1: a third of the time of the default, as small here
        return buf.getvalue()


def _run_limits(job: _RunFigure) -> tuple:
    """Axis limits for one run, rounded so that many runs share them (see _RunPlotter)."""
    c = job.curves
    last = int(c.epoch.max()) if len(c.epoch) else 1
    x = (0, max(last, job.epochs_total or 0, 1))
    losses = np.concatenate([c.train_loss, c.test_loss])
    losses = losses[np.isfinite(losses)]
    loss = (0.0, _round_up(1.05 * losses.max()) if len(losses) and losses.max() > 0 else 1.0)
    accs = c.test_acc[np.isfinite(c.test_acc)]
    if len(accs):
        low, high = 10 * np.floor(accs.min() / 10), min(100.0, 5 * np.floor(accs.max() / 5) + 5)
        acc = (float(min(low, high - 10)), float(max(high, accs.max() + 0.5)))
    else:
        acc = (0.0, 100.0)
    return x, loss, acc


def _round_up(value: float) -> float:
    """The next of 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 times a power of ten at or above `value`."""
    scale = 10 ** np.floor(np.log10(value))
    return float(next(step * scale for step in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10) if step * scale >= value))


class _GroupPlotter:
    """Overlays a group's test accuracy and test loss, seeds' spread as a band of ± one std; the figure and
    its axes are made once per process and emptied between groups (making them costs a third of a figure)."""

    def __init__(self) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.fig = Figure(figsize=(8.0, 3.0), dpi=80)
        FigureCanvasAgg(self.fig)  # Agg, whatever backend the process chose: no display needed
        self.ax_acc, self.ax_loss = self.fig.subplots(1, 2)
        self.ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)")
        self.ax_loss.set(xlabel="epoch", ylabel="test loss")
        self.title = self.fig.suptitle("", fontsize=10)

    def png(self, job: _GroupFigure) -> bytes:
        fig = self.fig
        for artist in [*fig.legends, *self.ax_acc.lines, *self.ax_acc.collections, *self.ax_loss.lines,
                       *self.ax_loss.collections]:
            artist.remove()
        for i, c in enumerate(job.curves):
            color = f"C{i % 10}"
            for ax, values, spread in ((self.ax_acc, c.test_acc, c.test_acc_std),
                                       (self.ax_loss, c.test_loss, c.test_loss_std)):
                ax.plot(c.epoch, values, color=color, lw=1.2, label=c.label)
                if spread is not None:
                    ax.fill_between(c.epoch, values - spread, values + spread, color=color, alpha=0.25, lw=0)
        for ax in (self.ax_acc, self.ax_loss):
            ax.relim()
            ax.autoscale_view()
        self.title.set_text(job.title)
        # Beyond 30 lines a legend hides the plot; the group's table names the runs in the same order.
        legend_rows = -(-len(job.curves) // 5) if len(job.curves) <= 30 else 0
        height = 2.7 + 0.2 * legend_rows  # inches: plots and axis labels, then one line per legend row
        fig.set_figheight(height)
        if legend_rows:
            fig.legend(*self.ax_acc.get_legend_handles_labels(), loc="lower center", fontsize=8, frameon=False,
                       ncol=min(len(job.curves), 5), borderaxespad=0.2)
        fig.subplots_adjust(left=0.08, right=0.985, top=1 - 0.35 / height, wspace=0.25,
                            bottom=(0.5 + 0.2 * legend_rows) / height)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", pil_kwargs={"compress_level": 1})
        return buf.getvalue()


_plotters: dict[type, Any] = {}  # one plotter of each kind per process


def _draw(job: _RunFigure | _GroupFigure) -> bytes:
    kind = _GroupPlotter if isinstance(job, _GroupFigure) else _RunPlotter
    if kind not in _plotters:
        _plotters[kind] = kind()
    return _plotters[kind].png(job)


def _draw_all(jobs: list, workers: int | None) -> list[bytes]:
    """PNG bytes of every job, in order; with `workers` > 1 (None: one per CPU) in forked processes.

    On the shared 2-core benchmark machine a pool of two measured 0.8x to 1.2x the speed of drawing here
    (bench/bench_report.py, several invocations) for 0.3 s more CPU, so drawing here is the default.
    """
    if workers is None:
        workers = min(os.cpu_count() or 1, 8)
    # Fork shares the imported matplotlib with the workers; spawning fresh interpreters would cost more
    # than the drawing saves, so where fork is unavailable the figures are drawn in this process. Forking
    # a process that runs other threads (the demo's emulator, say) could copy a lock one of them holds into
    # the child, so then too.
    if (workers < 2 or len(jobs) < _POOL_MIN_FIGURES or threading.active_count() > 1 or sys.platform != "linux"
            or "fork" not in multiprocessing.get_all_start_methods()):
        return [_draw(job) for job in jobs]
    # Overlays cost ten runs' figures each: hand them out first, in small chunks, so no worker is left
    # with a heavy tail while the other idles.
    order = sorted(range(len(jobs)), key=lambda i: not isinstance(jobs[i], _GroupFigure))
    # The first figure loads fonts and builds a plotter; drawn here, the workers inherit both.
    pngs = {order[0]: _draw(jobs[order[0]])}
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        chunk = max(1, min(8, len(jobs) // (4 * workers)))
        pngs.update(zip(order[1:], pool.map(_draw, [jobs[i] for i in order[1:]], chunksize=chunk)))
    return [pngs[i] for i in range(len(jobs))]


# ---------------------------------------------------------------------------------------------- writing


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _write(path: Path, data: bytes | str) -> None:
    """Write beside `path` and rename over it, so a browser never reads half a report. No fsync: a report
    is rebuilt in a second, and 200 fsyncs would cost more than the whole build."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)


def _file_names(names: list[str]) -> list[str]:
    """Names safe in a file name and a URL, still unique (experiment names already are; folder names may not)."""
    safe, seen = [], set()
    for name in names:
        candidate = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        while candidate in seen:
            candidate += "_"
        seen.add(candidate)
        safe.append(candidate)
    return safe


def _table_view(frame: pd.DataFrame, index: bool) -> dict[str, Any]:
    """A DataFrame as header and rows of strings, for the templates; rows of unfinished runs get a class."""
    if index:
        frame = frame.reset_index()
    states = frame["state"] if "state" in frame.columns else pd.Series("", index=frame.index)
    rows = [["" if pd.isna(v) else str(v) for v in row] for row in frame.itertuples(index=False)]
    return {"columns": [str(c) for c in frame.columns], "rows": rows,
            "numeric": [bool(rows) and all(_NUMERIC_CELL.fullmatch(row[i]) for row in rows)
                        for i in range(len(frame.columns))],
            "row_classes": [f"state-{s}" if s in ("running", "stopped", "failed") else "" for s in states]}


def _problem(run: Run, anchor: str) -> dict[str, Any]:
    reason = str(run.summary.get("error") or "")
    if not reason:
        reason = {"running": "still running", "stopped": "stopped before its last epoch (time budget or interrupt)",
                  "failed": "failed without an error message"}.get(run.state, f"state {run.state!r}")
    return {"name": run.name, "anchor": anchor, "state": run.state, "reason": reason,
            "progress": f"epoch {run.epochs_done} of {run.epochs_total or '?'}",
            "updated": str(run.summary.get("updated_at") or ""), "log_tail": run.log_tail}


def _environment(templates: Path | None):
    from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape

    loaders = [FileSystemLoader(str(templates))] if templates else []
    env = Environment(
        loader=ChoiceLoader([*loaders, FileSystemLoader(str(PACKAGE_TEMPLATES))]),
        autoescape=select_autoescape(["html.j2"], default_for_string=False),
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )
    env.filters["md"] = lambda text: str(text).replace("|", "\\|").replace("\n", " ")
    env.filters["fence"] = lambda text: "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
    return env


def build_report(results_dir: Path, out_dir: Path | None = None, names: list[str] | None = None, *,
                 templates: Path | None = None, workers: int | None = 1) -> Report:
    """Build the comparison report of the runs in `results_dir` (default output: `results_dir/report`).

    `names` limits it to those experiments (names or globs); `templates` is a folder whose
    report.md.j2 / report.html.j2 override the package's; `workers` is how many processes draw the
    figures (default 1, this one; None: one per CPU, used when there are enough figures to pay for them).
    """
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else results_dir / REPORT_DIR
    runs, skipped = load_runs(results_dir, names)
    entries = pool_seeds(runs)
    groups: dict[str, list[Entry]] = {}
    for entry in entries:
        groups.setdefault(entry.group or UNGROUPED, []).append(entry)
    for entry in entries:  # report.also: shown in further groups' tables, after their own members
        for extra in entry.runs[0].flat.get("report.also") or ():
            groups.setdefault(str(extra), []).append(entry)

    # Figures: one per run (in entry order, so pooled seeds sit together), one overlay per group.
    ordered_runs = [r for e in entries for r in e.runs]
    jobs: list = []
    for run in ordered_runs:
        acc, epoch = run.best
        best = f"best {acc:.2f} % @ {epoch}" if acc is not None else "no epoch yet"
        note = "" if run.state == "complete" else f" ({run.state}, {run.epochs_done}/{run.epochs_total or '?'})"
        jobs.append(_RunFigure(_run_curves(run), f"{run.name}: {best}{note}", (acc, epoch), run.epochs_total))
    for name, members in groups.items():
        jobs.append(_GroupFigure(f"{name}: test accuracy and test loss", [_entry_curves(e) for e in members]))
    pngs = _draw_all(jobs, workers)

    figures_dir = out_dir / FIGURES_DIR
    figures_dir.mkdir(parents=True, exist_ok=True)
    safe_names = _file_names([r.name for r in ordered_runs])
    files = [f"exp-{name}.png" for name in safe_names]
    files += [f"group-{i + 1:02d}-{_slug(name)}.png" for i, name in enumerate(groups)]
    for stale in figures_dir.glob("*.png"):  # figures of runs no longer in the report
        if stale.name not in files:
            stale.unlink()
    figures = []
    for file, png in zip(files, pngs):
        _write(figures_dir / file, png)
        figures.append(figures_dir / file)

    def figure(i: int) -> dict[str, str]:
        return {"path": f"{FIGURES_DIR}/{files[i]}",
                "data_uri": "data:image/png;base64," + base64.b64encode(pngs[i]).decode("ascii")}

    tables = {name: group_table(members) for name, members in groups.items()}
    table = main_table(entries)
    summary = summary_frame(runs)
    problem_runs = [r for r in ordered_runs if r.state != "complete"]
    context = {
        "title": "kagglerun report",
        "built_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "results_dir": str(results_dir),
        "n_runs": len(runs),
        "n_entries": len(entries),
        "main": _table_view(table, index=False),
        "groups": [{"name": name, "anchor": f"group-{i + 1}", "table": _table_view(tables[name], index=True),
                    "pooled": any(len(e.runs) > 1 for e in groups[name]), "figure": figure(len(ordered_runs) + i)}
                   for i, name in enumerate(groups)],
        "problems": [_problem(r, "run-" + safe_names[ordered_runs.index(r)]) for r in problem_runs],
        "skipped": [vars(s) for s in skipped],
        "runs": [{"name": r.name, "anchor": "run-" + safe_names[i], "state": r.state, "figure": figure(i)}
                 for i, r in enumerate(ordered_runs)],
    }
    env = _environment(templates)
    markdown, html = out_dir / "report.md", out_dir / "report.html"
    _write(markdown, env.get_template("report.md.j2").render(context))
    _write(html, env.get_template("report.html.j2").render(context))
    summary_csv = out_dir / "summary.csv"
    _write(summary_csv, summary.to_csv(index=False))
    return Report(out_dir=out_dir, markdown=markdown, html=html, summary_csv=summary_csv, figures=figures,
                  table=table, summary=summary, groups=tables, problems=[r.name for r in problem_runs],
                  skipped=skipped)


# The terminal table's short headers: it must fit 80 columns, where the files have room for words.
_TERMINAL_HEADERS = {"epochs": "done", "best test acc (%)": "best %", "best epoch": "@epoch",
                     "final test acc (%)": "final %", "wall time": "time"}


def terminal_table(report: Report):
    """The main table as a rich Table, for the terminal. To fit 80 columns, groups become section
    headings rather than a column, and a device shared by every run moves to the caption."""
    from rich import box
    from rich.table import Table

    frame = report.table
    runs = len(report.summary)
    devices = set(frame["device"])
    shown = [c for c in frame.columns if c != "group" and not (c == "device" and len(devices) == 1)]
    table = Table(title=f"{runs} experiment{'' if runs == 1 else 's'}, {len(frame)} compared",
                  title_justify="left", box=box.SIMPLE_HEAD, padding=0, pad_edge=False, show_edge=False)
    for column in shown:
        numeric = column not in ("experiment", "state", "device")
        # the device wraps at its spaces ("cpu" over "(numpy)"), never inside a word
        longest = max((len(w) for v in frame[column] for w in str(v).split()), default=0) if column == "device" else None
        table.add_column(_TERMINAL_HEADERS.get(column, column), justify="right" if numeric else "left",
                         no_wrap=column != "device", overflow="fold", min_width=longest)
    styles = {"running": "yellow", "stopped": "yellow", "failed": "red"}
    group = None
    for row in frame.to_dict("records"):
        if row["group"] != group:
            if group is not None:
                table.add_section()
            group = row["group"]
            table.add_row(f"[bold]{group or UNGROUPED}[/]")
        table.add_row(*(str(row[c]) for c in shown), style=styles.get(row["state"]))
    notes = []
    if not len(frame):
        notes.append("no results yet: run `kagglerun pull --all` or `kagglerun run EXP` first")
    elif len(devices) == 1:
        notes.append(f"device: {devices.pop()}")
    notes += [f"not shown: {s.name}: {s.reason}" for s in report.skipped]
    table.caption = "\n".join(notes) or None
    table.caption_justify = "left"
    return table
