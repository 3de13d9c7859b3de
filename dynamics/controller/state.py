"""What the controller observes and records: stage and run phases, read from live objects. Pure.

A stage's state is read from its workload object (the stage's Job or PyTorchJob) the way the Job
controller and the Kubeflow training operator report it: Job conditions ``Complete``/``Failed`` with
``succeeded``/``failedIndexes``, PyTorchJob conditions ``Succeeded``/``Failed``. The run's state is
written to the run ConfigMap's ``status.json`` so that ``dynamics status`` and a restarted controller
see the same thing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from dynamics.constants import Stage

Obj = dict[str, Any]

KIND_JOB = "Job"
KIND_PYTORCHJOB = "PyTorchJob"
WORKLOAD_KINDS = (KIND_JOB, KIND_PYTORCHJOB)


class Phase(StrEnum):
    """Phase of a stage or of the whole run."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    @property
    def terminal(self) -> bool:
        """Succeeded or Failed: nothing will change any more."""
        return self in (Phase.SUCCEEDED, Phase.FAILED)


class JobCondition(StrEnum):
    """Terminal condition types of batch/v1 Jobs and Kubeflow PyTorchJobs."""

    COMPLETE = "Complete"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class StageState:
    """One stage as observed: phase, progress counts and, when failed, why."""

    stage: Stage
    phase: Phase = Phase.PENDING
    object: str | None = None  # "job/demo-embed"
    done: int = 0
    total: int = 0
    active: int = 0
    failed: int = 0
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-compatible dict (enum values as strings)."""
        out = asdict(self)
        out["stage"], out["phase"] = self.stage.value, self.phase.value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StageState:
        """Inverse of :meth:`to_json`."""
        return cls(
            stage=Stage(data["stage"]),
            phase=Phase(data.get("phase", Phase.PENDING)),
            object=data.get("object"),
            done=int(data.get("done", 0)),
            total=int(data.get("total", 0)),
            active=int(data.get("active", 0)),
            failed=int(data.get("failed", 0)),
            reason=data.get("reason"),
        )


@dataclass(frozen=True)
class RunStatus:
    """The run's status as recorded in the run ConfigMap (``status.json``)."""

    phase: Phase
    stage: Stage | None = None  # the current stage, or the one that failed
    reason: str | None = None
    stages: tuple[StageState, ...] = field(default_factory=tuple)

    def stage_state(self, stage: Stage) -> StageState | None:
        """The recorded state of ``stage``, if any."""
        return next((s for s in self.stages if s.stage is stage), None)

    def to_json(self) -> dict[str, Any]:
        """JSON-compatible dict."""
        return {
            "phase": self.phase.value,
            "stage": self.stage.value if self.stage else None,
            "reason": self.reason,
            "stages": [s.to_json() for s in self.stages],
        }

    def dumps(self) -> str:
        """The ``status.json`` text (stable key order, so unchanged status means unchanged text)."""
        return json.dumps(self.to_json(), indent=2, sort_keys=True)

    @classmethod
    def loads(cls, text: str | None) -> RunStatus | None:
        """Parse ``status.json``; None when absent or unreadable (the controller recomputes it)."""
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(
                phase=Phase(data["phase"]),
                stage=Stage(data["stage"]) if data.get("stage") else None,
                reason=data.get("reason"),
                stages=tuple(StageState.from_json(s) for s in data.get("stages", [])),
            )
        except (ValueError, KeyError, TypeError):
            return None


def object_ref(obj: Obj) -> str:
    """``job/demo-embed``-style reference, as kubectl prints it."""
    return f"{obj['kind'].lower()}/{obj['metadata']['name']}"


def _true_condition(obj: Obj, kinds: tuple[JobCondition, ...]) -> Obj | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") in kinds and cond.get("status") == "True":
            return cond
    return None


def _describe(cond: Obj) -> str:
    reason, message = cond.get("reason"), cond.get("message")
    return ": ".join(p for p in (reason, message) if p) or str(cond.get("type"))


def job_state(stage: Stage, job: Obj) -> StageState:
    """State of a stage run by a batch/v1 Job."""
    spec, status = job.get("spec") or {}, job.get("status") or {}
    total = int(spec.get("completions") or 1)
    done, active, failed = (int(status.get(k) or 0) for k in ("succeeded", "active", "failed"))
    common = {
        "stage": stage,
        "object": object_ref(job),
        "done": done,
        "total": total,
        "active": active,
        "failed": failed,
    }
    if _true_condition(job, (JobCondition.COMPLETE,)):
        return StageState(phase=Phase.SUCCEEDED, **common)
    if cond := _true_condition(job, (JobCondition.FAILED,)):
        reason = _describe(cond)
        if status.get("failedIndexes"):
            reason += f" (failed indexes: {status['failedIndexes']})"
        return StageState(phase=Phase.FAILED, reason=reason, **common)
    return StageState(phase=Phase.RUNNING, **common)


def pytorchjob_state(stage: Stage, job: Obj) -> StageState:
    """State of a stage run by a Kubeflow PyTorchJob (progress counts replicas)."""
    replica_specs = (job.get("spec") or {}).get("pytorchReplicaSpecs") or {}
    total = sum(int(r.get("replicas", 1)) for r in replica_specs.values())
    statuses = ((job.get("status") or {}).get("replicaStatuses") or {}).values()
    done, active, failed = (sum(int(s.get(k) or 0) for s in statuses) for k in ("succeeded", "active", "failed"))
    common = {"stage": stage, "object": object_ref(job), "total": total, "active": active, "failed": failed}
    if _true_condition(job, (JobCondition.SUCCEEDED,)):
        return StageState(phase=Phase.SUCCEEDED, done=max(done, total), **common)
    if cond := _true_condition(job, (JobCondition.FAILED,)):
        return StageState(phase=Phase.FAILED, done=done, reason=_describe(cond), **common)
    return StageState(phase=Phase.RUNNING, done=done, **common)


def workload_state(stage: Stage, obj: Obj) -> StageState:
    """State of ``stage`` read from its live workload object."""
    if obj.get("kind") == KIND_PYTORCHJOB:
        return pytorchjob_state(stage, obj)
    return job_state(stage, obj)
