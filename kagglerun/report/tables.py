"""The report's tables: each group in the seed study's layout (settings as rows, columns ending with
BestTestAcc and BestEpoch), the main table (a row per column), and summary.csv (a row per run)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from .load import Result, as_float, as_int
from .pool import IDENTITY_KEYS, Column

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

def varying_keys(runs: Iterable[Result], ignore: frozenset[str] = IDENTITY_KEYS) -> list[str]:
    """Dotted settings whose value is not the same in every run: the seed's rows in its order, then the rest."""
    runs = list(runs)
    keys = sorted({k for r in runs for k in r.flat}, key=lambda k: (k not in ROW_TITLES, list(ROW_TITLES).index(k)
                                                                   if k in ROW_TITLES else 0, k))
    return [k for k in keys if k not in ignore and len({repr(r.flat.get(k)) for r in runs}) > 1]


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
    count = as_float(count)
    if count is None:
        return "–"
    return f"{count / 1e6:.2f} M" if count >= 1e5 else f"{count / 1e3:.1f} k"


def _progress(entry: Column) -> str:
    parts = [f"{r.epochs_done}/{r.epochs_total or '?'}" for r in entry.runs]
    return ", ".join(dict.fromkeys(parts))


def group_table(entries: list[Column]) -> pd.DataFrame:
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
    if any(r.selection == "val" for r in runs):  # the result: test accuracy where validation chose
        rows["BestValAcc"] = [_stat([r.chosen[2] for r in e.runs], 2) for e in entries]
        rows["TestAccAtBestVal"] = [_stat([r.chosen[0] for r in e.runs], 2) for e in entries]
        rows["BestValEpoch"] = [_stat([r.chosen[1] for r in e.runs], 0) for e in entries]
    rows["BestTestAcc"] = [_stat([r.best[0] for r in e.runs], 2) for e in entries]
    rows["BestEpoch"] = [_stat([r.best[1] for r in e.runs], 0) for e in entries]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=[e.title for e in entries])
    table.index.name = "Setting"
    return table


MAIN_COLUMNS = ("experiment", "group", "state", "epochs", "best test acc (%)", "best epoch",
                "final test acc (%)", "params", "wall time", "device")
VAL_COLUMN = "test acc at best val (%)"  # shown after "best epoch" when a run has a validation split


def main_table(entries: list[Column]) -> pd.DataFrame:
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
    columns = list(MAIN_COLUMNS)
    if any(r.selection == "val" for e in entries for r in e.runs):
        columns.insert(columns.index("best epoch") + 1, VAL_COLUMN)
        for row, e in zip(rows, entries, strict=True):
            vals = [r.chosen for r in e.runs]
            row[VAL_COLUMN] = "–" if all(v[0] is None for v in vals) else \
                f"{_stat([v[0] for v in vals], 2)} @ {_stat([v[1] for v in vals], 0)}"
    return pd.DataFrame(rows, columns=columns)


def _mean(values: list[float | None]) -> float | None:
    numbers = [v for v in values if v is not None]
    return float(np.mean(numbers)) if numbers else None


def summary_frame(runs: list[Result]) -> pd.DataFrame:
    """summary.csv: one row per experiment, the settings that vary across them, and its results."""
    varying = varying_keys(runs)
    rows = []
    for run in runs:
        best_acc, best_epoch = run.best
        row: dict[str, Any] = {"experiment": run.name}
        row.update({k: _csv_value(run.flat.get(k)) for k in varying})
        row.update({
            "best_test_acc": best_acc, "best_epoch": best_epoch, "final_test_acc": run.final_acc,
            "params": as_int(run.summary.get("params")), "wall_seconds": run.seconds,
            "device": run.summary.get("device"), "state": run.state,
            "epochs_done": run.epochs_done, "epochs_total": run.epochs_total, "selection": run.selection,
            "best_val_acc": run.chosen[2], "test_acc_at_best_val": run.chosen[0], "best_val_epoch": run.chosen[1],
        })
        rows.append(row)
    columns = ["experiment", *varying, "best_test_acc", "best_epoch", "final_test_acc", "params",
               "wall_seconds", "device", "state", "epochs_done", "epochs_total", "selection", "best_val_acc",
               "test_acc_at_best_val", "best_val_epoch"]
    return pd.DataFrame(rows, columns=columns).astype({"best_epoch": "Int64", "params": "Int64",
                                                       "best_val_epoch": "Int64"})


def _csv_value(value: Any) -> Any:
    return " ".join(map(str, value)) if isinstance(value, tuple) else value


