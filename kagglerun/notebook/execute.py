"""Execute a notebook with nbclient in a given folder, as Kaggle would in /kaggle/working."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat

from ..core.contract import atomic_write_text

INPUT_ENV = "KAGGLERUN_INPUT"  # where the notebook looks for attached inputs (Kaggle: /kaggle/input)
DATA_ENV = "KAGGLERUN_DATA"  # a local data folder the notebook may read data sets from

# Never handed to a notebook: Kaggle's credentials and where the client finds them (a notebook could print
# them into its outputs). Every KAGGLE_* variable goes, and these others of the SDK's besides.
_SECRET_PREFIXES = ("KAGGLE_",)
_SECRET_NAMES = frozenset({"KAGGLE_KEY", "KAGGLE_USERNAME", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR"})


def kernel_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without Kaggle's credentials, plus `extra` (which may name KAGGLE_* values
    that are not secrets, such as the emulator's KAGGLE_KERNEL_RUN_TYPE)."""
    env = {k: v for k, v in os.environ.items() if k not in _SECRET_NAMES and not k.startswith(_SECRET_PREFIXES)}
    extra = {k: v for k, v in (extra or {}).items() if k not in _SECRET_NAMES}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


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

    `env` adds to this process's environment, from which Kaggle's credentials are removed
    (`kernel_environment`). `poll()` is called every `poll_interval` seconds while the
    notebook runs (to drive a progress display from the files the run writes). The executed notebook,
    outputs included, is saved to `executed_copy` when given, also when a cell fails.
    Raises NotebookFailed with the failing cell's error; KeyboardInterrupt (Ctrl-C here, or an interrupted
    kernel) once the kernel is shut down and the executed copy saved.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(notebook, as_version=4)
    cwd.mkdir(parents=True, exist_ok=True)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}},
        allow_errors=False,
    )
    stop, interrupted = threading.Event(), threading.Event()
    watcher = None
    if poll is not None:
        def watch() -> None:
            while not stop.wait(poll_interval):
                poll()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
    try:
        # The kernel's own stderr carries only Jupyter's start-up chatter; cell output arrives over ZMQ.
        _run_interruptibly(client, interrupted, env=kernel_environment(env), stderr=subprocess.DEVNULL)
    except CellExecutionError as e:
        if interrupted.is_set() or e.ename == "KeyboardInterrupt":
            raise KeyboardInterrupt from None
        raise NotebookFailed(e.ename or "Error", e.evalue or str(e), e.traceback or "") from None
    except CellTimeoutError as e:
        raise NotebookFailed("Timeout", str(e).splitlines()[0], "") from None
    except DeadKernelError as e:
        if interrupted.is_set():
            raise KeyboardInterrupt from None
        raise NotebookFailed("DeadKernel", str(e), "") from None
    except Exception:
        if interrupted.is_set():  # Ctrl-C before the kernel ran: nbclient's cleanup may fail on its own
            raise KeyboardInterrupt from None
        raise
    finally:
        stop.set()
        if watcher is not None:
            watcher.join()
        if poll is not None:
            poll()
        if executed_copy is not None:
            atomic_write_text(executed_copy, nbformat.writes(nb))
    return nb


class _Loop(asyncio.SelectorEventLoop):
    """An event loop in which nbclient's own SIGINT handler (which shuts the kernel down under the running
    cell, and then fails on its own cleanup) is replaced by `on_sigint`."""

    def __init__(self, on_sigint: Callable[[], None]):
        super().__init__()
        self.on_sigint = on_sigint

    def add_signal_handler(self, sig: int, callback: Callable[..., object], *args: Any) -> None:  # type: ignore[override]
        if sig == signal.SIGINT:
            callback, args = self.on_sigint, ()
        super().add_signal_handler(sig, callback, *args)


def _run_interruptibly(client: Any, interrupted: threading.Event, **kwargs: Any) -> None:
    """client.execute(**kwargs), where Ctrl-C interrupts the kernel (which runs in its own session, out of
    the terminal's reach) instead of this process: the running cell then fails the ordinary way, the kernel
    is shut down and the executed copy saved. A second Ctrl-C kills the kernel."""

    def on_sigint() -> None:
        provisioner = getattr(getattr(client, "km", None), "provisioner", None)
        process = getattr(provisioner, "process", None)
        first = not interrupted.is_set()
        interrupted.set()
        if process is None:  # no kernel yet: stop here
            raise KeyboardInterrupt
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGINT if first else signal.SIGKILL)

    loop = _Loop(on_sigint)
    try:
        loop.run_until_complete(client.async_execute(**kwargs))
    finally:
        loop.close()
