"""The `kagglerun` command: a thin click layer over the library, and every rich view.

Each command parses its options and calls one library function, passing an observer that draws progress
(views.py). Nothing else in kagglerun imports this package, and only this package imports rich.
"""

from . import emulator, experiments, report, runs, search  # noqa: F401 (each registers its commands on `main`)
from .app import console, err_console, main

__all__ = ["console", "err_console", "main"]
