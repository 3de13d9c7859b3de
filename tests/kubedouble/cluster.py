"""Test-side helpers that play the parts of a cluster the API double does not run.

The double stores objects but runs no controllers: a test plays the Job controller, the Kubeflow
training operator, the kubelet (pod phases, logs) and the node inventory through :class:`Cluster`.
Status shapes follow what those components write, each from its source:

- Job conditions and reasons: kube-controller-manager's Job controller, kubernetes
  ``pkg/controller/job/job_controller.go`` (v1.31-v1.35: ``SuccessCriteriaMet`` then ``Complete`` with
  reason ``CompletionsReached`` "Reached expected number of succeeded pods"; ``FailureTarget`` then
  ``Failed`` with ``BackoffLimitExceeded`` "Job has reached the specified backoff limit" or
  ``FailedIndexes`` "Job has failed indexes"; v1.29-v1.30 write ``Complete``/``Failed`` without the
  interim conditions, which the controller does not read). ``completedIndexes``/``failedIndexes`` use
  the interval format of ``pkg/controller/job/indexed_job_utils.go``.
- PyTorchJob conditions: training-operator v1.9 ``pkg/util/status.go`` and
  ``pkg/controller.v1/pytorch/pytorchjob_controller.go`` (``Created`` "PyTorchJob NAME is created.",
  ``Running``, ``Succeeded`` "... is successfully completed.", ``Failed`` "... is failed because N
  Worker replica(s) failed."), ``replicaStatuses`` recounted from the pods.
- Pod phases and container states: the kubelet (``pkg/kubelet/kubelet_pods.go``: ``waiting`` reason
  ``ContainerCreating`` before start, ``terminated`` with ``exitCode`` and ``reason`` ``Completed``,
  ``Error`` or ``OOMKilled``).
- Refusal, scheduler and autoscaler Events: see ``events.py``.
- TTL deletion: the TTL-after-finished controller deletes a finished Job with foreground propagation
  (``pkg/controller/ttlafterfinished/ttlafterfinished_controller.go``): :meth:`Cluster.expire`.
"""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from typing import Any

from . import events as recorder
from .apierrors import StatusError
from .operator import refused, with_init_container
from .resources import EVENTS, JOBS, NODES, PODS, PYTORCHJOBS, ResourceType
from .store import Obj, Propagation, Store, now_rfc3339

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"
JOB_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
KF_JOB_NAME = "training.kubeflow.org/job-name"
KF_REPLICA_TYPE = "training.kubeflow.org/replica-type"
KF_REPLICA_INDEX = "training.kubeflow.org/replica-index"
KF_OPERATOR = "training.kubeflow.org/operator-name"
GPU = "nvidia.com/gpu"


