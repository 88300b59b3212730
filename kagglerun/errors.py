"""The exception tree and the exit codes the CLI maps it to."""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    """Exit codes of the `kagglerun` command."""

    OK = 0
    ERROR = 1  # a user-facing error: bad input, a failed run, a rejected push
    USAGE = 2  # click's own code for bad command-line usage
    KAGGLE = 3  # Kaggle (or the emulator) refused or could not be reached
    INTERRUPTED = 130  # Ctrl-C


class KagglerunError(Exception):
    """Base of every error kagglerun raises on purpose.

    The CLI prints `str(error)` as one line without a traceback and exits with `exit_status`.
    """

    exit_status: ExitStatus = ExitStatus.ERROR


class ExperimentError(KagglerunError):
    """An experiment file is missing, malformed or invalid (the message names file and key)."""


class WorkspaceError(KagglerunError):
    """The workspace (experiments/, templates/, results/) is missing or inconsistent."""


class RenderError(KagglerunError):
    """A notebook or its kernel-metadata.json could not be rendered or failed validation."""


class RunError(KagglerunError):
    """A local run failed (the notebook raised, or its outputs break the output contract)."""


class Interrupted(KagglerunError):
    """Ctrl-C stopped a command; the message says what was kept."""

    exit_status = ExitStatus.INTERRUPTED


class LedgerError(KagglerunError):
    """The ledger in results/ is unreadable or inconsistent."""


class KaggleError(KagglerunError):
    """Kaggle (or the emulator) refused a request or could not be reached."""

    exit_status = ExitStatus.KAGGLE


class KernelError(KaggleError):
    """Kaggle has no such kernel, or it is not the user's (HTTP 403 or 404): that kernel's problem, not the
    connection's or the credentials', so commands over several experiments go on with the others."""


class CredentialsError(KaggleError):
    """No usable Kaggle credentials were found."""


class SessionCapError(KaggleError):
    """Kaggle refused to start a session: the user already runs the maximum number of GPU sessions."""


class AnswerLost(KaggleError):
    """A request that must not simply be sent again (a push) reached Kaggle, but its answer was lost (the
    connection dropped, timed out, or a server error came back): Kaggle may or may not have acted on it."""


class PullError(KaggleError):
    """Outputs could not be pulled, or what came back failed verification."""
