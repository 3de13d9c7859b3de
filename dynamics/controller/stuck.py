"""Stuck stages: pods that cannot start do not fail a Job, so the controller fails them. Pure.

A Job or PyTorchJob whose pods sit in ImagePullBackOff, CreateContainerConfigError (a missing
Secret), Unschedulable, or are refused by admission stays "running" forever. The shell reads the
running stage's workload, its pods and the Events about them; :func:`stuck_signal` decides whether
the stage is stuck *now*, and :func:`stuck_reason` whether it has been stuck for
``kubernetes.stuckAfterSeconds``. The signals, as the real components emit them:

- **Refusals** (quota, LimitRange, Pod Security, a missing ServiceAccount, a webhook): the creating
  controller records a Warning Event on the workload and retries. kube-controller-manager's Job
  controller uses reason ``FailedCreate`` (kubernetes ``pkg/controller/controller_utils.go``,
  ``FailedCreatePodReason``, v1.29-v1.35); the Kubeflow training operator uses ``FailedCreatePod``
  (kubeflow/training-operator v1.9 ``pkg/controller.v1/control/pod_control.go``). Both write
  ``Error creating: <API error>``. client-go's event correlator folds repeats into one Event
  (``count`` +1, ``lastTimestamp`` moved; ``tools/record/events_cache.go``), and its spam filter
  lets one Event per object through every 5 minutes once a burst of 25 is spent. So a refusal is
  *current* only while its ``lastTimestamp`` is recent (:data:`REFUSAL_RECENT_S`) and no pod of
  the workload was created after it; Events are matched by the workload's uid, never its name (a
  cancelled Job of the same name leaves its Events behind for an hour).
- **Unschedulable pods**: the scheduler sets ``PodScheduled=False`` with reason ``Unschedulable``.
  While an autoscaler is adding nodes for the pod, it is waiting, not stuck: cluster-autoscaler
  records ``TriggeredScaleUp`` on the pod (and ``NotTriggerScaleUp`` when a new node would not help;
  kubernetes/autoscaler ``cluster-autoscaler/core/scaleup``), Karpenter records ``Nominated``
  (kubernetes-sigs/karpenter ``pkg/controllers/provisioning/scheduling/events.go``).
- **Container waiting reasons** that do not resolve themselves (image pulls, a missing Secret).

An Indexed Job whose pods run independently is not stuck while it makes progress (a pod running, or
one that finished since the trouble began): capacity for fewer pods than its parallelism is slow,
not stuck. The trainer is a gang (every rank must join the rendezvous), so one pod that cannot start
stalls all of it. Refusals by Pod Security admission fail at once: they repeat until someone changes
the namespace or the operator.

Event timestamps: core/v1 Events written by client-go's legacy recorder carry ``firstTimestamp``,
``lastTimestamp`` and ``count``; Events written through events.k8s.io/v1 (the scheduler) carry
``eventTime`` and ``series.{count,lastObservedTime}`` with null legacy timestamps. :func:`event_times`
reads both.
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
# Reasons of the refusal Events the creating controllers record (see the module docstring).
JOB_FAILED_CREATE = "FailedCreate"
OPERATOR_FAILED_CREATE = "FailedCreatePod"
REFUSAL_REASONS = frozenset({JOB_FAILED_CREATE, OPERATOR_FAILED_CREATE})
UNSCHEDULABLE = ("PodScheduled", "False", "Unschedulable")
POD_SECURITY_REFUSAL = "violates PodSecurity"
# Autoscaler Events on a pending pod: a scale-up for it is under way, or none will help.
SCALE_UP_UNDER_WAY = frozenset({"TriggeredScaleUp", "Nominated"})
SCALE_UP_DECLINED = "NotTriggerScaleUp"
# A refusal Event not seen again for this long has stopped: the creating controller retries within
# a minute, and client-go's spam filter lets one Event per object through every 300 s.
REFUSAL_RECENT_S = 600
# cluster-autoscaler repeats TriggeredScaleUp while the pod stays pending; older means it gave up.
SCALE_UP_RECENT_S = 600


@dataclass(frozen=True)
class Stuck:
    """The oldest sign that a stage's pods cannot start."""

    reason: str  # ImagePullBackOff, Unschedulable, FailedCreate, FailedCreatePod, ...
    message: str
    since: dt.datetime
    pod: str | None = None
    permanent: bool = False  # refused by Pod Security admission: waiting cannot help


