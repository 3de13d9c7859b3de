"""Run-level reads and writes shared by the controller, submit and the CLI views.

A run is its ConfigMap (the resolved spec and ``status.json``) plus every object labelled
``dynamics.io/run=<run>``; every object the controller or submit creates is owned by the ConfigMap,
so deleting the ConfigMap deletes the run (garbage collection, in the background). Progress Events
are recorded on the ConfigMap (``kubectl describe configmap RUN``).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import functools
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from dynamics import constants as C
from dynamics.constants import Stage
from dynamics.controller.decide import Observed, current_shared_stage, failed_stages, running_stages, vanished_stages
from dynamics.controller.kube import Kube, KubeApiError, Obj
from dynamics.controller.report import RunEvent
from dynamics.controller.resources import BY_KIND, CONFIG_MAPS, EVENTS, JOBS, PODS, RUN_RESOURCES, Propagation
from dynamics.controller.state import LOG_TAIL_LINES, Phase, PodFailure, RunStatus, clip, failed_pods, log_tail
from dynamics.controller.stuck import owned_pods, stuck_reason, stuck_signal, unschedulable
from dynamics.errors import KubeError, StorageError
from dynamics.spec import names
from dynamics.spec.checks import cluster_storage_problems
from dynamics.spec.fingerprint import run_paths
from dynamics.spec.loader import load_spec_text
from dynamics.spec.model import RunSpec
from dynamics.stages.common import storage_config
from dynamics.stages.progress import stage_complete
from dynamics.storage import claims
from dynamics.storage import objects as storage
from dynamics.storage.layout import shared_folder

log = logging.getLogger("dynamics.controller")

RUNS_SELECTOR = f"{C.LABEL_NAME}={C.APP_NAME},{C.LABEL_COMPONENT}={C.COMPONENT_RUN}"
EVENT_SOURCE = "dynamics-controller"
MAX_EVENT_MESSAGE = 1024  # what kubectl shows comfortably (events.k8s.io/v1 caps its note at 1 KiB)


def run_selector(run: str) -> str:
    """Label selector of every object of ``run`` (what ``kubectl -l`` takes)."""
    return f"{C.LABEL_RUN}={run}"


@dataclass(frozen=True)
class RunRecord:
    """A run as stored: its ConfigMap, the spec in it, and the recorded status (if any yet)."""

    config_map: Obj
    spec: RunSpec
    recorded: RunStatus | None

    @property
    def name(self) -> str:
        """The run name."""
        return self.spec.name


@functools.lru_cache(maxsize=16)
def _parse_spec(text: str, source: str) -> RunSpec:
    """The run's spec never changes after submission: parse it once per process (RunSpec is frozen)."""
    return load_spec_text(text, source)


def read_run(kube: Kube, run: str) -> RunRecord | None:
    """The run's record, or None when its ConfigMap does not exist (never submitted, or cancelled)."""
    cm = kube.get(CONFIG_MAPS, names.config_map(run))
    if cm is None:
        return None
    data = cm.get("data") or {}
    spec = _parse_spec(data.get(C.CONFIG_SPEC_KEY, ""), f"configmap/{cm['metadata']['name']} key {C.CONFIG_SPEC_KEY}")
    return RunRecord(cm, spec, RunStatus.loads(data.get(C.CONFIG_STATUS_KEY)))


def require_run(kube: Kube, run: str) -> RunRecord:
    """The run's record, or a KubeError saying it does not exist."""
    record = read_run(kube, run)
    if record is None:
        raise KubeError(
            f'run "{run}" not found in namespace "{kube.namespace}"',
            hint=f"`dynamics list -n {kube.namespace}` shows the runs there; pass -n for another namespace",
        )
    return record


@dataclass(frozen=True)
class RunObjects:
    """A run's Jobs, PyTorchJobs and Services, with the kinds the API does not serve (no CRD) and
    those the caller may not list (kind -> ``list <resource>``)."""

    objects: list[Obj]
    unserved: set[str]
    forbidden: dict[str, str]


def read_run_objects(kube: Kube, run: str, *, skip_forbidden: bool = False) -> RunObjects:
    """Every Job, PyTorchJob and Service of the run.

    ``skip_forbidden`` (the CLI's views and cancel): kinds the user may not list are left out and
    named in ``forbidden``, so a user with the built-in ``edit`` role (no pytorchjobs) can still see
    and cancel a run; the controller needs them all (a 403 raises)."""
    found = RunObjects([], set(), {})
    for res in RUN_RESOURCES:
        try:
            found.objects.extend(kube.list(res, run_selector(run)))
        except KubeApiError as err:
            if skip_forbidden and err.status == 403:
                found.forbidden[res.kind] = f"list {res.display}"
                continue
            if err.status != 404:  # 404 on a collection: the resource type (a CRD) is not installed
                raise
            found.unserved.add(res.kind)
    return found


