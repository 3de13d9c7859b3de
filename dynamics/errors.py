"""User-facing errors.

Anything a user can cause (a bad spec, a missing secret, an unreachable bucket) is raised as a
:class:`DynamicsError`; the CLI prints its message, without a traceback, and exits with its code.
"""

from __future__ import annotations

from dynamics.core.errors import DynamicsError

__all__ = ["DynamicsError", "KubeError", "SpecError", "StorageError"]


class SpecError(DynamicsError):
    """The run spec is invalid; the message lists every problem with its field path."""

    exit_code = 2


class StorageError(DynamicsError):
    """An S3 or filesystem operation failed permanently (after retries)."""


class KubeError(DynamicsError):
    """The Kubernetes API refused or could not be reached."""
