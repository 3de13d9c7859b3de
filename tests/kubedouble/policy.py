"""Who calls the Kubernetes API test double and what it may do (an RBAC-like allow-list)."""

from __future__ import annotations

from dataclasses import dataclass, field

Permission = tuple[str, str, str]
"""An allowed ``(verb, api group, resource)``; ``resource`` may name a subresource (``pods/log``)."""

DEFAULT_USER = "system:serviceaccount:default:tester"


@dataclass(frozen=True)
class Access:
    """One authorized API request, recorded for assertions about what a client called."""

    verb: str
    group: str
    resource: str
    namespace: str | None


@dataclass
class Policy:
    """The caller's identity, its bearer token (if one is required) and its allow-list.

    ``allow=None`` allows everything; ``*`` in a permission matches anything.
    """

    user: str = DEFAULT_USER
    token: str | None = None
    allow: set[Permission] | None = None
    accesses: list[Access] = field(default_factory=list)
    # (verb, resource) -> how many of the next such requests fail with 503 (a flaky API server)
    faults: dict[tuple[str, str], int] = field(default_factory=dict)

    def take_fault(self, verb: str, resource: str) -> bool:
        """Whether this request is one of the injected transient failures (consumes one)."""
        left = self.faults.get((verb, resource), 0)
        if left > 0:
            self.faults[(verb, resource)] = left - 1
        return left > 0

    def allows(self, verb: str, group: str, resource: str) -> bool:
        """Whether ``verb`` on ``group``/``resource`` is allowed."""
        if self.allow is None:
            return True
        return any(
            all(want in ("*", have) for want, have in zip(perm, (verb, group, resource), strict=True))
            for perm in self.allow
        )
