"""Events as the real cluster components record them (test double).

Sources (each reason and field shape the double emits is one of these):

- kube-controller-manager's Job controller, on a refused pod create: Warning ``FailedCreate``,
  message ``Error creating: <API error>``, source component ``job-controller``
  (kubernetes ``pkg/controller/controller_utils.go`` ``FailedCreatePodReason``, v1.29-v1.35;
  the recorder is ``record.NewBroadcaster`` in ``pkg/controller/job/job_controller.go``).
- The Kubeflow training operator v1.9, on a refused pod create: Warning ``FailedCreatePod``, same
  message form, source component ``pytorchjob-controller``
  (kubeflow/training-operator v1.9 ``pkg/controller.v1/control/pod_control.go``; the recorder is
  controller-runtime's ``GetEventRecorderFor("pytorchjob-controller")``).
- client-go's legacy recorder folds a repeat of the same Event (same object, type, reason, message
  and source) into the existing object: ``count`` + 1 and ``lastTimestamp`` moved, ``firstTimestamp``
  kept (``tools/record/events_cache.go`` ``eventObserve``). Events are named
  ``<object name>.<hex unix nanoseconds>`` (``tools/record/event.go`` ``makeEvent``).
- cluster-autoscaler on a pending pod: Normal ``TriggeredScaleUp`` "pod triggered scale-up: [...]"
  or Normal ``NotTriggerScaleUp`` "pod didn't trigger scale-up: ..." with source component
  ``cluster-autoscaler`` (kubernetes/autoscaler ``cluster-autoscaler/core/scaleup/orchestrator``,
  ``processors/status/eventing_scale_up_processor.go``, 1.29-1.32).
- The scheduler writes through events.k8s.io/v1: in the core/v1 view such an Event has ``eventTime``
  and ``series`` and null ``firstTimestamp``/``lastTimestamp``, ``reportingComponent``
  ``default-scheduler`` (kubernetes ``pkg/scheduler/schedule_one.go`` ``FailedScheduling``;
  ``staging/src/k8s.io/client-go/tools/events``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from .resources import EVENTS
from .store import Obj, Store

JOB_CONTROLLER = "job-controller"
PYTORCHJOB_CONTROLLER = "pytorchjob-controller"
CLUSTER_AUTOSCALER = "cluster-autoscaler"
SCHEDULER = "default-scheduler"


def rfc3339(at: dt.datetime) -> str:
    """The API's second-resolution timestamp."""
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _involved(obj: Obj) -> dict[str, Any]:
    meta = obj["metadata"]
    return {"apiVersion": obj.get("apiVersion", "v1"), "kind": obj.get("kind", "Pod"), "name": meta["name"],
            "namespace": meta["namespace"], "uid": meta["uid"]}


def record(store: Store, about: Obj, *, type_: str, reason: str, message: str, component: str,
           at: dt.datetime | None = None) -> Obj:
    """Record an Event the way client-go's legacy recorder does: a repeat is folded into the
    existing Event (count + 1, lastTimestamp moved)."""
    at = at or dt.datetime.now(dt.UTC)
    namespace = about["metadata"]["namespace"]
    involved = _involved(about)
    existing, _ = store.list(EVENTS, namespace, lambda e: (
        e.get("involvedObject") == involved and e.get("type") == type_ and e.get("reason") == reason
        and e.get("message") == message and (e.get("source") or {}).get("component") == component))
    if existing:
        event = existing[0]
        event["count"] = int(event.get("count") or 1) + 1
        event["lastTimestamp"] = rfc3339(at)
        return store.replace(EVENTS, namespace, event["metadata"]["name"], event)
    nanos = int(at.timestamp() * 1e9)
    return store.create(EVENTS, namespace, {
        "metadata": {"name": f"{about['metadata']['name']}.{nanos:x}", "namespace": namespace},
        "involvedObject": involved, "type": type_, "reason": reason, "message": message,
        "source": {"component": component}, "reportingComponent": component, "reportingInstance": "",
        "firstTimestamp": rfc3339(at), "lastTimestamp": rfc3339(at), "count": 1,
    })


def record_series(store: Store, about: Obj, *, type_: str, reason: str, message: str, component: str,
                  first: dt.datetime, last: dt.datetime, count: int) -> Obj:
    """An Event written through events.k8s.io/v1 (the scheduler), as the core/v1 API shows it."""
    namespace = about["metadata"]["namespace"]
    micro = first.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return store.create(EVENTS, namespace, {
        "metadata": {"name": f"{about['metadata']['name']}.{int(first.timestamp() * 1e9):x}", "namespace": namespace},
        "involvedObject": _involved(about), "type": type_, "reason": reason, "message": message, "source": {},
        "reportingComponent": component, "reportingInstance": f"{component}-0", "action": "Scheduling",
        "eventTime": micro, "firstTimestamp": None, "lastTimestamp": None,
        "series": {"count": count, "lastObservedTime": last.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
    })


def refusal(store: Store, owner: Obj, api_message: str, at: dt.datetime | None = None) -> Obj:
    """The Warning Event the creating controller records when the API refuses a pod it creates."""
    job = owner["kind"] == "Job"
    return record(store, owner, type_="Warning", reason="FailedCreate" if job else "FailedCreatePod",
                  message=f"Error creating: {api_message}",
                  component=JOB_CONTROLLER if job else PYTORCHJOB_CONTROLLER, at=at)
