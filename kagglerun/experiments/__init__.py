"""Experiments: the settings model, the TOML files that hold them, and their resolved text.

May import: the standard library, pydantic, `kagglerun.errors`, `kagglerun.workspace` and the payload's
`core.contract` (for the settings hash the notebook computes too).
"""

from .settings import Settings, validate_settings
from .store import ExperimentStore

__all__ = ["ExperimentStore", "Settings", "validate_settings"]
