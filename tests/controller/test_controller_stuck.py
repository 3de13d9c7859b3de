"""Stuck stages (issue 12 items 2 and 6, issue 20 items 1 and 2): stuck means stuck *now*, read from
what the real components say. Pure scenarios first, then the controller on the API double with the
real kubectl reading the result."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from kubedouble.admission import ENFORCE_LABEL, RESTRICTED
from kubedouble.harness import FAST_POLL, NS, RUN, Harness, make_spec
from kubedouble.resources import JOBS as DOUBLE_JOBS
from kubedouble.resources import NAMESPACES
from kubedouble.resources import PODS as DOUBLE_PODS
from kubedouble.resources import PYTORCHJOBS as DOUBLE_PYTORCHJOBS

from dynamics import constants as C
from dynamics.constants import Stage
from dynamics.controller import runs
from dynamics.controller.resources import CONFIG_MAPS, JOBS
from dynamics.controller.run import Controller, Outcome
from dynamics.controller.state import Phase
from dynamics.controller.status import show_status
from dynamics.controller.stuck import event_times, stuck_reason, stuck_signal
from dynamics.controller.submit import submit
from dynamics.render import stages_of

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DEADLINE = 900
QUOTA = ('pods "demo-train-master-0" is forbidden: exceeded quota: gpu, requested: requests.nvidia.com/gpu=4, '
         'used: requests.nvidia.com/gpu=8, limited: requests.nvidia.com/gpu=8')
pytestmark = pytest.mark.usefixtures("work_bucket")


def _at(seconds: float) -> str:
    return (T0 + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _workload(kind: str = "Job", uid: str = "w-1") -> dict:
    return {"kind": kind, "metadata": {"name": "demo-x", "uid": uid}}


def _pod(name: str = "p-0", *, owner: str = "w-1", created: float = 0, phase: str = "Pending",
         waiting: str | None = None, unschedulable_since: float | None = None, finished: float | None = None) -> dict:
    status: dict = {"phase": phase, "conditions": []}
    if waiting:
        status["containerStatuses"] = [{"name": "embed", "state": {"waiting": {"reason": waiting,
                                                                             "message": "pull access denied"}}}]
    if unschedulable_since is not None:
        status["conditions"].append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                     "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                                     "lastTransitionTime": _at(unschedulable_since)})
    if finished is not None:
        status["containerStatuses"] = [{"name": "embed", "state": {"terminated": {"exitCode": 0,
                                                                                "finishedAt": _at(finished)}}}]
    return {"metadata": {"name": name, "uid": f"uid-{name}", "creationTimestamp": _at(created),
                         "ownerReferences": [{"uid": owner}]}, "status": status}


def _event(reason: str, *, about: str = "w-1", first: float = 0, last: float | None = None, count: int = 1,
           message: str = QUOTA, type_: str = "Warning") -> dict:
    return {"type": type_, "reason": reason, "message": f"Error creating: {message}" if type_ == "Warning" else message,
            "involvedObject": {"uid": about}, "firstTimestamp": _at(first),
            "lastTimestamp": _at(first if last is None else last), "count": count}


def _reason(workload: dict, pods: list, events: list, now: float, *, gang: bool = False) -> str | None:
    at = T0 + dt.timedelta(seconds=now)
    return stuck_reason(stuck_signal(workload, pods, events, at, gang=gang), at, DEADLINE)


def test_waiting_containers_fail_after_the_deadline() -> None:
    pods = [_pod(waiting="ImagePullBackOff")]
    assert _reason(_workload(), pods, [], 899) is None
    assert _reason(_workload(), pods, [], 900) == ('stuck for 900s: pod p-0: ImagePullBackOff: container "embed": '
                                                   "pull access denied")
    assert _reason(_workload(), [_pod()], [], 3600) is None  # Pending without a sign of trouble
    assert _reason(_workload(), [_pod(owner="other", waiting="ImagePullBackOff")], [], 3600) is None


def test_pod_security_refusal_fails_at_once() -> None:
    message = 'pods "x" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false'
    reason = _reason(_workload("PyTorchJob"), [], [_event("FailedCreatePod", message=message)], 1, gang=True)
    assert reason is not None and reason.startswith("refused by admission: FailedCreatePod: Error creating")


@pytest.mark.parametrize("reason", ["FailedCreatePod", "FailedCreate"])
def test_a_persistent_refusal_with_no_pods_is_stuck(reason: str) -> None:
    """Item 1: the operator's FailedCreatePod (and the Job controller's FailedCreate), repeated."""
    events = [_event(reason, first=0, last=880, count=40)]
    assert _reason(_workload("PyTorchJob"), [], events, 899, gang=True) is None
    found = _reason(_workload("PyTorchJob"), [], events, 900, gang=True)
    assert found is not None and f"{reason}: Error creating: {QUOTA}" in found


def test_only_workers_refused_still_stalls_the_trainer() -> None:
    """Item 1: the master runs (holding 4 GPUs), the workers are refused on every retry."""
    master = _pod("demo-train-master-0", created=0, phase="Running")
    events = [_event("FailedCreatePod", first=1, last=950, count=30)]
    found = _reason(_workload("PyTorchJob"), [master], events, 960, gang=True)
    assert found is not None and found.startswith("stuck for 959s: FailedCreatePod")


def test_a_refusal_that_stopped_does_not_fail_a_working_stage() -> None:
    """Item 2: one transient quota refusal, then the pods were created and run."""
    pods = [_pod("p-0", created=30, phase="Running"), _pod("p-1", created=31, phase="Running")]
    assert _reason(_workload(), pods, [_event("FailedCreate", first=0, last=20)], 3600) is None
    assert _reason(_workload("PyTorchJob"), pods, [_event("FailedCreatePod", first=0, last=20)], 3600,
                   gang=True) is None
    # Not seen again for a long while (and no pod created yet): it stopped as well.
    assert _reason(_workload(), [], [_event("FailedCreate", first=0, last=10)], 3600) is None


def test_events_of_a_deleted_namesake_do_not_count() -> None:
    """Item 2: a cancelled Job of the same name left its refusal Events (matched by uid, not name)."""
    assert _reason(_workload(uid="new"), [], [_event("FailedCreate", about="old", first=0, last=950)], 960) is None


def test_a_new_episode_of_a_folded_event_counts_from_its_start() -> None:
    """client-go folds a repeat into the old Event: firstTimestamp is the first episode's."""
    pods = [_pod("p-0", created=1000, phase="Succeeded", finished=1100)]
    events = [_event("FailedCreate", first=0, last=1700, count=9)]
    assert _reason(_workload(), pods, events, 1800, gang=True) is None  # since = 1000: 800 s
    assert _reason(_workload(), pods, events, 1910, gang=True) is not None


