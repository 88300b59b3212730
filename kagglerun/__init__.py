"""kagglerun: experiments as TOML files, one tested training core, Kaggle GPU kernels, one report.

The library API: each name below is what one command calls. They load on first use (no work at import
time: the training core and the CLI import this package too).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "find_workspace": "kagglerun.workspace",
    "Workspace": "kagglerun.workspace",
    "ExperimentStore": "kagglerun.experiments",
    "Settings": "kagglerun.experiments",
    "render_experiments": "kagglerun.notebook.render",
    "run_local": "kagglerun.notebook.run",
    "connect": "kagglerun.kaggle",
    "push_experiments": "kagglerun.runs.push",
    "PushOptions": "kagglerun.runs.push",
    "refresh": "kagglerun.runs.status",
    "watch": "kagglerun.runs.status",
    "pull_experiments": "kagglerun.runs.pull",
    "build_report": "kagglerun.report",
    "start_in_thread": "kagglerun.emulator",
    "EmulatorConfig": "kagglerun.emulator",
    "run_demo": "kagglerun.demo",
    "Observer": "kagglerun.progress",
}

__all__ = ["__version__", *sorted(_API)]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'kagglerun' has no attribute {name!r}")
