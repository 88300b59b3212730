"""Kaggle credentials: where the official client finds them, read without the client, never printed."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CredentialsError

CREDENTIALS_HELP = (
    "set KAGGLE_USERNAME and KAGGLE_KEY, or save the token from kaggle.com → Settings → API → Create New Token "
    "as ~/.kaggle/kaggle.json and run `chmod 600 ~/.kaggle/kaggle.json`"
)


@dataclass(frozen=True)
class Credentials:
    """A Kaggle user name and API key, and where they came from (for messages; the key never is)."""

    username: str
    key: str = field(repr=False)
    source: str = "KAGGLE_USERNAME/KAGGLE_KEY"


def kaggle_json_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where the official client looks for kaggle.json: $KAGGLE_CONFIG_DIR, ~/.kaggle, then ~/.config/kaggle."""
    env = os.environ if environ is None else environ
    if env.get("KAGGLE_CONFIG_DIR"):
        return Path(env["KAGGLE_CONFIG_DIR"]) / "kaggle.json"
    home = Path(env.get("HOME") or Path.home())
    legacy = home / ".kaggle"
    if legacy.exists() or not sys.platform.startswith("linux"):
        return legacy / "kaggle.json"
    return Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle" / "kaggle.json"


def load_credentials(environ: Mapping[str, str] | None = None) -> Credentials:
    """Credentials from KAGGLE_USERNAME/KAGGLE_KEY, else from kaggle.json.

    Unlike the official client, which only warns, a kaggle.json that other users can read is refused:
    the key in it spends the owner's GPU quota."""
    env = os.environ if environ is None else environ
    user, key = env.get("KAGGLE_USERNAME", ""), env.get("KAGGLE_KEY", "")
    if user and key:
        return Credentials(user, key)
    if user or key:
        missing = "KAGGLE_KEY" if user else "KAGGLE_USERNAME"
        raise CredentialsError(f"{missing} is not set while {'KAGGLE_USERNAME' if user else 'KAGGLE_KEY'} is: "
                               "set both, or neither to use kaggle.json")
    path = kaggle_json_path(env)
    if not path.exists():
        raise CredentialsError(f"no Kaggle credentials: {CREDENTIALS_HELP}")
    if os.name == "posix" and path.stat().st_mode & 0o044:
        raise CredentialsError(f"{path} is readable by other users; run `chmod 600 {path}` and try again")
    try:
        data = json.loads(path.read_text())
        return Credentials(str(data["username"]), str(data["key"]), str(path))
    except PermissionError:
        raise CredentialsError(f"cannot read {path}: permission denied (it must belong to you, mode 600)") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise CredentialsError(f"{path} is not a Kaggle API token file (a JSON object with \"username\" and "
                               "\"key\"); download a new one from kaggle.com → Settings → API") from None