def test_an_indexed_job_making_progress_is_not_failed_for_one_pod() -> None:
    """Item 2: parallelism above the free GPUs: one pod Unschedulable, the others run."""
    pods = [_pod("p-0", phase="Running"), _pod("p-1", unschedulable_since=0)]
    assert _reason(_workload(), pods, [], 7200) is None
    found = _reason(_workload("PyTorchJob"), pods, [], 7200, gang=True)  # a gang waits for every rank
    assert found is not None and "Unschedulable" in found
    # Nothing runs and nothing finished since the trouble began: stuck.
    done_before = [_pod("p-0", phase="Succeeded", finished=-10), _pod("p-1", unschedulable_since=0)]
    assert _reason(_workload(), done_before, [], 7200) is not None
    # Quota refuses some pods while the admitted ones make progress: slow, not stuck.
    refused = [_event("FailedCreate", first=0, last=7100, count=60)]
    assert _reason(_workload(), [_pod("p-0", phase="Running")], refused, 7200) is None


def test_autoscaler_scale_up_in_progress_is_waiting() -> None:
    """Item 2: a GPU node pool scaling up for more than the deadline."""
    pod = _pod("p-0", unschedulable_since=0)
    up = _event("TriggeredScaleUp", about="uid-p-0", first=5, last=1750, count=30, type_="Normal",
                message="pod triggered scale-up: [{gpu 0->2 (max: 4)}]")
    assert _reason(_workload(), [pod], [up], 1800, gang=True) is None
    assert _reason(_workload(), [pod], [up], 1750 + 601, gang=True) is not None  # the autoscaler gave up
    no = _event("NotTriggerScaleUp", about="uid-p-0", first=1760, last=1790, type_="Normal",
                message="pod didn't trigger scale-up: 1 max node group size reached")
    assert _reason(_workload(), [pod], [up, no], 1800, gang=True) is not None


