"""A loopback server that speaks Kaggle's kernels API and runs pushed notebooks locally: its public API.

The emulator is four modules: this one (settings, start and stop), emulator_state (Kaggle's behaviour:
kernels, versions, sessions, quota, persistence), emulator_sessions (a session's own process running its
notebook) and emulator_http (the API over HTTP); emulator_faults holds the fault injection, all off by default.

Pointing a client at it. `KAGGLE_API_ENVIRONMENT=TEST` makes `kagglesdk.kaggle_env.get_env()` pick
http://localhost:7777, the default port. On another port (tests use port 0 = a free one) build the client
with `KaggleClient(env=KaggleEnv.TEST, username=..., password=key)` and set
`client.http_client()._endpoint = handle.url`. Credentials: HTTP basic auth (username, key) or a bearer
token equal to a key; without them every API call is 401, and a kernel owned by someone else is 403.
The server accepts `EmulatorConfig.credentials` ({username: key}); by default KAGGLE_USERNAME/KAGGLE_KEY
from the environment, else `kagglerun-test` / `kagglerun-test-key`. The key is never logged.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from .emulator_faults import FaultConfig
from .emulator_http import EmulatorServer, bind
from .emulator_state import Emulator

log = logging.getLogger("kagglerun.emulator")

DEFAULT_PORT = 7777
TEST_USERNAME = "kagglerun-test"
TEST_KEY = "kagglerun-test-key"


def default_credentials() -> dict[str, str]:
    """{username: key}: KAGGLE_USERNAME/KAGGLE_KEY from the environment when both are set, else the test pair."""
    user, key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    return {user: key} if user and key else {TEST_USERNAME: TEST_KEY}


def default_state_dir() -> Path:
    return Path.home() / ".cache" / "kagglerun" / "emulator"


@dataclasses.dataclass
class EmulatorConfig:
    """Everything the emulator can be told; the defaults mirror Kaggle's free tier."""

    port: int = DEFAULT_PORT  # 0 picks a free port
    workers: int = 2  # notebooks executing at once
    state_dir: Path = dataclasses.field(default_factory=default_state_dir)
    credentials: dict[str, str] = dataclasses.field(default_factory=default_credentials)
    gpu_session_cap: int = 2
    gpu_quota_hours: float = 30.0
    session_limit_s: float = 12 * 3600.0  # Kaggle's 12 h limit; a push may ask for less
    queue_s: float = 0.0  # least time a session stays QUEUED, so clients can see that state
    data_dir: Path | None = None  # KAGGLERUN_DATA for the notebooks (default: inherited)
    datasets_dir: Path | None = None  # holds owner/slug folders for dataset_sources
    faults: FaultConfig = dataclasses.field(default_factory=FaultConfig)


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

    def __enter__(self) -> "EmulatorHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_in_thread(config: EmulatorConfig) -> EmulatorHandle:
    """Start the emulator on a background thread and return its handle (port 0 = a free port)."""
    emulator = Emulator(config)
    server = bind(emulator, config.port)
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
