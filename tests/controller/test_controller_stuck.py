"""Stuck stages fail with the pod's waiting reason or the refusal (issue 12 items 2 and 6): pure
decisions first, then against the API double with the real kubectl reading the result."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from kubedouble.admission import ENFORCE_LABEL, RESTRICTED
from kubedouble.harness import FAST_POLL, NS, RUN, Harness, make_spec
from kubedouble.resources import NAMESPACES
from kubedouble.resources import PODS as DOUBLE_PODS

from dynamics import constants as C
from dynamics.constants import Stage
from dynamics.controller import runs
from dynamics.controller.run import Controller, Outcome
from dynamics.controller.state import Phase
from dynamics.controller.status import show_status
from dynamics.controller.stuck import stuck_reason, stuck_signal
from dynamics.controller.submit import submit
from dynamics.render import stages_of

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
pytestmark = pytest.mark.usefixtures("work_bucket")


def _pod(waiting: str | None = None, unschedulable: bool = False) -> dict:
    status: dict = {"phase": "Pending", "conditions": []}
    if waiting:
        status["containerStatuses"] = [{"name": "embed", "state": {"waiting": {"reason": waiting,
                                                                             "message": "pull access denied"}}}]
    if unschedulable:
        status["conditions"].append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                     "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                                     "lastTransitionTime": "2026-01-01T00:00:00Z"})
    return {"metadata": {"name": "p-0", "creationTimestamp": "2026-01-01T00:00:00Z"}, "status": status}


def test_stuck_reasons_wait_for_the_deadline() -> None:
    signal = stuck_signal([_pod("ImagePullBackOff")], [])
    assert stuck_reason(signal, T0 + dt.timedelta(seconds=899), 900) is None
    reason = stuck_reason(signal, T0 + dt.timedelta(seconds=900), 900)
    assert reason == 'stuck for 900s: pod p-0: ImagePullBackOff: container "embed": pull access denied'
    unsched = stuck_reason(stuck_signal([_pod(unschedulable=True)], []), T0 + dt.timedelta(hours=1), 900)
    assert unsched is not None and "Unschedulable: 0/3 nodes are available" in unsched
    assert stuck_signal([_pod()], []) is None


def test_admission_refusal_fails_at_once() -> None:
    event = {"type": "Warning", "reason": "FailedCreate", "firstTimestamp": "2026-01-01T00:00:00Z",
             "message": 'Error creating: pods "x" is forbidden: violates PodSecurity "restricted:latest": ...'}
    reason = stuck_reason(stuck_signal([_pod("ImagePullBackOff")], [event]), T0, 900)
    assert reason is not None and reason.startswith("refused by admission: FailedCreate: Error creating")


def _submitted(h: Harness) -> None:
    assert submit(make_spec(), kube=h.kube(), out=io.StringIO()) == 0


def test_restricted_namespace_without_operator_template_fails_fast(h: Harness) -> None:
    """A PyTorchJob whose Worker pods are refused (v1.9 init container) fails the run, not a hang."""
    ns = h.double.store.get(NAMESPACES, None, NS)
    ns["metadata"]["labels"] = {ENFORCE_LABEL: RESTRICTED}
    h.double.store.replace(NAMESPACES, None, NS, ns)
    spec = make_spec()
    _submitted(h)
    controller = Controller(h.kube(), RUN, poll=FAST_POLL)
    for stage in stages_of(spec)[:4]:
        assert controller.step().outcome is None
        h.play_stage(spec, stage)  # every Job's pods are admitted: the renderer is restricted
    assert controller.step().outcome is None  # creates the PyTorchJob
    h.start_stage(spec, Stage.TRAIN)
    assert controller.step().outcome is Outcome.FAILED
    out = io.StringIO()
    show_status(h.kube(), RUN, out)
    assert "refused by admission" in out.getvalue() and "init-pytorch" in out.getvalue()


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
    later = runs.now_utc() + dt.timedelta(seconds=spec.kubernetes.stuck_after_seconds + 1)
    monkeypatch.setattr(runs, "now_utc", lambda: later)
    assert controller.step().outcome is Outcome.FAILED
    out = io.StringIO()
    show_status(h.kube(), RUN, out)
    assert "ImagePullBackOff" in out.getvalue()
    cm = json.loads(h.kubectl.run("get", "configmap", RUN, "-o", "json").stdout)
    status = json.loads(cm["data"][C.CONFIG_STATUS_KEY])
    assert status["phase"] == Phase.FAILED.value and "ImagePullBackOff" in status["reason"]
    assert "Back-off pulling image" in status["reason"]