def test_event_times_read_both_event_shapes() -> None:
    legacy = event_times(_event("FailedCreate", first=0, last=60, count=3))
    assert legacy is not None and (legacy.first, legacy.last, legacy.count) == (T0, T0 + dt.timedelta(seconds=60), 3)
    series = event_times({"eventTime": "2026-01-01T00:00:00.000000Z", "firstTimestamp": None, "lastTimestamp": None,
                          "series": {"count": 7, "lastObservedTime": "2026-01-01T00:05:00.000000Z"}})
    assert series is not None and series.count == 7 and series.last == T0 + dt.timedelta(minutes=5)


# --- on the API double ---


def _submitted(h: Harness, **overrides: object) -> None:
    assert submit(make_spec(**overrides), kube=h.kube(), out=io.StringIO()) == 0


def _later(monkeypatch: pytest.MonkeyPatch, seconds: float) -> dt.datetime:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
    monkeypatch.setattr(runs, "now_utc", lambda: later)
    return later


def _to_train(h: Harness, controller: Controller) -> None:
    spec = make_spec()
    for stage in stages_of(spec)[:4]:
        assert controller.step().outcome is None
        h.play_stage(spec, stage)
    assert controller.step().outcome is None  # creates the PyTorchJob


def test_restricted_namespace_without_operator_template_fails_fast(h: Harness) -> None:
    """A PyTorchJob whose Worker pods are refused (v1.9 init container) fails the run, not a hang."""
    ns = h.double.store.get(NAMESPACES, None, NS)
    ns["metadata"]["labels"] = {ENFORCE_LABEL: RESTRICTED}
    h.double.store.replace(NAMESPACES, None, NS, ns)
    _submitted(h)
    controller = Controller(h.kube(), RUN, poll=FAST_POLL)
    _to_train(h, controller)
    h.start_stage(make_spec(), Stage.TRAIN)
    assert controller.step().outcome is Outcome.FAILED
    out = io.StringIO()
    show_status(h.kube(), RUN, out)
    assert "refused by admission: FailedCreatePod" in out.getvalue() and "init-pytorch" in out.getvalue()


def test_a_quota_refused_pytorchjob_fails_after_the_deadline(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 1: no pod of the PyTorchJob is ever created (quota), the operator retries: the run fails
    with the operator's reason after stuckAfterSeconds instead of "Running" forever. (Before: the
    stuck check matched only FailedCreate and the double emitted that for the operator too.)"""
    _submitted(h)
    controller = Controller(h.kube(), RUN, poll=FAST_POLL)
    _to_train(h, controller)
    start = dt.datetime.now(dt.UTC)
    h.double.cluster.refuse(DOUBLE_PYTORCHJOBS, NS, f"{RUN}-train", QUOTA, at=start)
    assert controller.step().outcome is None
    later = _later(monkeypatch, DEADLINE + 60)
    h.double.cluster.refuse(DOUBLE_PYTORCHJOBS, NS, f"{RUN}-train", QUOTA, at=later - dt.timedelta(seconds=30))
    assert controller.step().outcome is Outcome.FAILED
    cm = json.loads(h.kubectl.run("get", "configmap", RUN, "-o", "json").stdout)
    status = json.loads(cm["data"][C.CONFIG_STATUS_KEY])
    assert status["phase"] == Phase.FAILED.value and "FailedCreatePod: Error creating" in status["reason"]
    assert "exceeded quota" in status["reason"]
    events = h.double.cluster.events(NS, f"{RUN}-train")
    assert [(e["reason"], e["count"], e["source"]["component"]) for e in events] == [
        ("FailedCreatePod", 2, "pytorchjob-controller")]


def test_a_transient_refusal_does_not_fail_a_working_stage(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 2: one quota refusal of the embed Job, then its pods were created and run."""
    _submitted(h)
    controller = Controller(h.kube(), RUN, poll=FAST_POLL)
    controller.step()
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    h.double.cluster.refuse(DOUBLE_JOBS, NS, f"{RUN}-embed", QUOTA, at=earlier)
    h.start_stage(make_spec(), Stage.EMBED)
    _later(monkeypatch, DEADLINE + 60)
    assert controller.step().outcome is None
    assert runs.read_run(h.kube(), RUN).recorded.phase is Phase.RUNNING  # type: ignore[union-attr]


