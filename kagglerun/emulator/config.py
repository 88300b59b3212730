"""The emulator's settings: everything it can be told, with defaults that mirror Kaggle's free tier."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from .faults import FaultConfig

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
    tokens: dict[str, str] = dataclasses.field(default_factory=dict)  # API token -> the user it belongs to
    gpu_session_cap: int = 2
    cpu_session_cap: int = 10  # Kaggle's batch CPU sessions have a cap of their own (its number unverified)
    gpu_quota_hours: float = 30.0
    session_limit_s: float = 12 * 3600.0  # Kaggle's 12 h limit; a push may ask for less
    queue_s: float = 0.0  # least time a session stays QUEUED, so clients can see that state
    data_dir: Path | None = None  # KAGGLERUN_DATA for the notebooks (default: inherited)
    datasets_dir: Path | None = None  # holds owner/slug folders for dataset_sources
    # Where sources are mounted under /kaggle/input: "nested" as Kaggle mounts them now
    # (notebooks/OWNER/SLUG, datasets/OWNER/SLUG), "flat" as it did before (SLUG)
    input_layout: str = "nested"
    faults: FaultConfig = dataclasses.field(default_factory=FaultConfig)
