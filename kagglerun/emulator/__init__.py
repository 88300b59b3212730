"""A loopback server that speaks Kaggle's kernels API and runs pushed notebooks locally: its public API.

Its rooms: config (settings), store (kernels, sessions, persistence), service (Kaggle's RPCs and rules),
quota, scheduler (runs sessions), sessions (a session's own process running its notebook), http (the API
over HTTP) and faults (fault injection, all off by default). This module starts and stops it.

May import: the standard library, nbformat, `kagglerun.notebook.execute` (to run a session's notebook),
the payload's contract, `kagglerun.errors`. Never the Kaggle SDK: the emulator stands in for Kaggle.

Pointing a client at it. `KAGGLE_API_ENVIRONMENT=TEST` makes `kagglesdk.kaggle_env.get_env()` pick
http://localhost:7777, the default port. On another port (tests use port 0 = a free one) build the client
with `KaggleClient(env=KaggleEnv.TEST, username=..., password=key)` and set
`client.http_client()._endpoint = handle.url`. Credentials: HTTP basic auth (username, key) or a bearer
API token (one of `EmulatorConfig.tokens`, or a key); without them every API call is 401, and a kernel owned
by someone else is 403. Errors come in Kaggle's nested form {"error": {"code", "message", "status"}}.
The server accepts `EmulatorConfig.credentials` ({username: key}); by default KAGGLE_USERNAME/KAGGLE_KEY
from the environment, else `kagglerun-test` / `kagglerun-test-key`. The key is never logged.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .config import DEFAULT_PORT, TEST_KEY, TEST_USERNAME, EmulatorConfig, default_credentials
from .faults import FaultConfig, FaultInjector
from .http import EmulatorServer, bind
from .scheduler import Scheduler
from .service import KernelsService
from .store import State

__all__ = ["DEFAULT_PORT", "TEST_KEY", "TEST_USERNAME", "Emulator", "EmulatorConfig", "EmulatorHandle", "FaultConfig",
           "default_credentials", "serve", "start_in_thread"]

log = logging.getLogger("kagglerun.emulator")


class Emulator:
    """Kaggle's kernels service in one process: the state, the service that answers the API, the scheduler
    that runs sessions, and the fault dice they share."""

    def __init__(self, config: EmulatorConfig):
        self.config = config
        self.faults = FaultInjector(config.faults)
        self.state = State(config.state_dir, self.faults)
        self.scheduler = Scheduler(self.state, config, self.faults)
        self.service = KernelsService(self.state, config, self.faults, self.scheduler.request_stop)
        with self.state.lock:
            self.scheduler.recover()
            self.state.save()

    def set_faults(self, faults: FaultConfig) -> None:
        """Switch fault injection to `faults` (tests turn faults on and off while it runs)."""
        self.config.faults = faults
        self.faults = FaultInjector(faults)
        self.state.faults = self.scheduler.faults = self.service.faults = self.faults

    @property
    def state_dir(self):
        return self.state.state_dir

    def stats(self) -> dict[str, Any]:
        return self.service.stats()

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.stop()


class EmulatorHandle:
    """A running emulator: `url`, `stats()`, `stop()` (also as a context manager)."""

    def __init__(self, emulator: Emulator, server: EmulatorServer, thread: threading.Thread):
        self.emulator, self._server, self._thread = emulator, server, thread
        self.port = server.server_port
        self.url = f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        return self.emulator.stats()

    def stop(self) -> None:
        if self._server.stopping.is_set():
            return
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        self.emulator.stop()

    def __enter__(self) -> EmulatorHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_in_thread(config: EmulatorConfig) -> EmulatorHandle:
    """Start the emulator on a background thread and return its handle (port 0 = a free port)."""
    emulator = Emulator(config)
    server = bind(emulator.service, config.port)
    emulator.start()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="emulator-http", daemon=True)
    thread.start()
    log.info("Kaggle emulator on http://127.0.0.1:%s, state in %s", server.server_port, emulator.state_dir)
    return EmulatorHandle(emulator, server, thread)


def serve(config: EmulatorConfig, ready: Any = None) -> None:
    """Run the emulator until Ctrl-C (which propagates after a clean stop). `ready(handle)` is called once listening."""
    handle = start_in_thread(config)
    try:
        if ready is not None:
            ready(handle)
        while True:
            time.sleep(3600)
    finally:
        handle.stop()