def test_a_resubmitted_run_ignores_its_namesakes_events(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 2: the README's fix-and-resubmit flow: the cancelled run's embed Job was refused for an
    hour; the new run's Job of the same name has its pods and must not fail on its first pass."""
    kube = h.kube()
    _submitted(h)
    Controller(h.kube(), RUN, poll=FAST_POLL).step()
    old_start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    h.double.cluster.refuse(DOUBLE_JOBS, NS, f"{RUN}-embed", QUOTA, at=old_start)
    h.double.cluster.refuse(DOUBLE_JOBS, NS, f"{RUN}-embed", QUOTA, at=dt.datetime.now(dt.UTC))
    kube.delete(CONFIG_MAPS, RUN)
    runs.delete_run(kube, RUN, interval_s=0.02)
    _submitted(h)
    controller = Controller(h.kube(), RUN, poll=FAST_POLL)
    assert controller.step().outcome is None  # creates the new embed Job
    assert kube.get(JOBS, f"{RUN}-embed") is not None
    assert controller.step().outcome is None
    assert runs.read_run(h.kube(), RUN).recorded.phase is not Phase.FAILED  # type: ignore[union-attr]


def test_image_pull_backoff_fails_after_the_deadline(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = make_spec()
    _submitted(h)
    controller = Controller(h.kube(), RUN, poll=FAST_POLL)
    controller.step()
    h.start_stage(spec, Stage.EMBED)
    for pod in h.double.cluster.pods(NS, **{C.LABEL_STAGE: "embed"})[:1]:
        pod["status"] = {"phase": "Pending", "containerStatuses": [{
            "name": "embed", "image": spec.images.embedder, "imageID": "", "ready": False, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff",
                                  "message": f'Back-off pulling image "{spec.images.embedder}"'}}}]}
        h.double.store.replace(DOUBLE_PODS, NS, pod["metadata"]["name"], pod, status=True)
    assert controller.step().outcome is None  # within the deadline: still running
    _later(monkeypatch, spec.kubernetes.stuck_after_seconds + 1)
    assert controller.step().outcome is Outcome.FAILED
    out = io.StringIO()
    show_status(h.kube(), RUN, out)
    assert "ImagePullBackOff" in out.getvalue()
    cm = json.loads(h.kubectl.run("get", "configmap", RUN, "-o", "json").stdout)
    status = json.loads(cm["data"][C.CONFIG_STATUS_KEY])
    assert status["phase"] == Phase.FAILED.value and "ImagePullBackOff" in status["reason"]
    assert "Back-off pulling image" in status["reason"]


def test_a_progressing_indexed_job_waits_for_capacity(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 2: one embed pod Unschedulable (no free GPU; the autoscaler is adding a node), the other
    runs: the stage is not failed after the deadline."""
    _submitted(h)
    controller = Controller(h.kube(), RUN, poll=FAST_POLL)
    controller.step()
    h.start_stage(make_spec(), Stage.EMBED)
    pods = h.double.cluster.pods(NS, **{C.LABEL_STAGE: "embed"})
    since = dt.datetime.now(dt.UTC)
    h.double.cluster.unschedulable(NS, pods[-1]["metadata"]["name"], "0/4 nodes are available: 4 Insufficient "
                                   "nvidia.com/gpu.", since)
    later = _later(monkeypatch, 2 * DEADLINE)
    h.double.cluster.autoscaler(NS, pods[-1]["metadata"]["name"], scale_up=True, at=later - dt.timedelta(seconds=60))
    assert controller.step().outcome is None


def test_status_names_a_controller_that_cannot_start(h: Harness) -> None:
    """Item 12: the controller pod is refused (no `dynamics` ServiceAccount: the chart was not
    installed in this namespace); `dynamics status` says so instead of a bare "Pending". Its text is
    the Job controller's FailedCreate on the controller Job (the admission plugin's message:
    kubernetes plugin/pkg/admission/serviceaccount/admission.go)."""
    _submitted(h)
    missing_sa = (f'pods "{RUN}-controller-x7k2p" is forbidden: error looking up service account {NS}/dynamics: '
                  'serviceaccount "dynamics" not found')
    h.double.cluster.refuse(DOUBLE_JOBS, NS, f"{RUN}-controller", missing_sa)
    out = io.StringIO()
    assert show_status(h.kube(), RUN, out) == 0
    assert f"run {RUN} in namespace {NS}: Pending" in out.getvalue()
    assert "reason: the run's controller is not running: its controller pod cannot start (for " in out.getvalue()
    assert f"s): FailedCreate: Error creating: {missing_sa}" in out.getvalue()
    h.kube().delete(JOBS, f"{RUN}-controller")
    out = io.StringIO()
    show_status(h.kube(), RUN, out)
    assert "its controller Job does not exist" in out.getvalue()
