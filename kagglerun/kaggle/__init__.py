"""The Kaggle adapter: the only package that imports the official `kaggle` client and its SDK (kagglesdk),
always lazily, inside functions. It turns their behaviour into our exceptions and types.

May import: the standard library, requests, kaggle/kagglesdk (lazily), `kagglerun.errors` and `kagglerun.states`.
"""

from .client import KaggleKernels, connect
from .credentials import Credentials, load_credentials
from .retry import RetryPolicy
from .sdk import ENDPOINT_ENV, validate_kernel_folder
from .types import DownloadFailed, KernelVersion, OutputFile, Outputs, PushResult, Quota, SessionStatus, session_cause

__all__ = ["ENDPOINT_ENV", "Credentials", "DownloadFailed", "KaggleKernels", "KernelVersion", "OutputFile", "Outputs",
           "PushResult", "Quota", "RetryPolicy", "SessionStatus", "connect", "load_credentials", "session_cause",
           "validate_kernel_folder"]
