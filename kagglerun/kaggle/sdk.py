"""The official `kaggle` client and its SDK, imported lazily and made harmless: import-time authentication and
exit(1) without credentials, a config folder created at import, and the client's own push validation run
without sending anything. The only place besides `client.py` that imports the SDK."""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import KaggleError, RenderError
from .credentials import kaggle_json_path

ENDPOINT_ENV = "KAGGLERUN_KAGGLE_ENDPOINT"  # an explicit base URL, e.g. an emulator on a free port in tests


def kaggle_api_class():
    """Import `KaggleApi` without letting the package's import-time authentication print or exit."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), _no_config_dir_creation():
        try:
            from kaggle.api.kaggle_api_extended import KaggleApi
        except SystemExit:  # older releases exit(1) from kaggle/__init__ without credentials
            from kaggle.api.kaggle_api_extended import KaggleApi
    return KaggleApi


@contextlib.contextmanager
def _no_config_dir_creation():
    """kaggle 2.2.5 creates ~/.kaggle (or ~/.config/kaggle) when imported. We read credentials ourselves,
    so on a machine without that folder (a fresh demo machine) point the import at a throwaway one."""
    if "kaggle.api.kaggle_api_extended" in sys.modules or os.environ.get("KAGGLE_CONFIG_DIR") \
            or kaggle_json_path().parent.exists():
        yield
        return
    with tempfile.TemporaryDirectory(prefix="kagglerun-kaggle-config-") as scratch:
        os.environ["KAGGLE_CONFIG_DIR"] = scratch
        try:
            yield
        finally:
            os.environ.pop("KAGGLE_CONFIG_DIR", None)


class _CapturedPush(Exception):
    """Raised in place of the network call: validation passed and the request was built."""

    def __init__(self, request: Any):
        super().__init__("captured")
        self.request = request


class _CaptureClient:
    """Stands in for the SDK client inside `KaggleApi.kernels_push`, so the client's own checks run for real."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @property
    def kernels(self):
        return self

    @property
    def kernels_api_client(self):
        return self

    def save_kernel(self, request):
        raise _CapturedPush(request)


def validate_kernel_folder(folder: Path) -> Any:
    """Run the official client's push-time validation of `folder` (kernel-metadata.json and the code file)
    without sending anything. Returns the ApiSaveKernelRequest the client would send; raises RenderError
    with the client's own message when it would refuse the push."""
    api_class = kaggle_api_class()

    class _ValidatingApi(api_class):  # type: ignore[misc, valid-type]
        def build_kaggle_client(self):
            return _CaptureClient()

    api = _ValidatingApi()
    api.config_values = {}
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            api.kernels_push(str(folder))
    except _CapturedPush as captured:
        warning = out.getvalue().strip()
        if warning:  # the client only warns when the title does not slugify to the id; we refuse
            raise RenderError(f"{folder}: kaggle client: {' '.join(warning.split())}") from None
        return captured.request
    except ValueError as e:
        raise RenderError(f"{folder}: kaggle client refuses this push: {e}") from None
    raise RenderError(f"{folder}: kaggle client did not reach the push request")


def resolve_endpoint(environ: Mapping[str, str] | None = None) -> tuple[Any, str]:
    """The SDK environment and base URL: $KAGGLERUN_KAGGLE_ENDPOINT if set, else the SDK's own choice from
    KAGGLE_API_ENVIRONMENT (TEST: http://localhost:7777; unset: production)."""
    from kagglesdk.kaggle_env import KaggleEnv, get_endpoint, get_env

    env = os.environ if environ is None else environ
    override = env.get(ENDPOINT_ENV, "").strip()
    if override:
        if not re.match(r"^https?://[^/\s]+", override):
            raise KaggleError(f"{ENDPOINT_ENV}={override!r} is not an http(s) URL")
        # TEST (a non-production environment) makes the SDK put RPCs under <endpoint>/api/v1/, as an emulator serves them.
        return KaggleEnv.TEST, override.rstrip("/")
    try:
        sdk_env = get_env()
    except Exception as e:  # the SDK raises a bare Exception for an unknown value
        raise KaggleError(f"{e}; use PROD or TEST") from None
    return sdk_env, get_endpoint(sdk_env)
