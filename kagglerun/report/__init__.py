"""The comparison report: read results/ (load), pool seeds (pool), tables, figures, and write them (write).

May import: pandas, numpy, matplotlib, PIL, `kagglerun.notebook.templates` (the one Jinja environment),
the payload's contract, `kagglerun.errors`. Never rich: the terminal table is the CLI's (cli/views.py).
"""

from .load import Result, Skipped, load_results
from .pool import Column, pool_seeds
from .write import Report, build_report

__all__ = ["Column", "Report", "Result", "Skipped", "build_report", "load_results", "pool_seeds"]
