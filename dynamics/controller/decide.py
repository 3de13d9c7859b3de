"""The controller's decision: ``next_actions(spec, observed) -> actions``. Pure: no I/O, no clock.

Level-triggered: the decision depends only on what exists now (the run's objects, found by label)
and on the status recorded in the run ConfigMap, never on what a previous controller did in
memory. Stages run strictly in pipeline order; a stage starts when every earlier stage succeeded;
its objects are created only if missing, so a restarted controller never creates a duplicate.

Stage state machine (per stage)::

    Pending --create objects--> Running --Complete/Succeeded--> Succeeded
                                   \\----Failed condition-----> Failed  (the run fails)

Run phase: Pending until the first stage's workload exists, Running while stages run, Succeeded
when all stages succeeded, Failed as soon as one stage failed. A failed stage's reason carries what
the shell observed of its failed pods (exit codes; the first pod's log tail is kept for the report):
the shell asks :func:`failed_stages` which stages to gather them for. A terminal recorded phase is sticky:
a controller restarted after the end of a run does nothing (even if TTL removed finished Jobs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from dynamics.constants import Stage
from dynamics.controller.state import (
    KIND_PYTORCHJOB,
    WORKLOAD_KINDS,
    Obj,
    Phase,
    PodFailure,
    RunStatus,
    StageState,
    with_pod_failures,
    workload_state,
)
from dynamics.render import render_stage, stages_of
from dynamics.spec.checks import cluster_storage_problems
from dynamics.spec.kube import OnFailure
from dynamics.spec.model import RunSpec

ObjectKey = tuple[str, str]  # (kind, name)
# Stages whose outputs runs with equal embed/cluster settings share (``_shared/<stage>-<fp>/``).
SHAREABLE = frozenset({Stage.EMBED, Stage.CLUSTER_FIT, Stage.ASSIGN})

CRD_MISSING_REASON = (
    "the PyTorchJob CRD (kubeflow.org/v1) is not installed in this cluster: ask an admin to install the "
    "Kubeflow training operator, or set train.launcher: indexed-job"
)


def key_of(obj: Obj) -> ObjectKey:
    """The (kind, name) identity of an object within the run's namespace."""
    return obj["kind"], obj["metadata"]["name"]


@dataclass(frozen=True)
class Observed:
    """What the controller saw: the run's live objects, the recorded status, the API's gaps, and
    the failed pods of failed stages (see :func:`failed_stages`)."""

    objects: Mapping[ObjectKey, Obj] = field(default_factory=dict)
    recorded: RunStatus | None = None
    unserved_kinds: frozenset[str] = frozenset()  # kinds the API server does not serve (no CRD)
    pod_failures: Mapping[Stage, tuple[PodFailure, ...]] = field(default_factory=dict)
    # Stages whose outputs are complete in the work directory (asked only for vanished stages).
    complete_outputs: frozenset[Stage] = frozenset()
    # Running stages whose pods cannot start, past the deadline: the reason (see controller.stuck).
    stuck: Mapping[Stage, str] = field(default_factory=dict)
    spec_sha256: str | None = None  # of the spec text in the run ConfigMap now
    # Kinds the caller may not list (``dynamics status`` with the ``edit`` role): kind -> missing
    # "verb resource". Their stages are Unknown, never taken for vanished.
    forbidden: Mapping[str, str] = field(default_factory=dict)
    # Shared stages (embed, cluster-fit, assign write into ``_shared/<stage>-<fp>/``): complete there
    # already (another run computed them), or being computed by another run (stage -> who).
    reused: frozenset[Stage] = frozenset()
    waiting: Mapping[Stage, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        objects: Iterable[Obj],
        recorded: RunStatus | None = None,
        unserved_kinds: Iterable[str] = (),
        pod_failures: Mapping[Stage, Iterable[PodFailure]] | None = None,
    ) -> Observed:
        """Build from a flat list of live objects."""
        failures = {stage: tuple(pods) for stage, pods in (pod_failures or {}).items()}
        return cls({key_of(o): o for o in objects}, recorded, frozenset(unserved_kinds), failures)


@dataclass(frozen=True)
class CreateObject:
    """Create one rendered object of ``stage`` (it does not exist yet)."""

    stage: Stage
    obj: Obj