@dataclass(frozen=True)
class EventTimes:
    """When an Event was first and last seen, and how often (both Event API shapes)."""

    first: dt.datetime
    last: dt.datetime
    count: int


def parse_time(text: str | None) -> dt.datetime | None:
    """An RFC 3339 timestamp as the API writes it, or None."""
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def event_times(event: Obj) -> EventTimes | None:
    """First/last occurrence and count of a core/v1 Event, legacy or events.k8s.io-shaped."""
    series = event.get("series") or {}
    first = parse_time(event.get("firstTimestamp")) or parse_time(event.get("eventTime"))
    last = (parse_time(series.get("lastObservedTime")) or parse_time(event.get("lastTimestamp"))
            or parse_time(event.get("eventTime")) or first)
    if first is None or last is None:
        return None
    count = int(series.get("count") or event.get("count") or 1)
    return EventTimes(first, max(first, last), count)


def _uid(obj: Obj) -> str | None:
    return (obj.get("metadata") or {}).get("uid")


def owned_pods(workload: Obj, pods: Sequence[Obj]) -> list[Obj]:
    """The pods this workload object created (by owner uid: a deleted namesake's pods are not)."""
    uid = _uid(workload)
    return [p for p in pods if any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])]


def _about(events: Sequence[Obj], uid: str | None) -> list[Obj]:
    return [e for e in events if uid is not None and (e.get("involvedObject") or {}).get("uid") == uid]


def _created(pod: Obj) -> dt.datetime | None:
    return parse_time(pod["metadata"].get("creationTimestamp"))


