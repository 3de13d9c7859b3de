"""``meta.k8s.io/v1`` Table responses (what ``kubectl get`` asks for to print columns)."""

from __future__ import annotations

import datetime as dt
from typing import Any

Obj = dict[str, Any]

_COLUMNS = [
    {"name": "Name", "type": "string", "format": "name", "description": "Name of the object", "priority": 0},
    {"name": "Age", "type": "string", "format": "", "description": "Time since creation", "priority": 0},
]


def wants_table(accept: str) -> bool:
    """Whether the ``Accept`` header asks for a Table (kubectl's human-readable output does)."""
    return "as=Table" in accept


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    created = dt.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
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


def to_table(items: list[Obj], resource_version: str, query: dict[str, str]) -> Obj:
    """A Table with Name and Age columns; ``includeObject`` picks what each row embeds."""
    include = query.get("includeObject", "Metadata")
    rows = []
    for obj in items:
        meta = obj.get("metadata", {})
        row: Obj = {"cells": [meta.get("name", ""), _age(meta.get("creationTimestamp"))]}
        embedded = _row_object(obj, include)
        if embedded is not None:
            row["object"] = embedded
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": _COLUMNS,
        "rows": rows,
    }
