"""Execute a notebook with nbclient in a given folder, as Kaggle would in /kaggle/working."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import nbformat

from ..core.contract import atomic_write_text

INPUT_ENV = "KAGGLERUN_INPUT"  # where the notebook looks for attached inputs (Kaggle: /kaggle/input)
DATA_ENV = "KAGGLERUN_DATA"  # a local data folder the notebook may read data sets from


class NotebookFailed(Exception):
    """The notebook raised; `ename`, `evalue` and `traceback` are those of the failing cell."""

    def __init__(self, ename: str, evalue: str, traceback: str):
        super().__init__(f"{ename}: {evalue}")
        self.ename, self.evalue, self.traceback = ename, evalue, traceback


def execute_notebook(
    notebook: Path,
    cwd: Path,
    *,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    poll: Callable[[], None] | None = None,
    poll_interval: float = 0.5,
    executed_copy: Path | None = None,
) -> nbformat.NotebookNode:
    """Run every cell of `notebook` with the working directory `cwd`.

    `env` adds to this process's environment. `poll()` is called every `poll_interval` seconds while the
    notebook runs (to drive a progress display from the files the run writes). The executed notebook,
    outputs included, is saved to `executed_copy` when given, also when a cell fails.
    Raises NotebookFailed with the failing cell's error.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(notebook, as_version=4)
    cwd.mkdir(parents=True, exist_ok=True)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}},
        allow_errors=False,
    )
    stop = threading.Event()
    watcher = None
    if poll is not None:
        def watch() -> None:
            while not stop.wait(poll_interval):
                poll()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
    try:
        # The kernel's own stderr carries only Jupyter's start-up chatter; cell output arrives over ZMQ.
        client.execute(env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, stderr=subprocess.DEVNULL)
    except CellExecutionError as e:
        raise NotebookFailed(e.ename or "Error", e.evalue or str(e), e.traceback or "") from None
    except CellTimeoutError as e:
        raise NotebookFailed("Timeout", str(e).splitlines()[0], "") from None
    except DeadKernelError as e:
        raise NotebookFailed("DeadKernel", str(e), "") from None
    finally:
        stop.set()
        if watcher is not None:
            watcher.join()
        if poll is not None:
            poll()
        if executed_copy is not None:
            atomic_write_text(executed_copy, nbformat.writes(nb))
    return nb
