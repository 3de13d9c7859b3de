"""``metav1.Status`` failures with the codes, reasons and messages kube-apiserver uses."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from .resources import ResourceType


class Reason(StrEnum):
    """``Status.reason`` values the double returns."""

    NOT_FOUND = "NotFound"
    ALREADY_EXISTS = "AlreadyExists"
    CONFLICT = "Conflict"
    FORBIDDEN = "Forbidden"
    UNAUTHORIZED = "Unauthorized"
    BAD_REQUEST = "BadRequest"
    INVALID = "Invalid"
    METHOD_NOT_ALLOWED = "MethodNotAllowed"
    UNSUPPORTED_MEDIA_TYPE = "UnsupportedMediaType"
    GONE = "Expired"
    SERVICE_UNAVAILABLE = "ServiceUnavailable"


class StatusError(Exception):
    """A request failure, rendered as a ``Status`` object with HTTP status ``code``."""

    def __init__(self, code: int, reason: Reason, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def to_status(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": str(self.reason),
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(rt: ResourceType, name: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "kind": rt.plural}
    if rt.group:
        details["group"] = rt.group
    return details


def not_found(rt: ResourceType, name: str) -> StatusError:
    """404: ``jobs.batch "x" not found``."""
    return StatusError(404, Reason.NOT_FOUND, f'{rt.qualified} "{name}" not found', _details(rt, name))


def already_exists(rt: ResourceType, name: str) -> StatusError:
    """409: ``configmaps "x" already exists``."""
    return StatusError(409, Reason.ALREADY_EXISTS, f'{rt.qualified} "{name}" already exists', _details(rt, name))


def conflict(rt: ResourceType, name: str) -> StatusError:
    """409: a write with a stale ``metadata.resourceVersion``."""
    message = (
        f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    return StatusError(409, Reason.CONFLICT, message, _details(rt, name))


def forbidden(user: str, verb: str, group: str, resource: str, namespace: str | None, name: str | None) -> StatusError:
    """403 with the RBAC authorizer's message format."""
    qualified = f"{resource}.{group}" if group else resource
    subject = f'{qualified} "{name}"' if name else qualified
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    message = (
        f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource}" in API group "{group}" {scope}'
    )
    details: dict[str, Any] = {"kind": resource}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    return StatusError(403, Reason.FORBIDDEN, message, details)


def unauthorized() -> StatusError:
    """401 for a missing or wrong bearer token."""
    return StatusError(401, Reason.UNAUTHORIZED, "Unauthorized")


def bad_request(message: str) -> StatusError:
    """400 with ``message``."""
    return StatusError(400, Reason.BAD_REQUEST, message)


def invalid(rt: ResourceType, name: str, message: str) -> StatusError:
    """422: the object fails validation."""
    return StatusError(422, Reason.INVALID, f'{rt.kind} "{name}" is invalid: {message}', _details(rt, name))


def method_not_allowed(method: str) -> StatusError:
    """405 for a verb the resource does not support."""
    return StatusError(
        405,
        Reason.METHOD_NOT_ALLOWED,
        f"the server does not allow this method on the requested resource ({method})",
    )


def unsupported_media_type(content_type: str, accepted: list[str]) -> StatusError:
    """415 for a patch type the resource does not accept (strategic merge on custom resources)."""
    message = (
        f"the body of the request was in an unknown format ({content_type}) - accepted media types include: "
        + ", ".join(accepted)
    )
    return StatusError(415, Reason.UNSUPPORTED_MEDIA_TYPE, message)


def gone(resource_version: str) -> StatusError:
    """410: a watch from a resourceVersion the store no longer has."""
    return StatusError(410, Reason.GONE, f"too old resource version: {resource_version}")


def unavailable() -> StatusError:
    """503: a transient API server failure (injected by tests through ``Policy.faults``)."""
    return StatusError(503, Reason.SERVICE_UNAVAILABLE, "the server is currently unable to handle the request")