@dataclass(frozen=True)
class WriteStatus:
    """Record the run's status in the run ConfigMap (the shell skips unchanged writes)."""

    status: RunStatus


@dataclass(frozen=True)
class Release:
    """Delete a failed run's stage workload that still runs or waits (``kubernetes.onFailure: stop``),
    so that its pods give back their GPUs and queue quota."""

    stage: Stage
    kind: str
    name: str

    @property
    def ref(self) -> str:
        """``pytorchjob/demo-train``."""
        return f"{self.kind.lower()}/{self.name}"


@dataclass(frozen=True)
class Finish:
    """The run ended: the controller exits."""

    phase: Phase
    reason: str | None = None


Action = CreateObject | Release | WriteStatus | Finish


def _workload(objects: list[Obj]) -> Obj | None:
    return next((o for o in reversed(objects) if o["kind"] in WORKLOAD_KINDS), None)


def _unserved(spec: RunSpec, stage: Stage, observed: Observed) -> StageState | None:
    workload = _workload(render_stage(spec, stage))
    if workload is not None and workload["kind"] in observed.unserved_kinds:
        return StageState(stage, Phase.FAILED, reason=CRD_MISSING_REASON)
    return None


def stage_state(spec: RunSpec, stage: Stage, observed: Observed) -> StageState:
    """One stage's state: from its live workload, else as recorded (TTL may have removed it)."""
    workload = _workload(render_stage(spec, stage))
    if workload is None:
        return StageState(stage, Phase.SUCCEEDED, reason="nothing to run")
    if unserved := _unserved(spec, stage, observed):
        return unserved
    live = observed.objects.get(key_of(workload))
    if live is None and workload["kind"] in observed.forbidden:
        return _unknown(stage, observed, observed.forbidden[workload["kind"]])
    if live is not None:
        state = with_pod_failures(workload_state(stage, live), observed.pod_failures.get(stage, ()))
        if state.phase is Phase.RUNNING and stage in observed.stuck:
            return replace(state, phase=Phase.FAILED, reason=observed.stuck[stage])
        return state
    recorded = observed.recorded.stage_state(stage) if observed.recorded else None
    if recorded is not None and recorded.phase.terminal:
        return recorded
    if recorded is not None and recorded.object is not None:
        return _vanished(recorded, stage in observed.complete_outputs)
    if stage in observed.reused:
        return StageState(stage, Phase.SUCCEEDED, reason="reused: its outputs in the shared folder are complete "
                          "for this spec (computed by another run)")
    if stage in observed.waiting:
        return StageState(stage, Phase.PENDING, reason=f"waiting for {observed.waiting[stage]}, which computes this "
                          "shared stage; this run uses its outputs once they are complete")
    return StageState(stage, Phase.PENDING)


def _unknown(stage: Stage, observed: Observed, missing: str) -> StageState:
    """A stage whose workload the caller may not read (``missing``: "list <resource>"): Unknown (a
    terminal recorded state stands), naming the missing permission and what the controller recorded."""
    recorded = observed.recorded.stage_state(stage) if observed.recorded else None
    if recorded is not None and recorded.phase.terminal:
        return recorded
    last = f"; the controller last recorded it {recorded.phase.value}" if recorded is not None else ""
    return replace(recorded or StageState(stage), phase=Phase.UNKNOWN,
                   reason=f"unknown: you may not {missing} in this namespace{last}")


def _vanished(recorded: StageState, outputs_complete: bool) -> StageState:
    """A stage whose workload this run created is gone before its end was recorded (removed by
    ``ttlSecondsAfterFinished`` while the controller was away, or deleted by hand). Never create it
    again (that loops with a short TTL): its outputs in the work directory say how it ended."""
    if outputs_complete:
        return replace(recorded, phase=Phase.SUCCEEDED, done=recorded.total, active=0,
                       reason=f"{recorded.object} was removed after it finished; its outputs are complete")
    return replace(recorded, phase=Phase.FAILED, active=0,
                   reason=f"{recorded.object} was deleted before it finished and its outputs are incomplete "
                   "(deleted by hand, or ttlSecondsAfterFinished removed a failed workload); resubmit to resume")


