"""A Kaggle emulator session's own process: start it, run its notebook, read its outputs and log, kill it.

Each session runs in its own process (so cancel and time limits can stop it) calling
`notebook.execute.execute_notebook` in `sessions/<id>/working` (stands in for /kaggle/working: its files are the
outputs, named relative to it) with the environment its job.json gives (KAGGLERUN_INPUT for /kaggle/input).
The log is the notebook's stream outputs as Kaggle's list of {stream_name, time, data}, built when the
session ends (there is no live log).

Kaggle runs a batch notebook through papermill and renders it with nbconvert, and both leave traces: files of
its own beside the notebook's outputs (`__notebook__.ipynb`, `__results__.html`, `__output__.json`,
`custom.css`), and lines of their own at the end of the log (papermill's PapermillExecutionError with the
failing cell's traceback, traitlets' deprecation warning, `[NbConvertApp]` lines). The emulator adds the same
(`kaggle_runner_files`, `runner_lines`); the files' contents are stand-ins (Kaggle's exact content is
unverified), their names are those public kernels' outputs show.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..core.contract import atomic_write_json
from ..notebook.execute import NotebookFailed, execute_notebook

_SKIP_OUTPUT_DIRS = {".ipynb_checkpoints", ".virtual_documents"}
KAGGLE_RUNNER_FILES = ("__notebook__.ipynb", "__results__.html", "__output__.json", "custom.css")
_SITE = "/usr/local/lib/python3.11/site-packages"


def start_session_process(folder: Path, job: dict[str, Any]) -> subprocess.Popen:
    """Write `job` to folder/job.json and start the process that runs it, in job["cwd"], logging to worker.log."""
    (folder / "job.json").write_text(json.dumps(job))
    package_root = str(Path(__file__).resolve().parents[2])
    child_env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [package_root] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    with open(folder / "worker.log", "ab") as worker_log:
        # Own session: the emulator's Ctrl-C does not reach notebooks, and a stop can signal the group.
        return subprocess.Popen(
            [sys.executable, "-c", "from kagglerun.emulator.sessions import run_session_process as r; r()", str(folder)],
            cwd=job["cwd"], env=child_env, stdin=subprocess.DEVNULL, stdout=worker_log, stderr=worker_log,
            start_new_session=True,
        )


def kill_group(proc: subprocess.Popen, sig: int, group: bool = True) -> None:
    """Send `sig` to the session's process group (or to its process alone); one already gone is no error."""
    try:
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_orphan(pid: int | None) -> None:
    """Kill a session process left by a server that died, if that pid still is one of ours."""
    if not pid:
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"run_session_process" in cmdline:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def output_files(working: Path) -> list[str]:
    """Every file under `working`, as posix names relative to it (Kaggle's names under /kaggle/working)."""
    names = []
    for root, dirs, files in os.walk(working):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_OUTPUT_DIRS)
        for name in sorted(files):
            path = Path(root) / name
            if path.is_file() and not path.is_symlink():
                names.append(path.relative_to(working).as_posix())
    return names


def notebook_log(executed: Path, started_at: float, runner_log: str = "") -> list[dict[str, Any]]:
    """Kaggle's log format from an executed notebook: its stream outputs as {stream_name, time, data}, then
    `runner_log` (papermill's and nbconvert's lines) on stderr. Without it (a session stopped before its end)
    a failing cell's traceback is logged as itself."""
    import nbformat

    try:
        nb = nbformat.read(executed, as_version=4)
    except (OSError, ValueError):
        return []
    entries = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        stamp = cell.get("metadata", {}).get("execution", {}).get("shell.execute_reply")
        try:
            at = max(0.0, dt.datetime.fromisoformat(stamp).timestamp() - started_at) if stamp else 0.0
        except ValueError:
            at = 0.0
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                entries.append({"stream_name": out.get("name", "stdout"), "time": round(at, 3),
                                "data": out.get("text", "")})
            elif out.get("output_type") == "error" and not runner_log:
                text = "\n".join(out.get("traceback", [])) or f"{out.get('ename')}: {out.get('evalue')}"
                entries.append({"stream_name": "stderr", "time": round(at, 3), "data": text + "\n"})
    if runner_log:
        end = entries[-1]["time"] if entries else 0.0
        entries.append({"stream_name": "stderr", "time": end, "data": runner_log})
    return entries