def list_run_objects(kube: Kube, run: str, *, skip_forbidden: bool = False) -> tuple[list[Obj], set[str]]:
    """Every Job, PyTorchJob and Service of the run, and the kinds the API does not serve
    (see :func:`read_run_objects`)."""
    found = read_run_objects(kube, run, skip_forbidden=skip_forbidden)
    return found.objects, found.unserved


def _first_line(err: KubeError) -> str:
    return err.message.splitlines()[0]


def _log_tail(kube: Kube, run: str, pod: Obj, failure: PodFailure) -> tuple[str, ...]:
    """The last log lines of a failed pod's container; () when they cannot be read (pod gone: 404,
    no permission: 403, container never started: 400, or the API server unreachable)."""
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    container = failure.container or containers[0].get("name")
    try:
        return log_tail(kube.log(failure.pod, container=container, tail=LOG_TAIL_LINES))
    except KubeError as err:
        log.warning("run %s: cannot read the log of pod %s: %s", run, failure.pod, _first_line(err))
        return ()


def stage_pod_failures(kube: Kube, run: str, stage: Stage) -> tuple[PodFailure, ...]:
    """The failed pods of one stage of ``run``, the first with its log tail; () when the pods cannot
    be listed (the failure reason then is the workload's condition message alone)."""
    try:
        pods = kube.list(PODS, f"{run_selector(run)},{C.LABEL_STAGE}={stage.value}")
    except KubeApiError as err:
        log.warning("run %s: cannot list the pods of stage %s: %s", run, stage.value, _first_line(err))
        return ()
    failures = failed_pods(pods)
    if not failures:
        return ()
    first = failures[0]
    pod = next(p for p in pods if p["metadata"]["name"] == first.pod)
    return (dataclasses.replace(first, log_tail=_log_tail(kube, run, pod, first)), *failures[1:])


def owned_by(obj: Obj, config_map: Obj) -> bool:
    """Whether ``obj`` belongs to this submission of the run: owned by its ConfigMap's uid and not
    being deleted. Labels alone also match a cancelled run's objects still being garbage-collected."""
    uid = config_map["metadata"]["uid"]
    meta = obj["metadata"]
    refs = meta.get("ownerReferences") or []
    return any(r.get("uid") == uid for r in refs) and not meta.get("deletionTimestamp")


def _outputs_complete(spec: RunSpec, stage: Stage) -> bool:
    """Whether every completion marker of ``stage`` is in the work directory, where the stage writes
    it (embed and cluster stages under ``_shared/<stage>-<fingerprint>/``), and was written for this
    spec (its fingerprint matches). Raises StorageError."""
    return stage_complete(spec, run_paths(spec), stage, storage_config(spec))


def now_utc() -> dt.datetime:
    """The wall clock (one place, so that tests can move it past a deadline)."""
    return dt.datetime.now(dt.UTC)


# Unschedulable pods whose Events are read per pass (each a list call): enough to see an autoscaler at work.
MAX_PENDING_PODS_READ = 8


def events_about(kube: Kube, uid: str) -> list[Obj]:
    """Events about the object with ``uid`` (the field selector kube-apiserver offers for Events);
    [] for an older Role without "list events": pods alone still tell a lot."""
    try:
        return kube.list(EVENTS, fields=f"involvedObject.uid={uid}")
    except KubeApiError as err:
        if err.status != 403:
            raise
        return []


def workload_events(kube: Kube, workload: Obj, pods: list[Obj]) -> list[Obj]:
    """What :func:`~dynamics.controller.stuck.stuck_signal` reads: Events about the workload, and about
    its Unschedulable pods (an autoscaler's verdict on them), a bounded number of them."""
    events = events_about(kube, workload["metadata"]["uid"])
    for pod in [p for p in owned_pods(workload, pods) if unschedulable(p)][:MAX_PENDING_PODS_READ]:
        events += events_about(kube, pod["metadata"]["uid"])
    return events