def _live_in_phase(spec: RunSpec, observed: Observed, phase: Phase) -> list[tuple[Stage, Obj]]:
    """Stages whose live workload is in ``phase``, with it; none once the recorded run is terminal."""
    if observed.recorded is not None and observed.recorded.phase.terminal:
        return []
    out = []
    for stage in stages_of(spec):
        workload = _workload(render_stage(spec, stage))
        live = observed.objects.get(key_of(workload)) if workload is not None else None
        if live is not None and workload_state(stage, live).phase is phase:
            out.append((stage, live))
    return out


def running_stages(spec: RunSpec, observed: Observed) -> list[tuple[Stage, Obj]]:
    """Stages whose live workload is running, with it (the shell looks for stuck pods in them)."""
    return _live_in_phase(spec, observed, Phase.RUNNING)


def vanished_stages(spec: RunSpec, observed: Observed) -> list[Stage]:
    """Stages recorded as started whose workload no longer exists (the shell checks their outputs)."""
    if observed.recorded is None or observed.recorded.phase.terminal:
        return []
    out = []
    for stage in stages_of(spec):
        recorded = observed.recorded.stage_state(stage)
        workload = _workload(render_stage(spec, stage))
        if (recorded is not None and recorded.object is not None and not recorded.phase.terminal
                and workload is not None and key_of(workload) not in observed.objects):
            out.append(stage)
    return out


def current_shared_stage(spec: RunSpec, observed: Observed) -> tuple[Stage, bool] | None:
    """The run's current stage when it is one that may be shared (embed, cluster-fit, assign), and
    whether its workload already exists (the shell claims the shared folder before creating it, and
    renews the claim while it runs); None otherwise."""
    if observed.recorded is not None and observed.recorded.phase.terminal:
        return None
    current = next((s for s in stage_states(spec, observed) if s.phase is not Phase.SUCCEEDED), None)
    if current is None or current.stage not in SHAREABLE or current.phase not in (Phase.PENDING, Phase.RUNNING):
        return None
    return current.stage, current.phase is Phase.RUNNING


def failed_stages(spec: RunSpec, observed: Observed) -> list[Stage]:
    """Stages whose live workload has failed (the shell gathers their failed pods), unless the run's
    recorded status is already terminal (then nothing more is read)."""
    return [stage for stage, _live in _live_in_phase(spec, observed, Phase.FAILED)]


def stage_states(spec: RunSpec, observed: Observed) -> list[StageState]:
    """Every stage's state in pipeline order; stages after an unfinished one are Pending.

    A later stage whose workload kind the API does not serve fails at once (fail fast: don't embed
    for hours and then find that the trainer cannot be launched).
    """
    out: list[StageState] = []
    blocked = False
    for stage in stages_of(spec):
        waiting = _unserved(spec, stage, observed) or StageState(stage)
        state = waiting if blocked else stage_state(spec, stage, observed)
        blocked = blocked or state.phase is not Phase.SUCCEEDED
        out.append(state)
    return out


def run_status(states: list[StageState]) -> RunStatus:
    """The run's phase, current stage and failure reason from its stages' states."""
    stages = tuple(states)
    failed = next((s for s in states if s.phase is Phase.FAILED), None)
    if failed is not None:
        reason = f"stage {failed.stage.value} failed: {failed.reason or 'unknown reason'}"
        return RunStatus(Phase.FAILED, failed.stage, reason, stages)
    current = next((s for s in states if s.phase is not Phase.SUCCEEDED), None)
    if current is None:
        return RunStatus(Phase.SUCCEEDED, None, None, stages)
    if current.phase is Phase.UNKNOWN:
        return RunStatus(Phase.UNKNOWN, current.stage, f"stage {current.stage.value}: {current.reason}", stages)
    started = any(s.phase is not Phase.PENDING for s in states)
    note = f"stage {current.stage.value}: {current.reason}" if current.reason else None
    return RunStatus(Phase.RUNNING if started else Phase.PENDING, current.stage, note, stages)


