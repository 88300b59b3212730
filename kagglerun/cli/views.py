"""Every rich view of the CLI: the experiments table, the status table, the report's terminal table, and the
observer that draws progress (events, a live status table, pull results, epoch bars).

Text that comes from Kaggle, from files or from arguments only ever reaches the terminal as `Text` (never
parsed as markup), with control characters removed (`plain`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..errors import ExperimentError
from ..progress import EpochProgress, Observer, PullResult, StatusRow
from ..report import Report
from ..report.pool import UNGROUPED
from ..states import KernelState, PullAction, RowState
from ..workspace import Workspace

# C0 and C1 control characters and escape sequences (colours, cursor moves), but not newline and tab
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)?|\x1b.|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def plain(text: Any) -> str:
    """`text` as something safe to print: escape sequences and control characters removed."""
    return _CONTROL.sub("", str(text))


def text(value: Any, style: str = "") -> Text:
    """A rich Text of `value`, never interpreted as markup."""
    return Text(plain(value), style=style)


# --- experiments --------------------------------------------------------------------------------------

def experiments_table(ws: Workspace) -> Group:
    """One table per report group, one row per experiment with its key settings; an invalid file shows its error."""
    rows: dict[str, list[tuple[str, ...]]] = {}
    invalid: list[Text] = []
    store = ws.store()
    for name in store.names():
        try:
            s = store.load(name)
        except ExperimentError as e:
            invalid.append(text(f"{name}: {e}", "red"))
            continue
        model = s.model.name + (f" x{s.model.width:g}" if s.model.width != 1 else "")
        rows.setdefault(s.report.group or "(no report group)", []).append((
            name, model + (f" ({s.engine})" if s.engine != "torch" else ""), s.data.dataset,
            f"{s.training.optimizer} {s.training.lr:.3g}", str(s.training.epochs), str(s.training.batch_size),
            "yes" if s.model.batchnorm else "no", s.model.dropout, "yes" if s.data.color_jitter else "no",
        ))
    tables = []
    for group, members in sorted(rows.items()):
        # One space between columns; on a narrow terminal (80 columns fit) a cell wraps at its spaces
        # ("c5l3 x0.25" over "(scratch)"), never inside a word or a name.
        table = Table(title=text(group, "bold"), title_justify="left", box=box.SIMPLE_HEAD, padding=0,
                      pad_edge=False, show_edge=False)
        for i, column in enumerate(("experiment", "model", "data", "optimizer", "epochs", "batch", "BN", "dropout",
                                    "jitter")):
            longest_word = max(len(word) for cell in [column, *(row[i] for row in members)] for word in cell.split())
            table.add_column(column, min_width=longest_word, no_wrap=column == "experiment", overflow="fold")
        for row in members:
            table.add_row(*(text(cell) for cell in row))
        tables.append(table)
    return Group(text(f"experiments in {ws.experiments}"), *(part for table in tables for part in (Text(""), table)),
                 *invalid)


# --- status -------------------------------------------------------------------------------------------

def _elapsed(seconds: float | None) -> str:
    if seconds is None:
        return ""
    whole = int(seconds)
    h, rest = divmod(whole, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


_STATE_STYLE: dict[str, str] = {KernelState.COMPLETE: "green", RowState.PULLED: "green", KernelState.RUNNING: "cyan",
                KernelState.QUEUED: "yellow", KernelState.ERROR: "red", RowState.GAVE_UP: "red",
                RowState.WAITING: "yellow", RowState.STOPPED: "yellow", RowState.UNKNOWN: "red",
                RowState.PUSHING: "yellow", KernelState.CANCEL_ACKNOWLEDGED: "red"}

WIDE_STATUS = 100  # columns from which the status table shows the kernel id


@dataclass
class StatusTable:
    """experiment, kernel, version, state, elapsed, failure reason, laid out when printed: on a terminal
    narrower than WIDE_STATUS columns the kernel id (the owner's slug of the experiment's name, or of its
    pack's) is left out, so that the failure reason keeps room to be read."""

    rows: list[StatusRow]
    title: str | None = None

    def table(self, width: int) -> Table:
        columns = [c for c in ("experiment", "kernel", "version", "state", "elapsed", "failure reason")
                   if c != "kernel" or width >= WIDE_STATUS]
        table = Table(title=text(self.title) if self.title else None, title_justify="left")
        for column in columns:
            # The kernel id and the reason fold; the short columns stay whole.
            table.add_column(column, no_wrap=column not in ("kernel", "failure reason"), overflow="fold")
        for r in self.rows:
            version = "" if r.version is None else f"v{r.version}"
            if r.attempt > 1:
                version += f" (try {r.attempt})"
            experiment = text(r.experiment)
            if r.pack:  # the pack's own line
                experiment.append("\n" + plain(f"in {r.pack}"), style="dim")
            cells = {"experiment": experiment, "kernel": text(r.kernel), "version": text(version),
                     "state": text(r.state, _STATE_STYLE.get(r.state, "")), "elapsed": text(_elapsed(r.elapsed)),
                     "failure reason": text(r.failure)}
            table.add_row(*(cells[c] for c in columns))
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.table(options.max_width)


def status_table(rows: list[StatusRow], title: str | None = None) -> StatusTable:
    return StatusTable(rows, title)


def failure_lines(rows: list[StatusRow]) -> list[Text]:
    """Under the table: each failed run's reason and the last lines of its log."""
    lines = []
    for r in rows:
        if not (r.log_tail or r.state == KernelState.ERROR):
            continue
        line = text(r.experiment, "red")
        line.append(": " + plain(r.failure or r.state))
        lines.append(line)
        lines += [text("    " + log_line) for log_line in r.log_tail]
    return lines


# --- report -------------------------------------------------------------------------------------------

# The terminal table's short headers: it must fit 80 columns, where the files have room for words.
_TERMINAL_HEADERS = {"epochs": "done", "best test acc (%)": "best %", "best epoch": "@epoch",
                     "final test acc (%)": "final %", "wall time": "time", "test acc at best val (%)": "val-chosen %"}


def report_table(report: Report) -> Table:
    """The report's main table for the terminal. To fit 80 columns, groups become section headings rather
    than a column, and a device shared by every run moves to the caption."""
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
            table.add_row(text(group or UNGROUPED, "bold"))
        table.add_row(*(text(row[c]) for c in shown), style=styles.get(row["state"]))
    notes = []
    if not len(frame):
        notes.append("no results yet: run `kagglerun pull --all` or `kagglerun run EXP` first")
    elif len(devices) == 1:
        notes.append(f"device: {devices.pop()}")
    notes += [f"not shown: {s.name}: {s.reason}" for s in report.skipped]
    table.caption = text("\n".join(notes)) if notes else None
    table.caption_justify = "left"
    return table


# --- progress -----------------------------------------------------------------------------------------

class ConsoleObserver(Observer):
    """Draws what the library reports: events as dim lines (warnings yellow), the status table live while
    `live` is open, pull results one line each, a local run's epochs as a progress bar."""

    def __init__(self, console: Console, title: str = ""):
        self.console, self.title = console, title
        self.live: Live | None = None
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> ConsoleObserver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def event(self, message: str) -> None:
        style = "yellow" if message.startswith("warning") else "dim"
        self.console.print(text(message, style))

    def rows(self, rows: list[StatusRow], title: str = "") -> None:
        table = status_table(rows, self.title or title)
        if self.live is None:
            self.live = Live(table, console=self.console, auto_refresh=False, transient=True)
            self.live.start()
        self.live.update(table, refresh=True)

    def pulled(self, result: PullResult) -> None:
        best = f", best test accuracy {result.best_test_acc:.2f} %" if result.best_test_acc is not None else ""
        style = {PullAction.PULLED: "green", PullAction.REFUSED: "red"}.get(PullAction(result.action), "dim")
        line = text(result.experiment, "bold")
        line.append(": ")
        line.append(plain(result.action), style=style)
        line.append(" " + plain(result.detail + best))
        self.console.print(line)

    def epochs(self, progress: EpochProgress) -> None:
        if self.progress is None:
            self.progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("epochs"), TimeElapsedColumn(), console=self.console, transient=False)
            self.progress.start()
        label = plain(progress.experiment)
        if progress.test_acc is not None:
            label += f" test acc {progress.test_acc:.2f} %"
        if progress.experiment not in self.tasks:
            self.tasks[progress.experiment] = self.progress.add_task(label, total=progress.total)
        self.progress.update(self.tasks[progress.experiment], completed=progress.done, description=label)
