"""PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge (as merge).

The double treats a strategic-merge patch as a JSON merge patch: lists are replaced, not merged by key.
That is stricter than kube-apiserver for built-in lists, which is the safe direction for tests.
"""

from __future__ import annotations

import copy
from enum import StrEnum
from typing import Any

from . import apierrors


class PatchType(StrEnum):
    """The ``Content-Type`` values of PATCH requests."""

    MERGE = "application/merge-patch+json"
    STRATEGIC = "application/strategic-merge-patch+json"
    JSON = "application/json-patch+json"
    APPLY = "application/apply-patch+yaml"


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 merge patch; ``null`` deletes a key."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _parent(doc: Any, path: str) -> tuple[Any, str]:
    if not path.startswith("/"):
        raise apierrors.bad_request(f"invalid JSON patch path {path!r}")
    tokens = [_unescape(t) for t in path[1:].split("/")]
    node = doc
    for token in tokens[:-1]:
        try:
            node = node[int(token)] if isinstance(node, list) else node[token]
        except (KeyError, IndexError, ValueError) as err:
            raise apierrors.bad_request(f"JSON patch path {path!r} does not exist") from err
    return node, tokens[-1]


def _apply_op(doc: Any, op: dict[str, Any]) -> None:
    kind, path = op.get("op"), op.get("path", "")
    parent, key = _parent(doc, path)
    try:
        if kind in ("add", "replace"):
            if isinstance(parent, list):
                index = len(parent) if key == "-" else int(key)
                if kind == "add":
                    parent.insert(index, copy.deepcopy(op["value"]))
                else:
                    parent[index] = copy.deepcopy(op["value"])
            else:
                if kind == "replace" and key not in parent:
                    raise apierrors.bad_request(f"JSON patch replace: {path!r} does not exist")
                parent[key] = copy.deepcopy(op["value"])
        elif kind == "remove":
            del parent[int(key) if isinstance(parent, list) else key]
        elif kind == "test":
            current = parent[int(key)] if isinstance(parent, list) else parent[key]
            if current != op.get("value"):
                raise apierrors.StatusError(422, apierrors.Reason.INVALID, f"JSON patch test failed at {path!r}")
        else:
            raise apierrors.bad_request(f"unsupported JSON patch operation {kind!r}")
    except (KeyError, IndexError, ValueError, TypeError) as err:
        raise apierrors.bad_request(f"JSON patch {kind} at {path!r} failed: {err}") from err


def json_patch(target: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply RFC 6902 operations (add, replace, remove, test) to a copy of ``target``."""
    doc = copy.deepcopy(target)
    for op in ops:
        _apply_op(doc, op)
    return doc


def apply_patch(target: dict[str, Any], body: Any, patch_type: PatchType) -> dict[str, Any]:
    """Apply ``body`` of ``patch_type`` to ``target``; returns a new object."""
    if patch_type is PatchType.JSON:
        if not isinstance(body, list):
            raise apierrors.bad_request("a JSON patch must be a list of operations")
        return json_patch(target, body)
    if not isinstance(body, dict):
        raise apierrors.bad_request("a merge patch must be a JSON object")
    return merge_patch(target, body)
