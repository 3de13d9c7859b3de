"""Stuck stages: pods that cannot start do not fail a Job, so the controller fails them. Pure.

A Job or PyTorchJob whose pods sit in ImagePullBackOff, CreateContainerConfigError (a missing
Secret), Unschedulable, or are refused by admission (FailedCreate) stays "running" forever. The
shell reads the running stage's pods and the Warning Events on its workload; :func:`stuck_signal`
picks the oldest sign of trouble and :func:`stuck_reason` says when it has lasted too long
(``kubernetes.stuckAfterSeconds``). Refusals by Pod Security admission fail at once: the pods will
be refused until someone changes the namespace or the operator.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from dynamics.controller.state import Obj, clip

# Container waiting reasons that do not resolve themselves.
STUCK_WAITING = frozenset(
    {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError"}
)
FAILED_CREATE = "FailedCreate"
UNSCHEDULABLE = ("PodScheduled", "False", "Unschedulable")
POD_SECURITY_REFUSAL = "violates PodSecurity"


@dataclass(frozen=True)
class Stuck:
    """The oldest sign that a stage's pods cannot start."""

    reason: str  # ImagePullBackOff, Unschedulable, FailedCreate, ...
    message: str
    since: dt.datetime
    pod: str | None = None
    permanent: bool = False  # refused by admission: waiting cannot help


def parse_time(text: str | None) -> dt.datetime | None:
    """An RFC 3339 timestamp as the API writes it, or None."""
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _pod_signals(pod: Obj) -> list[Stuck]:
    meta, status = pod["metadata"], pod.get("status") or {}
    created = parse_time(meta.get("creationTimestamp")) or dt.datetime.now(dt.UTC)
    out = []
    for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_WAITING:
            message = f'container "{cs.get("name")}": {waiting.get("message") or waiting["reason"]}'
            out.append(Stuck(waiting["reason"], clip(message), created, meta["name"]))
    for cond in status.get("conditions") or []:
        if (cond.get("type"), cond.get("status"), cond.get("reason")) == UNSCHEDULABLE:
            since = parse_time(cond.get("lastTransitionTime")) or created
            out.append(Stuck("Unschedulable", clip(cond.get("message") or "no node fits"), since, meta["name"]))
    return out


def _event_signals(events: Sequence[Obj]) -> list[Stuck]:
    out = []
    for event in events:
        if event.get("type") != "Warning" or event.get("reason") != FAILED_CREATE:
            continue
        since = parse_time(event.get("firstTimestamp") or event.get("eventTime")) or dt.datetime.now(dt.UTC)
        message = str(event.get("message") or "")
        out.append(Stuck(FAILED_CREATE, clip(message), since, permanent=POD_SECURITY_REFUSAL in message))
    return out


def stuck_signal(pods: Sequence[Obj], events: Sequence[Obj]) -> Stuck | None:
    """The oldest sign of trouble among a running stage's pods and its workload's Warning Events
    (a permanent one first); None when nothing is stuck. A running pod clears nothing: one pod
    stuck is enough to hold a rendezvous or an index forever."""
    signals = _event_signals(events) + [s for p in pods for s in _pod_signals(p)]
    if not signals:
        return None
    return min(signals, key=lambda s: (not s.permanent, s.since))


def stuck_reason(signal: Stuck | None, now: dt.datetime, deadline_s: int) -> str | None:
    """The stage's failure reason when ``signal`` has lasted ``deadline_s`` (or is permanent), else None."""
    if signal is None:
        return None
    waited = (now - signal.since).total_seconds()
    if not signal.permanent and waited < deadline_s:
        return None
    where = f"pod {signal.pod}: " if signal.pod else ""
    how_long = "refused by admission" if signal.permanent else f"stuck for {int(waited)}s"
    return f"{how_long}: {where}{signal.reason}: {signal.message}"