def stuck_stages(kube: Kube, record: RunRecord, observed: Observed) -> dict[Stage, str]:
    """Running stages whose pods could not start for ``kubernetes.stuckAfterSeconds`` (or were refused
    by Pod Security), with why: a pod's waiting reason, its scheduling failure, or the refusal Event."""
    out = {}
    now = now_utc()
    for stage, workload in running_stages(record.spec, observed):
        pods = kube.list(PODS, f"{run_selector(record.name)},{C.LABEL_STAGE}={stage.value}")
        signal = stuck_signal(workload, pods, workload_events(kube, workload, pods), now, gang=stage is Stage.TRAIN)
        reason = stuck_reason(signal, now, record.spec.kubernetes.stuck_after_seconds)
        if reason is not None:
            out[stage] = reason
    return out


def claimant_label(record: RunRecord) -> str:
    """Who claims shared stages for the run: a controller restarted for it, or for a resubmission of
    the same name (one ConfigMap, so one live controller at a time), takes its claims back at once
    (:func:`dynamics.storage.claims.try_claim`); other runs wait."""
    return f"{record.config_map['metadata'].get('namespace', '')}/{record.name}"


def shared_stage(record: RunRecord, observed: Observed, owner: str) -> Observed:
    """Claim the run's current shared stage before its workload is created (and renew the claim while
    it runs): the first run to need ``_shared/<stage>-<fp>/`` computes it; a run that finds it complete
    reuses it (and looks at the next stage the same way); one that finds it claimed by another live
    run waits (see :mod:`dynamics.storage.claims`). Raises StorageError (the caller goes on without a
    claim)."""
    if cluster_storage_problems(record.spec):  # a local work dir fails the run instead
        return observed
    paths, cfg = run_paths(record.spec), storage_config(record.spec)
    while (found := current_shared_stage(record.spec, observed)) is not None:
        stage, running = found
        folder = shared_folder(paths, stage)
        if folder is None:
            return observed
        if running:  # ours: keep the claim alive (a controller presumed dead finds it taken over: go on)
            if claims.try_claim(folder, owner, cfg) is None:
                log.warning("run %s: stage %s: another run took over the claim on %s", record.name, stage.value,
                            folder)
            return observed
        if not stage_complete(record.spec, paths, stage, cfg):
            break
        observed = dataclasses.replace(observed, reused=observed.reused | {stage})
    else:
        return observed
    if claims.try_claim(folder, owner, cfg) is not None:
        storage.remove_stale_temps(folder, cfg)  # with the claim held, nothing else writes there
        return observed
    held = claims.read_claim(folder, cfg)
    label = claims.owner_label(held.owner) if held else ""
    who = f"run {label.split('/', 1)[1]}" if "/" in label else f"another run ({label or 'gone'})"
    return dataclasses.replace(observed, waiting={**observed.waiting, stage: f"{who} ({folder})"})


def observe(kube: Kube, record: RunRecord, *, view: bool = False, claimant: str | None = None) -> Observed:
    """What the controller's decision needs, read from the cluster (with a failed stage's pods, and
    the work directory's markers of a stage whose workload vanished). Raises KubeError, StorageError.

    ``view`` (``dynamics status``): only what a user with the ``edit`` role may read, no storage
    access and no stuck-stage verdicts (the controller records those). ``claimant`` (the controller):
    the owner name under which it claims shared stages."""
    found = read_run_objects(kube, record.name, skip_forbidden=view)
    mine = [o for o in found.objects if owned_by(o, record.config_map)]
    text = (record.config_map.get("data") or {}).get(C.CONFIG_SPEC_KEY, "")
    observed = dataclasses.replace(Observed.of(mine, record.recorded, found.unserved),
                                   spec_sha256=hashlib.sha256(text.encode()).hexdigest(),
                                   forbidden=found.forbidden)
    if view:
        return observed
    if claimant is not None:
        try:
            observed = shared_stage(record, observed, claimant)
        except StorageError as err:  # the stage's own pods then say what is wrong with the storage
            log.warning("run %s: cannot coordinate shared stages through the work directory: %s; "
                        "going on without a claim", record.name, err.message.splitlines()[0])
    vanished = vanished_stages(record.spec, observed)
    if vanished:
        complete = frozenset(s for s in vanished if _outputs_complete(record.spec, s))
        observed = dataclasses.replace(observed, complete_outputs=complete)
    stuck = stuck_stages(kube, record, observed)
    if stuck:
        observed = dataclasses.replace(observed, stuck=stuck)
    stages = failed_stages(record.spec, observed)
    if not stages:
        return observed
    failures = {stage: stage_pod_failures(kube, record.name, stage) for stage in stages}
    return dataclasses.replace(observed, pod_failures=failures)


