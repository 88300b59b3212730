"""The report's file names and writes, shared by its Markdown, HTML, CSV and LaTeX writers."""

from __future__ import annotations

import os
import re
from pathlib import Path


def slug(text: str) -> str:
    """`text` as a file-name part: lower case, runs of anything else than a-z and 0-9 as one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def write(path: Path, data: bytes | str) -> None:
    """Write beside `path` and rename over it, so a browser never reads half a report. No fsync: a report
    is rebuilt in a second, and 200 fsyncs would cost more than the whole build."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)
