"""The emulator's state: kernels, their versions' sessions, the link-signing secret, and their persistence
in `state_dir/state.json` (rewritten atomically after every change) beside one folder per session."""

from __future__ import annotations

import dataclasses
import json
import secrets
import threading
from pathlib import Path

from ..core.contract import atomic_write_json
from ..errors import KaggleError
from .faults import FaultInjector

# Session states as Kaggle's API spells them (kagglesdk's KernelWorkerStatus names)
QUEUED, RUNNING, COMPLETE, ERROR = "QUEUED", "RUNNING", "COMPLETE", "ERROR"
CANCEL_REQUESTED, CANCEL_ACKNOWLEDGED, NEW_SCRIPT = "CANCEL_REQUESTED", "CANCEL_ACKNOWLEDGED", "NEW_SCRIPT"
ACTIVE = (QUEUED, RUNNING, CANCEL_REQUESTED)
ENDED = (COMPLETE, ERROR, CANCEL_ACKNOWLEDGED)

CANCEL_MESSAGE = "The kernel was killed due to a requested cancel."
# A session killed at its time limit ends CANCEL_ACKNOWLEDGED with this message (issue 12's review of Kaggle's
# answers; not in kagglesdk), and one the out-of-memory killer ended ERROR with the second (Kaggle's notebook
# editor's wording; its batch-session wording is unverified). kagglerun.kaggle.types reads both.
TIME_LIMIT_MESSAGE = "Your notebook was stopped because it exceeded the max allowed execution duration."
OOM_MESSAGE = "Your notebook tried to allocate more memory than is available. It has restarted."
LOST_MESSAGE = "The session was lost when the emulator stopped while it ran; push it again."


@dataclasses.dataclass
class Kernel:
    id: int
    owner: str
    slug: str
    title: str
    is_private: bool
    sessions: list[int]  # version N is sessions[N - 1]


@dataclasses.dataclass
class Session:
    id: int
    owner: str
    slug: str
    version: int
    status: str
    gpu: bool
    created_at: float
    time_limit_s: float
    kernel_inputs: dict[str, int]  # "owner/slug" -> id of the session whose outputs it gets
    dataset_inputs: dict[str, str]  # "owner/slug" -> local folder
    failure_message: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    heartbeat: float | None = None
    charged_s: float = 0.0
    pid: int | None = None


class State:
    """Everything the emulator knows, behind one re-entrant lock that the service and the scheduler share."""

    def __init__(self, state_dir: Path, faults: FaultInjector):
        self.state_dir = Path(state_dir).expanduser()
        self.faults = faults
        self.lock = threading.RLock()
        self.kernels: dict[str, Kernel] = {}
        self.sessions: dict[int, Session] = {}
        self.secret = secrets.token_hex(16)
        self.next_id = 1
        self.peak_running = 0
        self.self_sources_refused = 0  # pushes that listed their own kernel as a source (this run of the server)
        self._load()

    def _load(self) -> None:
        path = self.state_dir / "state.json"
        if not path.exists():
            return
        try:
            data = json.loads(path.read_text())
            self.secret, self.next_id = data["secret"], data["next_id"]
            self.kernels = {k: Kernel(**v) for k, v in data["kernels"].items()}
            self.sessions = {int(k): Session(**v) for k, v in data["sessions"].items()}
        except (ValueError, KeyError, TypeError) as e:
            raise KaggleError(f"the emulator's state {path} is unreadable ({type(e).__name__}: {e}); "
                              "move it aside or use another --state folder") from None

    def save(self) -> None:
        data = {
            "secret": self.secret, "next_id": self.next_id,
            "kernels": {k: dataclasses.asdict(v) for k, v in self.kernels.items()},
            "sessions": {str(k): dataclasses.asdict(v) for k, v in self.sessions.items()},
            "peak_running": self.peak_running, "faults_injected": self.faults.snapshot(),
        }
        atomic_write_json(self.state_dir / "state.json", data)

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def session_dir(self, session_id: int) -> Path:
        return self.state_dir / "sessions" / str(session_id)

    def kernel_ref(self, session_id: int) -> str:
        """owner/slug of the kernel a session belongs to."""
        s = self.sessions[session_id]
        return f"{s.owner}/{s.slug}"

    def kernel(self, owner: str, slug: str) -> Kernel | None:
        return self.kernels.get(f"{owner}/{slug}".lower())
