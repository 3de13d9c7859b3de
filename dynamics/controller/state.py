"""What the controller observes and records: stage and run phases, read from live objects. Pure.

A stage's state is read from its workload object (the stage's Job or PyTorchJob) the way the Job
controller and the Kubeflow training operator report it: Job conditions ``Complete``/``Failed`` with
``succeeded``/``failedIndexes``, PyTorchJob conditions ``Succeeded``/``Failed``. The run's state is
written to the run ConfigMap's ``status.json`` so that ``dynamics status`` and a restarted controller
see the same thing.

When a stage fails, the shell also gathers the stage's failed pods (:func:`failed_pods` reads them
from pod objects, the shell adds the first one's log tail) and :func:`with_pod_failures` adds their
exit codes to the stage's one-line reason and keeps them, with the log tail, for the full report.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from dynamics.constants import Stage

Obj = dict[str, Any]

# A failed stage keeps this many failed pods (exit code, reason, ...) and log lines of the first one;
# log lines are clipped so that status.json stays small (it lives in the run ConfigMap).
MAX_FAILED_PODS = 3
LOG_TAIL_LINES = 10
MAX_TEXT_CHARS = 300
JOB_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"

KIND_JOB = "Job"
KIND_PYTORCHJOB = "PyTorchJob"
WORKLOAD_KINDS = (KIND_JOB, KIND_PYTORCHJOB)


class Phase(StrEnum):
    """Phase of a stage or of the whole run."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    UNKNOWN = "Unknown"  # the caller may not read the stage's workload (``dynamics status`` only)

    @property
    def terminal(self) -> bool:
        """Succeeded or Failed: nothing will change any more."""
        return self in (Phase.SUCCEEDED, Phase.FAILED)


class JobCondition(StrEnum):
    """Terminal condition types of batch/v1 Jobs and Kubeflow PyTorchJobs."""

    COMPLETE = "Complete"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


def clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis marks the cut)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class PodFailure:
    """A failed pod of a stage: which container ended how, and (first pod only) its last log lines."""

    pod: str
    container: str | None = None
    exit_code: int | None = None
    reason: str | None = None  # the container's terminated reason (OOMKilled, Error) or the pod's (Evicted)
    message: str | None = None
    log_tail: tuple[str, ...] = ()

    def summary(self) -> str:
        """``exit code 137 (OOMKilled)``, or the pod's reason when no container terminated."""
        if self.exit_code is None:
            return self.reason or "failed"
        return f"exit code {self.exit_code}" + (f" ({self.reason})" if self.reason else "")

    def to_json(self) -> dict[str, Any]:
        """JSON-compatible dict."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PodFailure:
        """Inverse of :meth:`to_json`."""
        code = data.get("exit_code")
        return cls(
            pod=str(data["pod"]),
            container=data.get("container"),
            exit_code=None if code is None else int(code),
            reason=data.get("reason"),
            message=data.get("message"),
            log_tail=tuple(str(line) for line in data.get("log_tail") or ()),
        )


@dataclass(frozen=True)
class StageState:
    """One stage as observed: phase, progress counts and, when failed, why (and its failed pods)."""

    stage: Stage
    phase: Phase = Phase.PENDING
    object: str | None = None  # "job/demo-embed"
    done: int = 0
    total: int = 0
    active: int = 0
    failed: int = 0
    reason: str | None = None
    pods: tuple[PodFailure, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON-compatible dict (enum values as strings)."""
        out = asdict(self)
        out["stage"], out["phase"] = self.stage.value, self.phase.value
        out["pods"] = [p.to_json() for p in self.pods]
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
            pods=tuple(PodFailure.from_json(p) for p in data.get("pods") or ()),
        )


@dataclass(frozen=True)
class RunStatus:
    """The run's status as recorded in the run ConfigMap (``status.json``)."""

    phase: Phase
    stage: Stage | None = None  # the current stage, or the one that failed
    reason: str | None = None
    stages: tuple[StageState, ...] = field(default_factory=tuple)
    spec_sha256: str | None = None  # of the spec text the controller started with (a change is refused)

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
            "specSha256": self.spec_sha256,
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
                spec_sha256=data.get("specSha256"),
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


# --- failed pods ---


def _failed_termination(container_status: Obj) -> Obj | None:
    """The container's non-zero termination: its current state, else the one before a restart."""
    for key in ("state", "lastState"):
        terminated = (container_status.get(key) or {}).get("terminated")
        if terminated and int(terminated.get("exitCode") or 0) != 0:
            return terminated
    return None


def _text(value: object) -> str | None:
    return clip(str(value).strip()) if value else None


def pod_failure(pod: Obj) -> PodFailure | None:
    """How ``pod`` failed (first container that exited non-zero, else the pod's reason); None if it did not."""
    name, status = pod["metadata"]["name"], pod.get("status") or {}
    if status.get("phase") == "Succeeded":
        return None
    for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        if (terminated := _failed_termination(cs)) is not None:
            return PodFailure(
                name,
                cs.get("name"),
                int(terminated["exitCode"]),
                _text(terminated.get("reason")),
                _text(terminated.get("message")),
            )
    if status.get("phase") == "Failed":
        return PodFailure(name, reason=_text(status.get("reason")), message=_text(status.get("message")))
    return None


def _pod_order(pod: Obj) -> tuple[int, str]:
    index = (pod["metadata"].get("labels") or {}).get(JOB_INDEX_LABEL, "")
    return (int(index) if index.isdigit() else -1), pod["metadata"]["name"]


def failed_pods(pods: Sequence[Obj]) -> list[PodFailure]:
    """The failures among a stage's pods, by completion index, then name."""
    return [f for f in (pod_failure(p) for p in sorted(pods, key=_pod_order)) if f is not None]


def log_tail(text: str, lines: int = LOG_TAIL_LINES) -> tuple[str, ...]:
    """The last ``lines`` non-empty lines of a log, each clipped."""
    kept = [line.rstrip() for line in text.splitlines() if line.strip()]
    return tuple(clip(line) for line in kept[-lines:]) if lines > 0 else ()


def pods_summary(failures: Sequence[PodFailure]) -> str:
    """``pod a: exit code 137 (OOMKilled)`` or ``pods a: ..., b: ... (5 failed pods)``."""
    shown = failures[:MAX_FAILED_PODS]
    parts = ", ".join(f"{f.pod}: {f.summary()}" for f in shown)
    more = f" ({len(failures)} failed pods)" if len(failures) > len(shown) else ""
    return f"{'pod' if len(shown) == 1 else 'pods'} {parts}{more}"


def with_pod_failures(state: StageState, failures: Sequence[PodFailure]) -> StageState:
    """A failed stage's state with its failed pods: exit codes in the reason, the first few kept."""
    if state.phase is not Phase.FAILED or not failures:
        return state
    summary = pods_summary(failures)
    reason = f"{state.reason}; {summary}" if state.reason else summary
    return replace(state, reason=reason, pods=tuple(failures[:MAX_FAILED_PODS]))
