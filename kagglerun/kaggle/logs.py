"""Kaggle's session log: a JSON list of stream events, turned into plain text."""

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