def compress_indexes(indexes: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"`` (the Job status interval format)."""
    out: list[str] = []
    for i in sorted(set(indexes)):
        if out and "-" in out[-1] and int(out[-1].split("-")[1]) == i - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{i}"
        elif out and "-" not in out[-1] and int(out[-1]) == i - 1:
            out[-1] = f"{out[-1]}-{i}"
        else:
            out.append(str(i))
    return ",".join(out)


def _condition(kind: str, status: bool, reason: str = "", message: str = "") -> dict[str, Any]:
    now = now_rfc3339()
    return {
        "type": kind,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
        "lastProbeTime": now,
        "lastTransitionTime": now,
    }


def _owner_ref(obj: Obj) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


class Cluster:
    """Plays the job controller, the training operator, the kubelet and the nodes for one double."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # The operator's init-container template file text (None: v1.9's built-in alpine one).
        self.pytorch_init_container: str | None = None

    # --- nodes ---
    def add_node(self, name: str, *, gpus: int = 0, labels: dict[str, str] | None = None) -> Obj:
        """Create a Node with ``gpus`` ``nvidia.com/gpu`` capacity."""
        resources = {"cpu": "16", "memory": "128Gi", **({GPU: str(gpus)} if gpus else {})}
        node = self.store.create(NODES, None, {"metadata": {"name": name, "labels": labels or {}}})
        node["status"] = {
            "capacity": resources,
            "allocatable": dict(resources),
            "conditions": [{"type": "Ready", "status": "True"}],
        }
        return self.store.replace(NODES, None, name, node, status=True)

    # --- pods and logs ---
    def create_pod(
        self,
        namespace: str,
        name: str,
        *,
        owner: Obj | None = None,
        labels: dict[str, str] | None = None,
        spec: dict[str, Any] | None = None,
        phase: str = "Running",
        log: str | None = None,
    ) -> Obj:
        """Create a pod (owned by ``owner``), move it to ``phase`` and give its first container ``log``."""
        meta: dict[str, Any] = {"name": name, "labels": labels or {}}
        if owner is not None:
            meta["ownerReferences"] = [_owner_ref(owner)]
        spec = copy.deepcopy(spec) if spec else {"containers": [{"name": "main", "image": "busybox"}]}
        self.store.create(PODS, namespace, {"metadata": meta, "spec": spec})
        self.set_pod_phase(namespace, name, phase)
        if log is not None:
            self.set_log(namespace, name, log)
        return self.store.get(PODS, namespace, name)

    def set_pod_phase(
        self, namespace: str, name: str, phase: str, *, exit_code: int | None = None, reason: str | None = None
    ) -> Obj:
        """Write ``status.phase`` and matching container states (terminated for Succeeded/Failed, with
        ``exit_code`` and the kubelet's ``reason``, e.g. 137 and ``OOMKilled``)."""
        pod = self.store.get(PODS, namespace, name)
        statuses = []
        for c in pod["spec"].get("containers", []):
            if phase in ("Succeeded", "Failed"):
                code = exit_code if exit_code is not None else (0 if phase == "Succeeded" else 1)
                why = reason or ("Completed" if code == 0 else "Error")
                state = {"terminated": {"exitCode": code, "reason": why, "finishedAt": now_rfc3339()}}
            elif phase == "Running":
                state = {"running": {"startedAt": now_rfc3339()}}
            else:
                state = {"waiting": {"reason": "ContainerCreating"}}
            image = c.get("image", "")
            statuses.append(
                {
                    "name": c["name"],
                    "image": image,
                    "imageID": f"{image}@sha256:{'0' * 64}",
                    "ready": phase == "Running",
                    "restartCount": 0,
                    "state": state,
                }
            )
        pod["status"] = {"phase": phase, "containerStatuses": statuses, "startTime": now_rfc3339()}
        return self.store.replace(PODS, namespace, name, pod, status=True)

    def set_log(
        self, namespace: str, pod: str, text: str, *, container: str | None = None, append: bool = False
    ) -> None:
        """Set (or append to) a container's log; the first container when none is named."""
        if container is None:
            container = self.store.get(PODS, namespace, pod)["spec"]["containers"][0]["name"]
        self.store.set_log(namespace, pod, container, text, append=append)

    def events(self, namespace: str, involved: str | None = None) -> list[Obj]:
        """Events in ``namespace`` (about the object named ``involved``), oldest first."""
        items, _ = self.store.list(
            EVENTS,
            namespace,
            lambda o: involved is None or (o.get("involvedObject") or {}).get("name") == involved,
        )
        return sorted(items, key=lambda e: int(e["metadata"]["resourceVersion"]))

    def pods(self, namespace: str, **labels: str) -> list[Obj]:
        """Pods in ``namespace`` carrying all of ``labels``."""
        items, _ = self.store.list(
            PODS,
            namespace,
            lambda o: all((o["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items()),
        )
        return items

    def expire(self, namespace: str, name: str) -> None:
        """The TTL-after-finished controller's delete of a finished Job (foreground propagation)."""
        self.store.delete(JOBS, namespace, name, Propagation.FOREGROUND)

    # --- what the scheduler, the autoscaler and the creating controllers say ---
    def refuse(self, rt: ResourceType, namespace: str, name: str, message: str,
               at: dt.datetime | None = None) -> Obj:
        """The creating controller's retry of a pod create, refused again (``message``: the API's
        error, e.g. a ResourceQuota's 403 text)."""
        return recorder.refusal(self.store, self.store.get(rt, namespace, name), message, at)

    def unschedulable(self, namespace: str, pod: str, message: str, at: dt.datetime) -> Obj:
        """The scheduler cannot place ``pod``: PodScheduled=False/Unschedulable since ``at``, and its
        FailedScheduling Event (events.k8s.io/v1-shaped; kubernetes pkg/scheduler/schedule_one.go)."""
        obj = self.store.get(PODS, namespace, pod)
        stamp = recorder.rfc3339(at)
        obj["status"] = {"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
            "lastProbeTime": None, "lastTransitionTime": stamp}]}
        obj = self.store.replace(PODS, namespace, pod, obj, status=True)
        recorder.record_series(self.store, obj, type_="Warning", reason="FailedScheduling", message=message,
                               component=recorder.SCHEDULER, first=at, last=at, count=1)
        return obj

    def autoscaler(self, namespace: str, pod: str, *, scale_up: bool, at: dt.datetime) -> Obj:
        """cluster-autoscaler's verdict on a pending pod: TriggeredScaleUp or NotTriggerScaleUp."""
        obj = self.store.get(PODS, namespace, pod)
        if scale_up:
            reason, message = "TriggeredScaleUp", "pod triggered scale-up: [{gpu-pool 0->2 (max: 4)}]"
        else:
            reason, message = ("NotTriggerScaleUp",
                               "pod didn't trigger scale-up: 1 max node group size reached")
        return recorder.record(self.store, obj, type_="Normal", reason=reason, message=message,
                               component=recorder.CLUSTER_AUTOSCALER, at=at)

    # --- batch/v1 Jobs (the job controller's part) ---
    def job(self, namespace: str, name: str) -> Obj:
        """The Job as stored."""
        return self.store.get(JOBS, namespace, name)

    def start_job(self, namespace: str, name: str, *, count: int | None = None, log: str | None = None) -> list[Obj]:
        """Create the Job's pods (Running; one per completion index) and mark it active."""
        job = self.job(namespace, name)
        spec = job["spec"]
        indexed = spec.get("completionMode") == "Indexed"
        count = count if count is not None else int(spec.get("completions") or 1)
        template = spec.get("template", {})
        pods = []
        for i in range(count):
            labels = dict(template.get("metadata", {}).get("labels") or {})
            pod_name = f"{name}-{i}-{uuid.uuid4().hex[:5]}" if indexed else f"{name}-{uuid.uuid4().hex[:5]}"
            if indexed:
                labels[JOB_INDEX_LABEL] = str(i)
            pod = self._controller_creates(job, pod_name, labels, template.get("spec"), log)
            pods += [pod] if pod is not None else []
        self._write_status(JOBS, namespace, name, {"startTime": now_rfc3339(), "active": len(pods), "ready": len(pods)})
        return pods

    def _controller_creates(self, owner: Obj, name: str, labels: dict[str, str], spec: Obj | None,
                            log: str | None) -> Obj | None:
        """A controller's pod create: a pod refused by admission becomes a FailedCreate Event instead."""
        namespace = owner["metadata"]["namespace"]
        try:
            return self.create_pod(namespace, name, owner=owner, labels=labels, spec=spec, log=log)
        except StatusError as err:
            if not refused(err):
                raise
            recorder.refusal(self.store, owner, err.message)
            return None

    def progress_job(self, namespace: str, name: str, succeeded: list[int]) -> Obj:
        """Record some completed indexes of a still-running Job."""
        job = self.job(namespace, name)
        status = dict(job.get("status") or {})
        status.update({"succeeded": len(succeeded), "completedIndexes": compress_indexes(succeeded)})
        status["active"] = max(int(job["spec"].get("completions") or 1) - len(succeeded), 0)
        return self._write_status(JOBS, namespace, name, status)

    def succeed_job(self, namespace: str, name: str) -> Obj:
        """Finish a Job successfully: every index completed, ``Complete=True``; its pods Succeeded."""
        job = self.job(namespace, name)
        completions = int(job["spec"].get("completions") or 1)
        status = dict(job.get("status") or {})
        status.setdefault("startTime", now_rfc3339())
        status.update(
            {
                "succeeded": completions,
                "active": 0,
                "ready": 0,
                "terminating": 0,
                "completionTime": now_rfc3339(),
                "uncountedTerminatedPods": {},
                "conditions": [
                    _condition(
                        "SuccessCriteriaMet",
                        True,
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                    ),
                    _condition("Complete", True, "CompletionsReached", "Reached expected number of succeeded pods"),
                ],
            }
        )
        if job["spec"].get("completionMode") == "Indexed":
            status["completedIndexes"] = compress_indexes(list(range(completions)))
        self._finish_pods(namespace, name, failed=set())
        return self._write_status(JOBS, namespace, name, status)

    def fail_job(
        self,
        namespace: str,
        name: str,
        *,
        failed_indexes: list[int] | None = None,
        exit_code: int | None = None,
        reason: str | None = None,
    ) -> Obj:
        """Fail a Job: with ``failed_indexes`` as ``FailedIndexes`` (backoffLimitPerIndex), else backoff.

        Its failed pods' containers end with ``exit_code`` (default 1) and ``reason`` (default Error)."""
        job = self.job(namespace, name)
        completions = int(job["spec"].get("completions") or 1)
        status = dict(job.get("status") or {})
        status.setdefault("startTime", now_rfc3339())
        if failed_indexes:
            why, message = "FailedIndexes", "Job has failed indexes"
            done = [i for i in range(completions) if i not in failed_indexes]
            status.update(
                {
                    "failedIndexes": compress_indexes(failed_indexes),
                    "failed": len(failed_indexes),
                    "succeeded": len(done),
                    "completedIndexes": compress_indexes(done),
                }
            )
        else:
            why, message = "BackoffLimitExceeded", "Job has reached the specified backoff limit"
            status["failed"] = int(job["spec"].get("backoffLimit", 6)) + 1
        status.update(
            {
                "active": 0,
                "ready": 0,
                "terminating": 0,
                "conditions": [
                    _condition("FailureTarget", True, why, message),
                    _condition("Failed", True, why, message),
                ],
            }
        )
        failed = set(failed_indexes) if failed_indexes else None
        self._finish_pods(namespace, name, failed=failed, exit_code=exit_code, reason=reason)
        return self._write_status(JOBS, namespace, name, status)

    def _finish_pods(
        self,
        namespace: str,
        job: str,
        failed: set[int] | None,
        exit_code: int | None = None,
        reason: str | None = None,
    ) -> None:
        """Pods of failed indexes (all pods when ``failed`` is None) end Failed, the rest Succeeded.

        The Job's pods are found by its uid, as the job controller does: a deleted Job of the same
        name may leave pods that the garbage collector has not removed yet."""
        uid = self.job(namespace, job)["metadata"]["uid"]
        for pod in self.pods(namespace, **{JOB_UID_LABEL: uid}):
            index = pod["metadata"]["labels"].get(JOB_INDEX_LABEL)
            pod_name = pod["metadata"]["name"]
            if failed is None or (index is not None and int(index) in failed):
                self._end_pod(namespace, pod_name, "Failed", exit_code=exit_code, reason=reason)
            else:
                self._end_pod(namespace, pod_name, "Succeeded")

    def _end_pod(self, namespace: str, name: str, phase: str, **ended: Any) -> None:
        """Move a pod to a terminal phase unless it has been deleted meanwhile (garbage collection)."""
        try:
            self.set_pod_phase(namespace, name, phase, **ended)
        except StatusError as err:
            if err.code != 404:
                raise

    # --- kubeflow.org/v1 PyTorchJobs (the training operator's part) ---
    def pytorchjob(self, namespace: str, name: str) -> Obj:
        """The PyTorchJob as stored."""
        return self.store.get(PYTORCHJOBS, namespace, name)

    def start_pytorchjob(self, namespace: str, name: str, *, log: str | None = None) -> list[Obj]:
        """Create Master/Worker pods like the operator does and mark the job Running."""
        job = self.pytorchjob(namespace, name)
        pods, replica_statuses = [], {}
        for rtype, rspec in (job["spec"].get("pytorchReplicaSpecs") or {}).items():
            replicas = int(rspec.get("replicas", 1))
            template = rspec.get("template", {})
            for i in range(replicas):
                labels = dict(template.get("metadata", {}).get("labels") or {})
                labels.update(
                    {
                        KF_JOB_NAME: name,
                        KF_REPLICA_TYPE: rtype.lower(),
                        KF_REPLICA_INDEX: str(i),
                        KF_OPERATOR: "pytorchjob-controller",
                    }
                )
                spec = template.get("spec") or {}
                if rtype == "Worker" and "Master" in job["spec"]["pytorchReplicaSpecs"]:
                    spec = with_init_container(spec, self.pytorch_init_container, f"{name}-master-0")
                pod = self._controller_creates(job, f"{name}-{rtype.lower()}-{i}", labels, spec, log)
                pods += [pod] if pod is not None else []
            replica_statuses[rtype] = {"active": sum(p["metadata"]["name"].startswith(f"{name}-{rtype.lower()}-")
                                                     for p in pods)}
        self._write_status(
            PYTORCHJOBS,
            namespace,
            name,
            {
                "startTime": now_rfc3339(),
                "replicaStatuses": replica_statuses,
                "conditions": [
                    _condition("Created", True, "PyTorchJobCreated", f"PyTorchJob {name} is created."),
                    _condition("Running", True, "PyTorchJobRunning", f"PyTorchJob {name} is running."),
                ],
            },
        )
        return pods

    def finish_pytorchjob(
        self,
        namespace: str,
        name: str,
        *,
        succeeded: bool,
        message: str | None = None,
        exit_code: int | None = None,
        reason: str | None = None,
    ) -> Obj:
        """Write the operator's terminal condition: ``Succeeded`` or ``Failed`` (with ``message``; the
        pods' containers then end with ``exit_code`` and ``reason``)."""
        job = self.pytorchjob(namespace, name)
        if succeeded:
            final = _condition(
                "Succeeded",
                True,
                "PyTorchJobSucceeded",
                message or f"PyTorchJob {name} is successfully completed.",
            )
        else:
            final = _condition(
                "Failed",
                True,
                "PyTorchJobFailed",
                message or f"PyTorchJob {name} is failed because 1 Worker replica(s) failed.",
            )
        status = dict(job.get("status") or {})
        status["conditions"] = [
            _condition("Created", True, "PyTorchJobCreated", f"PyTorchJob {name} is created."),
            _condition("Running", False, "PyTorchJobRunning", f"PyTorchJob {name} is running."),
            final,
        ]
        status["completionTime"] = now_rfc3339()
        counts: dict[str, dict[str, int]] = {}
        for pod in self.pods(namespace, **{KF_JOB_NAME: name}):
            if succeeded:
                self._end_pod(namespace, pod["metadata"]["name"], "Succeeded")
            else:
                self._end_pod(namespace, pod["metadata"]["name"], "Failed", exit_code=exit_code, reason=reason)
            rtype = pod["metadata"]["labels"][KF_REPLICA_TYPE].capitalize()
            bucket = counts.setdefault(rtype, {})
            outcome = "succeeded" if succeeded else "failed"
            bucket[outcome] = bucket.get(outcome, 0) + 1
        # The operator recounts replicaStatuses from the pods on every sync (training-operator v1.9
        # pkg/controller.v1/common/job.go updateStatusSingle / status.go: active, succeeded, failed).
        status["replicaStatuses"] = {rtype: {"active": 0, **c} for rtype, c in counts.items()}
        return self._write_status(PYTORCHJOBS, namespace, name, status)

    def _write_status(self, rt: ResourceType, namespace: str, name: str, status: dict[str, Any]) -> Obj:
        obj = self.store.get(rt, namespace, name)
        obj["status"] = status
        return self.store.replace(rt, namespace, name, obj, status=True)
