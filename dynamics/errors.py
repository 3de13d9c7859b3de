"""User-facing errors.

Anything a user can cause (a bad spec, a missing secret, an unreachable bucket) is raised as a
:class:`DynamicsError`; the CLI prints its message, without a traceback, and exits with its code.
"""

from __future__ import annotations


class DynamicsError(Exception):
    """An error whose message is meant for the user: what is wrong and how to fix it."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  fix: {self.hint}"
        return self.message


class SpecError(DynamicsError):
    """The run spec is invalid; the message lists every problem with its field path."""

    exit_code = 2


class StorageError(DynamicsError):
    """An S3 or filesystem operation failed permanently (after retries)."""


class KubeError(DynamicsError):
    """The Kubernetes API refused or could not be reached."""