def with_owner(obj: Obj, config_map: Obj) -> Obj:
    """A copy of ``obj`` owned by the run ConfigMap (so that deleting the ConfigMap deletes it)."""
    out = copy.deepcopy(obj)
    meta = config_map["metadata"]
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": meta["name"], "uid": meta["uid"]}
    out["metadata"]["ownerReferences"] = [ref]
    return out


def event_object(config_map: Obj, event: RunEvent, *, namespace: str, now: dt.datetime, instance: str) -> Obj:
    """A core/v1 Event about the run ConfigMap (what ``kubectl describe configmap RUN`` lists).

    Named ``<configmap>.<16 hex>`` like client-go's recorder names Events, but the hex is a digest of
    the ConfigMap's uid and the transition (:attr:`RunEvent.key`), not the time: a controller
    restarted between sending an Event and recording the status that includes it sends the same
    name again, and the API server's 409 AlreadyExists keeps it from being recorded twice."""
    meta = config_map["metadata"]
    run = (meta.get("labels") or {}).get(C.LABEL_RUN, meta["name"])
    digest = hashlib.sha256(f"{meta['uid']}/{event.key}".encode()).hexdigest()[:16]
    timestamp = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta['name']}.{digest}",
            "namespace": namespace,
            "labels": {C.LABEL_NAME: C.APP_NAME, C.LABEL_COMPONENT: C.COMPONENT_CONTROLLER, C.LABEL_RUN: run},
        },
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": meta["name"],
            "namespace": namespace,
            "uid": meta["uid"],
        },
        "reason": event.reason.value,
        "message": clip(event.message, MAX_EVENT_MESSAGE),
        "type": event.type,
        "source": {"component": EVENT_SOURCE},
        "reportingComponent": EVENT_SOURCE,
        "reportingInstance": instance,
        "firstTimestamp": timestamp,
        "lastTimestamp": timestamp,
        "count": 1,
    }


def write_status(kube: Kube, record: RunRecord, status: RunStatus) -> bool:
    """Store ``status.json`` in the run ConfigMap unless unchanged; True if written."""
    text = status.dumps()
    if (record.config_map.get("data") or {}).get(C.CONFIG_STATUS_KEY) == text:
        return False
    kube.patch(CONFIG_MAPS, record.config_map["metadata"]["name"], {"data": {C.CONFIG_STATUS_KEY: text}})
    return True


def delete_run(
    kube: Kube,
    run: str,
    *,
    timeout_s: float = 300.0,
    interval_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Delete the run ConfigMap and wait until it and every object of the run are gone.

    Objects the ConfigMap owns go by garbage collection; objects of the run it does not own (the
    controller Job of a run installed with Helm, which Helm owns) are deleted here, or a resubmission
    of the name would hit them. Returns how many run objects existed when deletion started.
    """
    objects, _ = list_run_objects(kube, run, skip_forbidden=True)
    config_map = kube.get(CONFIG_MAPS, names.config_map(run))
    kube.delete(CONFIG_MAPS, names.config_map(run))
    for obj in objects:
        if config_map is None or not owned_by(obj, config_map):
            kube.delete(BY_KIND[obj["kind"]], obj["metadata"]["name"], Propagation.BACKGROUND)
    deadline = time.monotonic() + timeout_s
    while (kube.get(CONFIG_MAPS, names.config_map(run)) is not None
           or list_run_objects(kube, run, skip_forbidden=True)[0]):
        if time.monotonic() > deadline:
            raise KubeError(
                f'run "{run}" is still being deleted after {timeout_s:.0f}s',
                hint=f"check `kubectl get jobs,pytorchjobs -n {kube.namespace} -l {run_selector(run)}`; "
                "the garbage collector deletes them in the background",
            )
        sleep(interval_s)
    return len(objects)


def leftover_controller(kube: Kube, run: str) -> Obj | None:
    """The run's controller Job when it exists without the run's ConfigMap owning it (a Helm-installed
    run's Job after ``dynamics cancel`` of an older version, or one left while its run is deleted)."""
    config_map = kube.get(CONFIG_MAPS, names.config_map(run))
    selector = f"{run_selector(run)},{C.LABEL_COMPONENT}={C.COMPONENT_CONTROLLER}"
    for job in kube.list(JOBS, selector):
        if config_map is None or not owned_by(job, config_map):
            return job
    return None


def is_finished(status: RunStatus | None) -> bool:
    """Whether a recorded status is terminal."""
    return status is not None and status.phase in (Phase.SUCCEEDED, Phase.FAILED)