def next_actions(spec: RunSpec, observed: Observed) -> list[Action]:
    """What to do now. Ends with ``Finish`` when the run is over; otherwise the shell waits and asks again."""
    recorded = observed.recorded
    if recorded is not None and recorded.phase.terminal:
        return [Finish(recorded.phase, recorded.reason)]
    started_with = recorded.spec_sha256 if recorded is not None and recorded.spec_sha256 else observed.spec_sha256
    states = stage_states(spec, observed)
    status = replace(run_status(states), spec_sha256=started_with)
    if local := cluster_storage_problems(spec):  # e.g. installed with Helm, which shares --local's schema
        reason = "; ".join(f"{path}: {message} (fix: {fix})" for path, message, fix in local)
        status = replace(status, phase=Phase.FAILED, reason=f"a cluster run cannot use local storage: {reason}")
    elif started_with != observed.spec_sha256:
        reason = (f"the run's spec changed after submission (sha256 {str(started_with)[:12]} -> "
                  f"{str(observed.spec_sha256)[:12]}): a run's spec cannot change while it runs; submit the "
                  "change as a new run (or dynamics-submit --replace)")
        status = replace(status, phase=Phase.FAILED, reason=reason)
    if status.phase is Phase.FAILED:
        return failed_actions(spec, observed, status)
    if status.phase.terminal:
        return [WriteStatus(status), Finish(status.phase, status.reason)]
    assert status.stage is not None
    if status.stage in observed.waiting:  # another run computes this shared stage: create nothing
        return [WriteStatus(status)]
    missing = [o for o in render_stage(spec, status.stage) if key_of(o) not in observed.objects]
    return [*(CreateObject(status.stage, o) for o in missing), WriteStatus(status)]


def releasable(spec: RunSpec, observed: Observed) -> list[Release]:
    """The run's live stage workloads that still hold or wait for resources: running ones, and a
    failed PyTorchJob with active replicas (its ``cleanPodPolicy: None`` leaves them running)."""
    out = []
    for stage in stages_of(spec):
        workload = _workload(render_stage(spec, stage))
        live = observed.objects.get(key_of(workload)) if workload is not None else None
        if live is None:
            continue
        state = workload_state(stage, live)
        if state.phase is Phase.RUNNING or (state.phase is Phase.FAILED and state.active > 0):
            out.append(Release(stage, live["kind"], live["metadata"]["name"]))
    return out


def failed_actions(spec: RunSpec, observed: Observed, status: RunStatus) -> list[Action]:
    """A failed run: release what still runs (unless ``kubernetes.onFailure: keep``), saying so in the
    reason, then record the status and finish. Releasing comes first: a controller killed in between
    finds the run not yet failed and decides again."""
    running = releasable(spec, observed)
    release = running if spec.kubernetes.on_failure is OnFailure.STOP else []
    refs = ", ".join(r.ref for r in running)
    if release:
        status = replace(status, reason=f"{status.reason}; stopped {refs} to release its resources "
                         "(kubernetes.onFailure: keep leaves them running for debugging)")
    elif running:
        status = replace(status, reason=f"{status.reason}; {refs} kept running (kubernetes.onFailure: keep): "
                         "`dynamics cancel` releases its resources")
    return [*release, WriteStatus(status), Finish(status.phase, status.reason)]


def rejected(status: RunStatus, stage: Stage, reason: str) -> RunStatus:
    """``status`` with ``stage`` failed because the API server refused one of its objects."""
    states = [replace(s, phase=Phase.FAILED, reason=reason) if s.stage is stage else s for s in status.stages]
    return replace(run_status(states), spec_sha256=status.spec_sha256)


def refused_status(recorded: RunStatus | None, reason: str) -> RunStatus:
    """The run failed because the API refuses a call the controller needs (not a stage's fault):
    the current stage, if any, fails with ``reason``."""
    if recorded is None or recorded.stage is None or recorded.stage_state(recorded.stage) is None:
        return RunStatus(Phase.FAILED, recorded.stage if recorded else None, reason,
                         recorded.stages if recorded else (), recorded.spec_sha256 if recorded else None)
    return rejected(recorded, recorded.stage, reason)


def needs_pytorchjob(spec: RunSpec) -> bool:
    """Whether any stage of this run creates a PyTorchJob (so the CRD must be served)."""
    return any(o["kind"] == KIND_PYTORCHJOB for s in stages_of(spec) for o in render_stage(spec, s))
