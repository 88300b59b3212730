"""Kaggle's session log: a JSON list of stream events, turned into plain text, and its tail without the lines
Kaggle's runner adds (papermill runs the notebook, nbconvert renders it: their lines end every log)."""

from __future__ import annotations

import json
import re

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # tracebacks in notebook logs come coloured


def log_text(raw: str) -> str:
    """Kaggle's log is a JSON list of {stream_name, time, data} events; return the plain text they carry."""
    text = raw
    if raw.strip().startswith("["):
        try:
            events = json.loads(raw)
        except ValueError:
            events = None
        if isinstance(events, list):
            text = "".join(str(e.get("data", "")) for e in events if isinstance(e, dict))
    return _ANSI_ESCAPE.sub("", text)


# Lines of Kaggle's runner, not of the notebook: nbconvert's "[NbConvertApp] ..." and the traitlets
# deprecation warning it triggers (with its "  warn(" line).
_NBCONVERT_LINE = re.compile(r"^\[NbConvertApp\]|^\s*warn\($|traitlets\.py:\d+: \w*Warning")
_PAPERMILL_ERROR = "papermill.exceptions.PapermillExecutionError"


def failure_tail(text: str, lines: int) -> list[str]:
    """The last `lines` lines of a log that are the notebook's own: a failed run's tail shows the cell's
    traceback, not nbconvert converting __notebook__.ipynb, nor papermill's frames around the cell's error
    (from its "Traceback" line to 'Exception encountered at "In [n]":')."""
    rows = text.rstrip().splitlines()
    for i, line in enumerate(rows):
        if line.startswith(_PAPERMILL_ERROR):
            start = max((j for j in range(i) if rows[j].startswith("Traceback (most recent call last)")), default=i)
            end = next((j for j in range(i, len(rows)) if rows[j].startswith("Exception encountered at")), i)
            rows = rows[:start] + rows[end + 1:]
            break
    kept = [row for row in rows if not _NBCONVERT_LINE.search(row)]
    while kept and not kept[-1].strip():
        kept.pop()
    return kept[-lines:] if lines > 0 else []
