"""The user-facing error base class.

It lives in the lowest layer so that the pure core can report a user-fixable problem (e.g. a GPU
requested where FAISS sees none) without importing anything above it; :mod:`dynamics.errors`
re-exports it with the errors of the layers above.
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