def kaggle_runner_files(working: Path, executed: Path) -> int:
    """Write the files Kaggle's runner adds to a batch session's output; returns the size of the HTML."""
    import nbformat

    try:
        nb = nbformat.read(executed, as_version=4)
    except (OSError, ValueError):
        nb = nbformat.v4.new_notebook()
    (working / "__notebook__.ipynb").write_text(nbformat.writes(nb))
    parts = ['<!DOCTYPE html>\n<html><head><meta charset="utf-8"><link rel="stylesheet" href="custom.css">'
             "</head><body>"]
    for cell in nb.cells:
        parts.append(f"<pre class='{cell.cell_type}'>{html.escape(cell.source)}</pre>")
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(f"<pre class='output'>{html.escape(out.get('text', ''))}</pre>")
    page = "".join(parts) + "</body></html>\n"
    (working / "__results__.html").write_text(page)
    (working / "__output__.json").write_text(json.dumps({"cells": len(nb.cells)}) + "\n")
    (working / "custom.css").write_text("/* Kaggle's notebook styles */\n")
    return len(page.encode())


def runner_lines(failed: NotebookFailed | None, html_bytes: int, notebook_bytes: int) -> str:
    """What papermill and nbconvert print to the log after the notebook: the failure (the cell's traceback
    inside papermill's own), the traitlets warning and the conversion lines."""
    text = ""
    if failed is not None:
        text += ("Traceback (most recent call last):\n  File \"<string>\", line 1, in <module>\n"
                 f"  File \"{_SITE}/papermill/execute.py\", line 131, in execute_notebook\n"
                 "    raise_for_execution_errors(nb, output_path)\n"
                 f"  File \"{_SITE}/papermill/execute.py\", line 251, in raise_for_execution_errors\n"
                 "    raise error\npapermill.exceptions.PapermillExecutionError: \n" + "-" * 75 + "\n"
                 'Exception encountered at "In [1]":\n'
                 + (failed.traceback.rstrip() or f"{failed.ename}: {failed.evalue}") + "\n\n")
    text += (f"{_SITE}/traitlets/traitlets.py:2915: FutureWarning: --Exporter.preprocessors="
             '["remove_papermill_header.RemovePapermillHeader"] for containers is deprecated in traitlets 5.0. '
             "You can pass `--Exporter.preprocessors item` ... multiple times to add items to a list.\n  warn(\n"
             "[NbConvertApp] Converting notebook __notebook__.ipynb to notebook\n"
             f"[NbConvertApp] Writing {notebook_bytes} bytes to __notebook__.ipynb\n"
             "[NbConvertApp] Converting notebook __notebook__.ipynb to html\n"
             f"[NbConvertApp] Writing {html_bytes} bytes to __results__.html\n")
    return text


def run_session_process() -> None:
    """Entry point of a session's own process: run the notebook, write result.json, save on SIGTERM."""
    folder = Path(sys.argv[-1])
    job = json.loads((folder / "job.json").read_text())

    def on_term(signum, frame):  # unwinds through execute_notebook, which saves the executed copy
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    failed: NotebookFailed | None = None
    try:
        execute_notebook(Path(job["notebook"]), Path(job["cwd"]), env=job["env"],
                         executed_copy=Path(job["executed_copy"]))
        result: dict[str, Any] = {"ok": True}
    except NotebookFailed as e:
        failed, result = e, {"ok": False, "error": f"{e.ename}: {e.evalue}"}
    except KeyboardInterrupt:
        return
    working, executed = Path(job["cwd"]), Path(job["executed_copy"])
    html_bytes = kaggle_runner_files(working, executed)
    result["runner_log"] = runner_lines(failed, html_bytes, (working / "__notebook__.ipynb").stat().st_size)
    atomic_write_json(job["result"], result)
