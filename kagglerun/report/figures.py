"""The report's figures: one per run (loss and accuracy curves, best epoch marked), one overlay per group
(seeds as bands) and a confusion matrix per run that has one, drawn with matplotlib's Agg on reused figures,
in forked workers when they pay; the same as PDF for a LaTeX write-up (`draw_pdf`), and `compare`'s overlay
of any runs. Text from files (names, labels, groups, class names) is drawn literally (`literal`)."""

from __future__ import annotations

import dataclasses
import io
import multiprocessing
import os
import re
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .load import Result
from .pool import Column

# Below this many figures a process pool costs more than it saves, whatever `workers` asks.
_POOL_MIN_FIGURES = 24


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
    val_loss: np.ndarray | None = None  # where the run held out a validation split
    val_acc: np.ndarray | None = None


@dataclass(frozen=True)
class RunFigure:
    curves: _Curves
    title: str
    best: tuple[float | None, int | None]
    epochs_total: int | None


@dataclass(frozen=True)
class GroupFigure:
    title: str
    curves: list[_Curves]


@dataclass(frozen=True)
class ConfusionFigure:
    """A run's confusion matrix: rows the true class, columns the predicted one, counts."""

    title: str
    classes: list[str]
    matrix: list[list[int]]


@dataclass(frozen=True)
class CompareFigure:
    """`kagglerun compare`: any runs' curves overlaid, each run one colour."""

    title: str
    curves: list[_Curves]


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def literal(text: str) -> str:
    """`text` as matplotlib draws it literally: every `$` escaped, so mathtext never parses a name or a label
    (and never chokes on one like "cost $x^$"), and control characters removed (no font has glyphs for them)."""
    return _CONTROL.sub("", str(text)).replace("$", r"\$")


def _column(h: pd.DataFrame, name: str) -> np.ndarray | None:
    """A history column where the run has it with at least one number (val_* only exist with a split)."""
    if name not in h.columns or not h[name].notna().any():
        return None
    return h[name].to_numpy(dtype=float)


def run_curves(run: Result) -> _Curves:
    h = run.history
    return _Curves(run.name, h["epoch"].to_numpy(), h["train_loss"].to_numpy(), h["test_loss"].to_numpy(),
                   h["test_acc"].to_numpy(), val_loss=_column(h, "val_loss"), val_acc=_column(h, "val_acc"))


def entry_curves(entry: Column) -> _Curves:
    """Mean over seeds per epoch; the standard deviation where two or more seeds reached that epoch."""
    if len(entry.runs) == 1:
        return dataclasses.replace(run_curves(entry.runs[0]), label=entry.title)
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

    def png(self, job: RunFigure) -> bytes:
        from PIL import Image

        c = job.curves
        self.canvas.restore_region(self._frame(_run_limits(job)))
        self.train.set_data(c.epoch, c.train_loss)
        self.test.set_data(c.epoch, c.test_loss)
        self.acc.set_data(c.epoch, c.test_acc)
        acc, epoch = job.best
        self.best.set_data(*(([epoch], [acc]) if acc is not None and epoch is not None else ([], [])))
        self.title.set_text(literal(job.title))
        for ax, lines in ((self.ax_loss, (self.train, self.test)), (self.ax_acc, (self.acc, self.best))):
            for line in lines:
                ax.draw_artist(line)
        self.fig.draw_artist(self.title)
        buf = io.BytesIO()
        Image.frombuffer("RGBA", self.canvas.get_width_height(), self.canvas.buffer_rgba()).convert("RGB") \
            .save(buf, format="png", compress_level=1)  # level 1: a third of the time of the default, as small here
        return buf.getvalue()


def _run_limits(job: RunFigure) -> tuple:
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

    def png(self, job: GroupFigure, fmt: str = "png") -> bytes:
        fig = self.fig
        for artist in [*fig.legends, *self.ax_acc.lines, *self.ax_acc.collections, *self.ax_loss.lines,
                       *self.ax_loss.collections]:
            artist.remove()
        for i, c in enumerate(job.curves):
            color = f"C{i % 10}"
            for ax, values, spread in ((self.ax_acc, c.test_acc, c.test_acc_std),
                                       (self.ax_loss, c.test_loss, c.test_loss_std)):
                ax.plot(c.epoch, values, color=color, lw=1.2, label=literal(c.label))
                if spread is not None:
                    ax.fill_between(c.epoch, values - spread, values + spread, color=color, alpha=0.25, lw=0)
        for ax in (self.ax_acc, self.ax_loss):
            ax.relim()
            ax.autoscale_view()
        self.title.set_text(literal(job.title))
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
        if fmt == "png":
            fig.savefig(buf, format="png", pil_kwargs={"compress_level": 1})
        else:
            fig.savefig(buf, format=fmt)
        return buf.getvalue()


def new_figure(width: float, height: float, dpi: int = 80) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, fmt: str) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt)
    return buf.getvalue()


