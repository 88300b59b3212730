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
    "set KAGGLE_API_TOKEN to the API token from kaggle.com → Settings → API (or save it as "
    "~/.kaggle/access_token, mode 600), or set KAGGLE_USERNAME and KAGGLE_KEY, or save a legacy key as "
    "~/.kaggle/kaggle.json and run `chmod 600 ~/.kaggle/kaggle.json`"
)


@dataclass(frozen=True)
class Credentials:
    """A Kaggle user name and API key, or an API token, and where they came from (for messages; the key and
    the token never are). With a token the user name may be empty until Kaggle names it (KaggleKernels
    asks, as the official client does)."""

    username: str
    key: str = field(default="", repr=False)
    source: str = "KAGGLE_USERNAME/KAGGLE_KEY"
    token: str = field(default="", repr=False)  # sent as `Authorization: Bearer <token>` instead of the key


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


def _private_text(path: Path, what: str) -> str:
    """A credentials file's text; refused when other users can read it (the key spends the owner's quota)."""
    if os.name == "posix" and path.stat().st_mode & 0o044:
        raise CredentialsError(f"{path} is readable by other users; run `chmod 600 {path}` and try again")
    try:
        return path.read_text()
    except PermissionError:
        raise CredentialsError(f"cannot read {path}: permission denied (it must belong to you, mode 600)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CredentialsError(f"cannot read {what} {path}: {e}") from None


def access_token(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(token, where it came from), or ("", "") without one; found where kaggle 2.2.5 looks
    (kagglesdk kaggle_env.py get_access_token_from_env): $KAGGLE_API_TOKEN (the token, or the path of a
    file holding it), then ~/.kaggle/access_token, then ~/.kaggle/access_token.txt."""
    env = os.environ if environ is None else environ
    value = env.get("KAGGLE_API_TOKEN", "").strip()
    if value:
        path = Path(value).expanduser()
        if "/" in value and path.is_file():
            return _private_text(path, "the API token file").strip(), f"KAGGLE_API_TOKEN ({path})"
        return value, "KAGGLE_API_TOKEN"
    home = Path(env.get("HOME") or Path.home())
    for name in ("access_token", "access_token.txt"):
        path = home / ".kaggle" / name
        if path.is_file():
            token = _private_text(path, "the API token file").strip()
            if token:
                return token, str(path)
    return "", ""


def load_credentials(environ: Mapping[str, str] | None = None) -> Credentials:
    """Credentials in the official client's order (kaggle_api_extended.py `authenticate`): an API token
    first (`access_token`), then KAGGLE_USERNAME/KAGGLE_KEY, then kaggle.json. With a token, the user name
    is KAGGLE_USERNAME when set, else left for Kaggle to name.

    Unlike the official client, which only warns, a kaggle.json or token file that other users can read is
    refused: the key in it spends the owner's GPU quota."""
    env = os.environ if environ is None else environ
    user, key = env.get("KAGGLE_USERNAME", ""), env.get("KAGGLE_KEY", "")
    token, where = access_token(env)
    if token:
        return Credentials(user, "", where, token)
    if user and key:
        return Credentials(user, key)
    if user or key:
        missing = "KAGGLE_KEY" if user else "KAGGLE_USERNAME"
        raise CredentialsError(f"{missing} is not set while {'KAGGLE_USERNAME' if user else 'KAGGLE_KEY'} is: "
                               "set both, or neither to use kaggle.json")
    path = kaggle_json_path(env)
    if not path.exists():
        raise CredentialsError(f"no Kaggle credentials: {CREDENTIALS_HELP}")
    text = _private_text(path, "kaggle.json")
    try:
        data = json.loads(text)
        return Credentials(str(data["username"]), str(data["key"]), str(path))
    except (ValueError, KeyError, TypeError):
        raise CredentialsError(f"{path} is not a Kaggle API token file (a JSON object with \"username\" and "
                               "\"key\"); download a new one from kaggle.com → Settings → API") from None
