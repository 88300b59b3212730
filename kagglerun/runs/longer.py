"""More epochs resume: an experiment whose settings changed only in their length (`training.epochs`, the
time budget, the device: the training core's resume key) is pushed again resuming from the checkpoint of
its last version, not from scratch. A search continues its trials this way, one rung after another."""

from __future__ import annotations

import json

from ..core.contract import SETTINGS_FILE
from ..experiments import Settings
from ..states import PlanAction
from ..workspace import Workspace
from .ledger import Record
from .plan import Decision, Resume


def continue_longer(ws: Workspace, name: str, record: Record | None, settings: Settings, decision: Decision) -> Decision:
    """`decision` turned into a resume when the settings changed only in their length since the last
    version, whose checkpoint was pulled into results/NAME (so its settings there are that version's)."""
    action, reason, _ = decision
    last = record.latest if record is not None else None
    if (action != PlanAction.PUSH or record is None or last is None or not last.has_checkpoint
            or not reason.startswith("settings")):
        return decision
    try:
        pulled = json.loads((ws.result_dir(name) / SETTINGS_FILE).read_text())
    except (OSError, ValueError):
        return decision
    from ..core.contract import settings_hash
    from ..core.train import resume_key

    if not isinstance(pulled, dict) or settings_hash(pulled) != last.settings_hash:
        return decision
    if resume_key(pulled) != resume_key(settings.as_dict()):
        return decision
    return (PlanAction.RESUME, f"only its length changed since v{last.version}; resuming from its checkpoint",
            Resume(record.kernel_of(last), last.version, last.pushed_at))
