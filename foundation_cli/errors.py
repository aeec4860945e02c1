"""Errors and exit codes.

Every failure a user can cause or meet is a :class:`FoundationError` with a
one-line message, an optional hint and an exit status. Adapters translate
their tool's exceptions into this tree at their edge; only the command layer
(:mod:`foundation_cli.commands.common`) turns it into output and an exit code.

    FoundationError                       exit 1
    ├── UsageError                        exit 2   bad input: names, values, files
    │   └── ConfigError                   exit 2   foundation.yaml problems, with file:line:col
    ├── UnreachableError                  exit 3   Consul, an SSH host or the network cannot be reached
    ├── PermissionDeniedError             exit 4   ACL token refused (403), SSH auth, sudo
    ├── NotFoundError                     exit 5   key, service, node or host that does not exist
    ├── ConflictError                     exit 6   check-and-set lost, mode change, name taken
    └── PartialFailure                    exit 7   some hosts/nodes failed, others succeeded
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """Process exit codes; documented in ``foundation --help`` and docs/exit-codes.md."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    UNREACHABLE = 3
    PERMISSION_DENIED = 4
    NOT_FOUND = 5
    CONFLICT = 6
    PARTIAL = 7
    INTERRUPTED = 130


class FoundationError(Exception):
    """Base error: a one-line ``message`` and an optional ``hint`` for what to do next."""

    exit_status: ExitStatus = ExitStatus.FAILURE

    def __init__(self, message: str, *, hint: str | None = None, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = list(details or [])  # evidence shown under the message, e.g. a command's last output


class UsageError(FoundationError):
    exit_status = ExitStatus.USAGE


class ConfigError(UsageError):
    """A configuration problem, located as ``file:line:col`` when known."""


class UnreachableError(FoundationError):
    exit_status = ExitStatus.UNREACHABLE


class PermissionDeniedError(FoundationError):
    exit_status = ExitStatus.PERMISSION_DENIED


class NotFoundError(FoundationError):
    exit_status = ExitStatus.NOT_FOUND


class ConflictError(FoundationError):
    exit_status = ExitStatus.CONFLICT


class PartialFailure(FoundationError):
    exit_status = ExitStatus.PARTIAL


class Interrupted(FoundationError):
    """Ctrl-C: the command stopped where it was; running it again picks up from there."""

    exit_status = ExitStatus.INTERRUPTED

    def __init__(self) -> None:
        super().__init__(
            "interrupted",
            hint="run the same command again when ready: it picks up where this run stopped (writes are idempotent)",
        )


def internal_error(exc: BaseException) -> FoundationError:
    """A bug, said as one line for the user (the traceback is shown only with -vv)."""
    return FoundationError(
        f"internal error: {type(exc).__name__}: {exc}",
        hint="this is a bug in foundation; run again with -vv for the traceback and report it",
    )


EXIT_CODES_HELP = (
    "Exit codes: 0 ok · 1 failure · 2 usage · 3 unreachable · 4 denied · 5 not found · 6 conflict · "
    "7 partial · 130 interrupted"
)