def _condition(pod: Obj, kind: str) -> Obj | None:
    return next((c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") == kind), None)


def unschedulable(pod: Obj) -> bool:
    """The scheduler could not place ``pod`` (``PodScheduled=False``, reason ``Unschedulable``)."""
    cond = _condition(pod, "PodScheduled")
    return cond is not None and (cond.get("type"), cond.get("status"), cond.get("reason")) == UNSCHEDULABLE


def _scheduled_at(pod: Obj) -> dt.datetime | None:
    cond = _condition(pod, "PodScheduled")
    if cond is not None and cond.get("status") == "True":
        return parse_time(cond.get("lastTransitionTime"))
    return None


@dataclass(frozen=True)
class _Scene:
    """What one check sees: the workload's own pods, Events about it and about its pods, and now."""

    pods: Sequence[Obj]
    workload_events: Sequence[Obj]
    pod_events: Sequence[Obj]
    now: dt.datetime


def _refusal(scene: _Scene) -> Stuck | None:
    """The refusal going on now, from its first Event of this episode; None when none is current."""
    newest_pod = max((t for t in map(_created, scene.pods) if t is not None), default=None)
    current: list[tuple[EventTimes, Obj]] = []
    for event in scene.workload_events:
        times = event_times(event)
        if event.get("type") != "Warning" or event.get("reason") not in REFUSAL_REASONS or times is None:
            continue
        if (scene.now - times.last).total_seconds() > REFUSAL_RECENT_S:
            continue  # not seen for a while: it stopped
        if newest_pod is not None and newest_pod > times.last:
            continue  # a pod was created after it: creation works again
        current.append((times, event))
    if not current:
        return None
    times, event = max(current, key=lambda te: te[0].last)
    # A folded Event keeps its firstTimestamp across episodes: this one began after the last pod.
    since = min(t.first for t, _ in current)
    since = max(since, newest_pod) if newest_pod is not None else since
    message = str(event.get("message") or "")
    return Stuck(str(event["reason"]), clip(message), since, permanent=POD_SECURITY_REFUSAL in message)


def _scale_up_under_way(pod: Obj, scene: _Scene) -> bool:
    """An autoscaler is adding a node for this pod now (its latest verdict says so, recently)."""
    verdicts = []
    for event in _about(scene.pod_events, _uid(pod)):
        times = event_times(event)
        if times is not None and event.get("reason") in (*SCALE_UP_UNDER_WAY, SCALE_UP_DECLINED):
            verdicts.append((times.last, event.get("reason")))
    if not verdicts:
        return False
    last, reason = max(verdicts, key=lambda v: v[0])
    return reason in SCALE_UP_UNDER_WAY and (scene.now - last).total_seconds() <= SCALE_UP_RECENT_S


def _pod_signals(pod: Obj, scene: _Scene) -> list[Stuck]:
    meta, status = pod["metadata"], pod.get("status") or {}
    created = _created(pod) or scene.now
    out = []
    for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_WAITING:
            message = f'container "{cs.get("name")}": {waiting.get("message") or waiting["reason"]}'
            since = max(created, _scheduled_at(pod) or created)  # pulls start once the pod is placed
            out.append(Stuck(waiting["reason"], clip(message), since, meta["name"]))
    cond = _condition(pod, "PodScheduled")
    if cond is not None and unschedulable(pod) and not _scale_up_under_way(pod, scene):
        since = parse_time(cond.get("lastTransitionTime")) or created
        out.append(Stuck("Unschedulable", clip(cond.get("message") or "no node fits"), since, meta["name"]))
    return out


def _progressing(scene: _Scene, since: dt.datetime) -> bool:
    """A pod of the workload runs, or one finished after ``since``: the stage moves on."""
    for pod in scene.pods:
        status = pod.get("status") or {}
        if status.get("phase") == "Running":
            return True
        for cs in status.get("containerStatuses") or []:
            finished = parse_time(((cs.get("state") or {}).get("terminated") or {}).get("finishedAt"))
            if status.get("phase") == "Succeeded" and finished is not None and finished >= since:
                return True
    return False


def stuck_signal(workload: Obj, pods: Sequence[Obj], events: Sequence[Obj], now: dt.datetime, *,
                 gang: bool) -> Stuck | None:
    """What keeps a running stage's pods from starting now, or None.

    ``pods``: the stage's pods (only those the workload owns count); ``events``: Events about the
    workload and about its pods (only the workload's uid and its pods' uids count); ``gang``: every
    pod must run for any progress (the trainer). A permanent refusal comes first, then the oldest."""
    mine = owned_pods(workload, pods)
    pod_uids = {_uid(p) for p in mine}
    scene = _Scene(mine, _about(events, _uid(workload)),
                   [e for e in events if (e.get("involvedObject") or {}).get("uid") in pod_uids], now)
    signals = [s for p in mine for s in _pod_signals(p, scene)]
    if (refusal := _refusal(scene)) is not None:
        signals.append(refusal)
    if not signals:
        return None
    permanent = [s for s in signals if s.permanent]
    if permanent:
        return permanent[0]
    oldest = min(signals, key=lambda s: s.since)
    capacity = oldest.reason in ("Unschedulable", *REFUSAL_REASONS)
    if not gang and capacity and _progressing(scene, oldest.since):
        # Independent pods: fewer of them fit than asked for, and those that fit make progress.
        rest = [s for s in signals if s.reason not in ("Unschedulable", *REFUSAL_REASONS)]
        return min(rest, key=lambda s: s.since) if rest else None
    return oldest


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


def controller_trouble(job: Obj | None, pods: Sequence[Obj], events: Sequence[Obj], now: dt.datetime) -> str | None:
    """Why a run's controller is not running, or None: its Job is gone or failed, or its pod cannot
    start (a LimitRange minimum, a missing ``dynamics`` ServiceAccount, an image pull: the Job
    controller's FailedCreate Event or the pod's state). Nobody else watches the controller, so
    ``dynamics status`` asks this while the run is not finished."""
    if job is None:
        return ("its controller Job does not exist (deleted by hand, or removed by its TTL): resubmit the run "
                "(dynamics-submit SPEC --replace; finished stages are reused)")
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Failed" and cond.get("status") == "True":
            return f"its controller Job failed: {cond.get('reason')}: {cond.get('message')}"
    signal = stuck_signal(job, pods, events, now, gang=True)
    if signal is None:
        return None
    where = f"pod {signal.pod}: " if signal.pod else ""
    return f"its controller pod cannot start (for {int((now - signal.since).total_seconds())}s): " \
           f"{where}{signal.reason}: {signal.message}"
