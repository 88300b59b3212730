"""The report of a sweep and of a search.

A sweep is the runs named `<file>.<…>` (experiments.sweep) of one file: its swept keys are the settings in
which they differ; `training.seed` pools (mean ± std over seeds, their number), the other keys make the
rows. The best row (highest mean) is marked. Figures: the metric against the swept key (a line with error
bars), a heat map for two keys, one panel per key for more; the curves of every point overlaid, a band
over its seeds. The metric is `best_val_acc` where the run had a validation split, else `best_test_acc`.

A search (kagglerun.search) leaves results/search/<EXP>/search.json: its trials, their parameters, rung
and value; its section is a table of the trials, the best marked, and the metric over trials.
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .load import Result, as_float
from .pool import IDENTITY_KEYS, cell_text

SEED_KEY = "training.seed"
SEARCH_DIR = "search"
SEARCH_FILE = "search.json"
BEST_MARK = "◀ best"


@dataclass
class Figure:
    file: str
    png: bytes
    caption: str


@dataclass
class SweepSection:
    """One sweep: its table (a row per point) and figures."""

    name: str
    metric: str
    keys: list[str]
    table: pd.DataFrame
    best: str = ""
    figures: list[Figure] = field(default_factory=list)


@dataclass
class SearchSection:
    name: str
    metric: str
    table: pd.DataFrame
    best: str = ""
    figures: list[Figure] = field(default_factory=list)


@dataclass
class _Point:
    values: tuple
    runs: list[Result]
    mean: float
    std: float
    n: int


def run_metric(run: Result) -> tuple[float | None, str]:
    """(value, label): the best validation accuracy when the run had a split, else the best test accuracy."""
    val = as_float(run.summary.get("best_val_acc"))
    if val is not None:
        return val, "best val acc"
    return run.best[0], "best test acc"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _swept_keys(runs: list[Result]) -> list[str]:
    keys = sorted({k for r in runs for k in r.flat})
    out = []
    for key in keys:
        if key in IDENTITY_KEYS or key.startswith("kaggle.") or key == "name":
            continue
        if len({repr(r.flat.get(key)) for r in runs}) > 1:
            out.append(key)
    return out


def _sortable(value: Any) -> tuple:
    return (0, value, "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0, repr(value))


def _fmt(mean: float, std: float) -> str:
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def sweep_sections(runs: list[Result], exclude: set[str] = frozenset()) -> list[SweepSection]:  # type: ignore[assignment]
    """A section per sweep among `runs` (two or more runs of one file, named `<file>.<…>`)."""
    by_file: dict[str, list[Result]] = {}
    for run in runs:
        stem, dot, _ = run.name.partition(".")
        if dot and stem not in exclude:
            by_file.setdefault(stem, []).append(run)
    sections = []
    for stem, members in sorted(by_file.items()):
        if len(members) < 2:
            continue
        swept = _swept_keys(members)
        keys = [k for k in swept if k != SEED_KEY]
        metric = run_metric(members[0])[1]
        points: dict[tuple, list[Result]] = {}
        for run in members:
            points.setdefault(tuple(run.flat.get(k) for k in keys), []).append(run)
        rows: list[_Point] = []
        for values, group in sorted(points.items(), key=lambda kv: [_sortable(v) for v in kv[0]]):
            scores = [v for v in (run_metric(r)[0] for r in group) if v is not None]
            mean = float(np.mean(scores)) if scores else math.nan
            std = float(np.std(scores, ddof=1)) if len(scores) > 1 else math.nan
            rows.append(_Point(values, group, mean, std, len(scores)))
        scored = [r for r in rows if not math.isnan(r.mean)]
        best = max(scored, key=lambda r: r.mean) if scored else None
        table = pd.DataFrame([
            {**{k: cell_text(v) for k, v in zip(keys, r.values, strict=True)},
             f"{metric} (mean ± std)": _fmt(r.mean, r.std) if r.n else "–",
             "seeds": str(r.n),
             "runs": ", ".join(run.name for run in r.runs),
             "best": BEST_MARK if r is best else ""} for r in rows])
        section = SweepSection(stem, metric, keys, table,
                               ", ".join(f"{k} = {cell_text(v)}" for k, v in zip(keys, best.values, strict=True))
                               if best else "")
        section.figures = _sweep_figures(stem, keys, rows, metric)
        sections.append(section)
    return sections


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _new_figure(width: float = 6.0, height: float = 4.0, panels: int = 1) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width * panels, height))
    axes = [fig.add_subplot(1, panels, i + 1) for i in range(panels)]
    return fig, axes


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _errorbar(ax: Any, key: str, xs: list[Any], means: list[float], stds: list[float], metric: str) -> None:
    if _numeric(xs):
        x = np.asarray(xs, dtype=float)
        if np.all(x > 0) and x.max() / x.min() >= 10:
            ax.set_xscale("log")
    else:
        x = np.arange(len(xs))
        ax.set_xticks(x, [cell_text(v) for v in xs])
    ax.errorbar(x, means, yerr=np.nan_to_num(stds), marker="o", capsize=4)
    ax.set_xlabel(key)
    ax.set_ylabel(metric + " (%)")
    ax.grid(alpha=0.3)


def _marginal(rows: list[_Point], i: int) -> tuple[list[Any], list[float], list[float]]:
    """The metric against key `i`, over every row with that value (and all their seeds)."""
    values: dict[Any, list[float]] = {}
    for r in rows:
        scores = [s for s in (run_metric(run)[0] for run in r.runs) if s is not None]
        values.setdefault(r.values[i], []).extend(scores)
    xs = sorted(values, key=_sortable)
    means = [float(np.mean(values[x])) if values[x] else math.nan for x in xs]
    stds = [float(np.std(values[x], ddof=1)) if len(values[x]) > 1 else math.nan for x in xs]
    return xs, means, stds


def _sweep_figures(stem: str, keys: list[str], rows: list[_Point], metric: str) -> list[Figure]:
    figures = []
    if len(keys) == 1:
        fig, (ax,) = _new_figure()
        xs = [r.values[0] for r in rows]
        _errorbar(ax, keys[0], xs, [r.mean for r in rows], [r.std for r in rows], metric)
        ax.set_title(f"{stem}: {metric} against {keys[0]} (mean ± std over seeds)")
        figures.append(Figure(f"sweep-{_slug(stem)}-{_slug(keys[0])}.png", _png(fig),
                              f"{stem}: {metric} against {keys[0]}"))
    elif len(keys) == 2:
        xs = sorted({r.values[0] for r in rows}, key=_sortable)
        ys = sorted({r.values[1] for r in rows}, key=_sortable)
        grid = np.full((len(ys), len(xs)), np.nan)
        for r in rows:
            grid[ys.index(r.values[1]), xs.index(r.values[0])] = r.mean
        fig, (ax,) = _new_figure()
        image = ax.imshow(grid, cmap="viridis", aspect="auto", origin="lower")
        fig.colorbar(image, ax=ax, label=metric + " (%)")
        ax.set_xticks(range(len(xs)), [cell_text(v) for v in xs])
        ax.set_yticks(range(len(ys)), [cell_text(v) for v in ys])
        ax.set_xlabel(keys[0])
        ax.set_ylabel(keys[1])
        for r in rows:
            if not math.isnan(r.mean):
                ax.text(xs.index(r.values[0]), ys.index(r.values[1]), _fmt(r.mean, r.std),
                        ha="center", va="center", color="white", fontsize=8)
        ax.set_title(f"{stem}: {metric} (mean over seeds)")
        figures.append(Figure(f"sweep-{_slug(stem)}-{_slug(keys[0])}-{_slug(keys[1])}.png", _png(fig),
                              f"{stem}: {metric} against {keys[0]} and {keys[1]}"))
    elif keys:
        fig, axes = _new_figure(4.5, 3.5, len(keys))
        for i, (ax, key) in enumerate(zip(axes, keys, strict=True)):
            _errorbar(ax, key, *_marginal(rows, i), metric)
        fig.suptitle(f"{stem}: {metric} against each swept key (over the other keys and seeds)")
        figures.append(Figure(f"sweep-{_slug(stem)}-keys.png", _png(fig), f"{stem}: {metric} against each key"))
    fig, (ax,) = _new_figure(7.0, 4.0)
    for r in rows:
        label = ", ".join(f"{k.rsplit('.', 1)[-1]}={cell_text(v)}" for k, v in zip(keys, r.values, strict=True))
        curves = [run.history.set_index("epoch")[_curve_column(run)] for run in r.runs if len(run.history)]
        if not curves:
            continue
        frame = pd.concat(curves, axis=1)
        mean = frame.mean(axis=1)
        line, = ax.plot(mean.index, mean.to_numpy(), label=label or stem)
        if frame.shape[1] > 1:
            ax.fill_between(mean.index, frame.min(axis=1).to_numpy(), frame.max(axis=1).to_numpy(),
                            color=line.get_color(), alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel(("validation" if any(_curve_column(run) == "val_acc" for r in rows for run in r.runs)
                   else "test") + " accuracy (%)")
    ax.set_title(f"{stem}: every point, mean over seeds (band: their range)")
    ax.grid(alpha=0.3)
    if rows:
        ax.legend(fontsize=8)
    figures.append(Figure(f"sweep-{_slug(stem)}-curves.png", _png(fig), f"{stem}: accuracy curves"))
    return figures


def _curve_column(run: Result) -> str:
    return "val_acc" if "val_acc" in run.history.columns and run.history["val_acc"].notna().any() else "test_acc"


# --- searches -----------------------------------------------------------------------------------------

def search_sections(results_dir: Path) -> list[SearchSection]:
    """A section per search with a results/search/<EXP>/search.json."""
    sections = []
    for path in sorted((Path(results_dir) / SEARCH_DIR).glob(f"*/{SEARCH_FILE}")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            trials = list(data["trials"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        metric = str(data.get("metric") or "metric")
        rows = []
        for t in trials:
            value = as_float(t.get("value"))
            rows.append({"trial": t.get("name", ""), "state": t.get("state", ""), "rung": str(int(t.get("rung", -1)) + 1),
                         "epochs": str(t.get("epochs", "")),
                         **{k: cell_text(v) for k, v in (t.get("params") or {}).items()},
                         metric: f"{value:.2f}" if value is not None else "–", "_value": value})
        frame = pd.DataFrame(rows)
        best = ""
        if len(frame) and frame["_value"].notna().any():
            i = frame["_value"].idxmax()
            best = str(frame.loc[i, "trial"])
            frame["best"] = ["◀ best" if j == i else "" for j in frame.index]
        section = SearchSection(path.parent.name, metric, frame.drop(columns=["_value"], errors="ignore"), best)
        values = [as_float(t.get("value")) for t in trials]
        fig, (ax,) = _new_figure()
        xs = [i for i, v in enumerate(values) if v is not None]
        ys = [v for v in values if v is not None]
        ax.plot(xs, ys, "o", label="trial")
        if ys:
            ax.plot(xs, np.maximum.accumulate(ys), "-", label="best so far")
            ax.legend()
        ax.set_xlabel("trial")
        ax.set_ylabel(metric + " (%)")
        ax.set_title(f"search {section.name}: {metric} over trials")
        ax.grid(alpha=0.3)
        section.figures.append(Figure(f"search-{_slug(section.name)}.png", _png(fig),
                                      f"search {section.name}: {metric} over trials"))
        sections.append(section)
    return sections
