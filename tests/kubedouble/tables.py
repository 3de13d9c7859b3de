"""``meta.k8s.io/v1`` Table responses (what ``kubectl get`` asks for to print columns).

Every resource gets Name and Age; Events get kube-apiserver's own columns (Last Seen, Type, Reason,
Object, Message), so that ``kubectl get events`` reads as it does against a real cluster.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

Obj = dict[str, Any]

_COLUMNS = [
    {"name": "Name", "type": "string", "format": "name", "description": "Name of the object", "priority": 0},
    {"name": "Age", "type": "string", "format": "", "description": "Time since creation", "priority": 0},
]


_EVENT_COLUMNS = [
    {"name": "Last Seen", "type": "string", "format": "", "description": "Time of the last occurrence", "priority": 0},
    {"name": "Type", "type": "string", "format": "", "description": "Normal or Warning", "priority": 0},
    {"name": "Reason", "type": "string", "format": "", "description": "Why the event happened", "priority": 0},
    {"name": "Object", "type": "string", "format": "", "description": "The object it is about", "priority": 0},
    {"name": "Message", "type": "string", "format": "", "description": "What happened", "priority": 0},
    {"name": "Name", "type": "string", "format": "name", "description": "Name of the object", "priority": 1},
]


def wants_table(accept: str) -> bool:
    """Whether the ``Accept`` header asks for a Table (kubectl's human-readable output does)."""
    return "as=Table" in accept


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    try:  # RFC 3339: ...Z as the server writes it, or ...+00:00 as some clients send it
        created = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    if created.tzinfo is None:
        created = created.replace(tzinfo=dt.UTC)
    seconds = int((dt.datetime.now(dt.UTC) - created).total_seconds())
    if seconds < 120:
        return f"{max(seconds, 0)}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def _row_object(obj: Obj, include: str) -> Obj | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }


def _event_cells(event: Obj) -> list[str]:
    involved = event.get("involvedObject") or {}
    when = event.get("lastTimestamp") or event.get("metadata", {}).get("creationTimestamp")
    return [
        _age(when),
        event.get("type", ""),
        event.get("reason", ""),
        f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
        event.get("message", ""),
        event.get("metadata", {}).get("name", ""),
    ]


def _cells(obj: Obj) -> list[str]:
    if obj.get("kind") == "Event":
        return _event_cells(obj)
    meta = obj.get("metadata", {})
    return [meta.get("name", ""), _age(meta.get("creationTimestamp"))]


def to_table(items: list[Obj], resource_version: str, query: dict[str, str], kind: str = "") -> Obj:
    """A Table of ``kind`` objects (Name and Age, or the Event columns); ``includeObject`` picks what
    each row embeds."""
    include = query.get("includeObject", "Metadata")
    rows = []
    for obj in items:
        row: Obj = {"cells": _cells(obj)}
        embedded = _row_object(obj, include)
        if embedded is not None:
            row["object"] = embedded
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": _EVENT_COLUMNS if kind == "Event" else _COLUMNS,
        "rows": rows,
    }