def confusion_image(job: ConfusionFigure, fmt: str = "png") -> bytes:
    """The matrix as shares of each true class (colour) with the counts written in, up to 20 classes."""
    matrix = np.asarray(job.matrix, dtype=float)
    n = len(job.classes)
    side = min(9.0, 2.2 + 0.42 * n)
    fig = new_figure(side + 0.8, side)
    ax = fig.subplots()
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    names = [literal(c) for c in job.classes]
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set(xlabel="predicted class", ylabel="true class")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if shares[i, j] > 0.5 else "black")
    ax.set_title(literal(job.title), fontsize=10)
    fig.tight_layout()
    return _save(fig, fmt)


def compare_image(job: CompareFigure, fmt: str = "png") -> bytes:
    """Loss (test solid, train dashed, validation dotted) and accuracy (test solid, validation dotted) of
    every run, one colour each, with one legend of runs under both."""
    fig = new_figure(11.0, 3.6 + 0.2 * -(-len(job.curves) // 4), dpi=100)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for i, c in enumerate(job.curves):
        color = f"C{i % 10}"
        ax_loss.plot(c.epoch, c.test_loss, color=color, lw=1.3, label=literal(c.label))
        ax_loss.plot(c.epoch, c.train_loss, color=color, lw=1.0, ls="--")
        ax_acc.plot(c.epoch, c.test_acc, color=color, lw=1.3)
        if c.val_loss is not None:
            ax_loss.plot(c.epoch, c.val_loss, color=color, lw=1.0, ls=":")
        if c.val_acc is not None:
            ax_acc.plot(c.epoch, c.val_acc, color=color, lw=1.0, ls=":")
    val = any(c.val_loss is not None or c.val_acc is not None for c in job.curves)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="test (solid), train (dashed)" + (", val (dotted)" if val else ""))
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="test (solid)" + (", val (dotted)" if val else ""))
    for ax in (ax_loss, ax_acc):
        ax.title.set_fontsize(9)
    fig.suptitle(literal(job.title), fontsize=10)
    fig.legend(*ax_loss.get_legend_handles_labels(), loc="lower center", ncol=min(4, len(job.curves)), fontsize=8,
               frameon=False)
    rows = -(-len(job.curves) // 4)
    fig.subplots_adjust(left=0.07, right=0.985, top=0.86, wspace=0.22, bottom=(0.55 + 0.22 * rows) / fig.get_figheight())
    return _save(fig, fmt)


def _run_vector(job: RunFigure, fmt: str) -> bytes:
    """A run's figure drawn plainly (the Agg plotter blits pixels, which a PDF cannot)."""
    c = job.curves
    fig = new_figure(6.4, 2.5)
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(c.epoch, c.train_loss, label="train loss", lw=1.2)
    ax_loss.plot(c.epoch, c.test_loss, label="test loss", lw=1.2)
    ax_acc.plot(c.epoch, c.test_acc, color="C2", lw=1.2)
    acc, epoch = job.best
    if acc is not None and epoch is not None:
        ax_acc.plot([epoch], [acc], "o", color="C3", ms=4)
    x, loss, accs = _run_limits(job)
    ax_loss.set(xlabel="epoch", ylabel="loss", xlim=x, ylim=loss)
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", xlim=x, ylim=accs)
    ax_loss.legend(loc="upper right", fontsize=8, frameon=False)
    fig.suptitle(literal(job.title), fontsize=10)
    fig.subplots_adjust(left=0.09, right=0.985, bottom=0.19, top=0.87, wspace=0.28)
    return _save(fig, fmt)


def draw_pdf(job: RunFigure | GroupFigure | ConfusionFigure) -> bytes:
    """One report figure as a PDF (vector), for a LaTeX write-up."""
    if isinstance(job, GroupFigure):
        return _GroupPlotter().png(job, fmt="pdf")
    if isinstance(job, ConfusionFigure):
        return confusion_image(job, fmt="pdf")
    return _run_vector(job, "pdf")


_plotters: dict[type, Any] = {}  # one plotter of each kind per process


def _draw(job: RunFigure | GroupFigure | ConfusionFigure) -> bytes:
    if isinstance(job, ConfusionFigure):
        return confusion_image(job)
    kind = _GroupPlotter if isinstance(job, GroupFigure) else _RunPlotter
    if kind not in _plotters:
        _plotters[kind] = kind()
    return _plotters[kind].png(job)


def draw_all(jobs: list, workers: int | None) -> list[bytes]:
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
    order = sorted(range(len(jobs)), key=lambda i: not isinstance(jobs[i], GroupFigure))
    # The first figure loads fonts and builds a plotter; drawn here, the workers inherit both.
    pngs = {order[0]: _draw(jobs[order[0]])}
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        chunk = max(1, min(8, len(jobs) // (4 * workers)))
        pngs.update(zip(order[1:], pool.map(_draw, [jobs[i] for i in order[1:]], chunksize=chunk), strict=True))
    return [pngs[i] for i in range(len(jobs))]


