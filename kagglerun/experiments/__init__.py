"""Experiments: the settings model, the TOML files that hold them, the models they name (a workspace's
models/, torchvision's, the built-in ones), their resolved text, the list of keys, and a new workspace.

May import: the standard library, pydantic, `kagglerun.errors`, `kagglerun.workspace`, the payload's
`core.contract` (for the settings hash the notebook computes too) and torchvision (lazily, for its model names).
"""

from .settings import Settings, validate_settings
from .store import ExperimentStore

__all__ = ["ExperimentStore", "Settings", "validate_settings"]
