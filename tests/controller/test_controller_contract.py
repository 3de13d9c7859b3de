"""The controller against a real cluster's contract (issue 12): API rejections end the run with the
API's message, a resubmitted name never adopts the old run's objects, a stage removed by a TTL is
never re-created, and Events survive a flaky API server (issue 14)."""

from __future__ import annotations

import copy
import io
import logging
from pathlib import Path

import pytest
from kubedouble.harness import FAST_POLL, NS, RUN, Harness, harness, make_spec, wait_until
from kubedouble.harness import recorded as harness_recorded

from dynamics import constants as C
from dynamics.constants import Stage
from dynamics.controller import decide
from dynamics.controller.kube import REQUIRED_PERMISSIONS, Kube
from dynamics.controller.resources import CONFIG_MAPS, JOBS
from dynamics.controller.run import EXIT_FAILED, Controller, Outcome
from dynamics.controller.state import Phase, RunStatus
from dynamics.controller.submit import submit
from dynamics.render import render_stage, stages_of
from dynamics.spec.fingerprint import run_paths
from dynamics.spec.model import RunSpec
from dynamics.stages.common import storage_config
from dynamics.stages.inputs import marker
from dynamics.stages.progress import stage_markers
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths

SPEC = make_spec()
EMBED_JOB = f"{RUN}-embed"
pytestmark = pytest.mark.usefixtures("work_bucket")


def submitted(h: Harness, spec: RunSpec = SPEC) -> Kube:
    kube = h.kube()
    assert submit(spec, kube=kube, out=io.StringIO()) == 0
    return kube


def recorded(kube: Kube) -> RunStatus:
    return harness_recorded(kube, RUN)


def job_creates(h: Harness) -> int:
    return sum(1 for a in h.double.accesses if (a.verb, a.resource) == ("create", "jobs"))


def test_a_422_fails_the_run_with_the_apis_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12 items 1+7: a Job that 1.29 rejects fails the run at once (exit 2), not a retry loop."""
    def old_render(spec: RunSpec, stage: Stage) -> list[dict]:
        objs = copy.deepcopy(render_stage(spec, stage))
        for obj in objs:
            for rule in obj.get("spec", {}).get("podFailurePolicy", {}).get("rules", []):
                for cond in rule.get("onPodConditions", []):
                    cond.pop("status")
        return objs

    monkeypatch.setattr(decide, "render_stage", old_render)
    with harness(tmp_path, kubernetes_version="1.29", namespaces=(NS,)) as h:
        kube = submitted(h)
        assert Controller(h.kube(), RUN, poll=FAST_POLL).loop() == EXIT_FAILED
        status = recorded(kube)
        assert status.phase is Phase.FAILED and status.stage is Stage.EMBED
        assert status.reason is not None
        assert f"the API server refused job/{EMBED_JOB}" in status.reason
        assert "spec.podFailurePolicy.rules[0].onPodConditions[0].status: Required value" in status.reason


def test_a_forbidden_stage_create_fails_the_run(h: Harness) -> None:
    h.double.allow([p for p in REQUIRED_PERMISSIONS if p != ("create", "batch", "jobs")] + [("get", "", "*")])
    kube = h.kube()
    h.double.allow(None)
    submitted(h)
    h.double.allow([p for p in REQUIRED_PERMISSIONS if p != ("create", "batch", "jobs")])
    assert Controller(h.kube(), RUN, poll=FAST_POLL).step().outcome is Outcome.FAILED
    reason = recorded(kube).reason or ""
    assert "the API server refused job/" in reason and "cannot create resource" in reason


def test_resubmitted_name_never_adopts_the_old_runs_objects(tmp_path: Path) -> None:
    """Issue 12 item 8: cancel, then resubmit at once, while GC still deletes the old Jobs."""
    with harness(tmp_path, gc_delay=1.0) as h:
        kube = submitted(h)
        old = Controller(h.kube(), RUN, poll=FAST_POLL)
        old.step()
        h.play_stage(SPEC, Stage.EMBED)  # the old run's embed Job is Complete
        kube.delete(CONFIG_MAPS, RUN)  # cancel: GC deletes the old objects after a while,
        kube.delete(JOBS, f"{RUN}-{C.SUFFIX_CONTROLLER}")  # in any order: here the controller Job first
        submitted(h)
        new = Controller(h.kube(), RUN, poll=FAST_POLL)
        assert new.step().outcome is None
        embed = recorded(kube).stage_state(Stage.EMBED)
        assert embed is not None and embed.phase is Phase.PENDING  # not Succeeded from the old Job
        wait_until(lambda: kube.get(JOBS, EMBED_JOB) is None, timeout=10)
        new.step()
        job = kube.get(JOBS, EMBED_JOB)
        cm = kube.get(CONFIG_MAPS, RUN)
        assert job is not None and cm is not None
        assert job["metadata"]["ownerReferences"][0]["uid"] == cm["metadata"]["uid"]
        new.step()  # the next pass sees its own Job
        assert recorded(kube).stage_state(Stage.EMBED).phase is Phase.RUNNING  # type: ignore[union-attr]


def _write_markers(spec: RunSpec, stage: Stage, *, fingerprint: str | None = None) -> None:
    """The stage's markers where the stage writes them (embed under ``_shared/embed-<fp>/``)."""
    payload = marker(spec, stage) if fingerprint is None else {C.MARKER_FINGERPRINT: fingerprint}
    for uri in stage_markers(spec, run_paths(spec), stage):
        storage.write_marker(uri, payload, storage_config(spec))


@pytest.mark.parametrize("outputs", ["complete", "missing", "other-spec", "old-layout"])
def test_a_stage_removed_by_ttl_is_never_recreated(h: Harness, outputs: str) -> None:
    """Issue 12 item 9, issue 20 item 3: the workload finished and was deleted (a short
    ttlSecondsAfterFinished, or the controller was down longer than the TTL) before its end was
    recorded. Its markers decide, read where the stage writes them and only for this spec.
    (Before issue 20 the controller looked in ``<run>/embed/`` and "complete" failed the run.)"""
    spec = make_spec(name=f"ttl-{outputs}", kubernetes={"ttlSecondsAfterFinished": 300},
                     storage={"workdir": f"s3://bucket/ttl-{outputs}"})  # shared stages: one workdir each
    run, job = spec.name, f"{spec.name}-embed"
    kube = submitted(h, spec)
    controller = Controller(h.kube(), run, poll=FAST_POLL)
    controller.step()
    h.double.cluster.start_job(NS, job)
    controller.step()  # recorded: embed Running on job/<run>-embed
    h.double.cluster.succeed_job(NS, job)
    if outputs == "complete":
        _write_markers(spec, Stage.EMBED)
    elif outputs == "other-spec":
        _write_markers(spec, Stage.EMBED, fingerprint="0" * 16)
    elif outputs == "old-layout":  # the pre-fingerprint place: not where this spec's embed writes
        for uri in stage_markers(spec, RunPaths.for_run(spec.storage.workdir, run), Stage.EMBED):
            storage.write_marker(uri, marker(spec, Stage.EMBED), storage_config(spec))
    h.double.cluster.expire(NS, job)  # the TTL controller, before the controller saw Complete
    creates = job_creates(h)
    for _ in range(5):
        controller.step()
    cm = kube.get(CONFIG_MAPS, run)
    assert cm is not None
    embed = RunStatus.loads(cm["data"][C.CONFIG_STATUS_KEY]).stage_state(Stage.EMBED)  # type: ignore[union-attr]
    assert embed is not None
    if outputs == "complete":
        assert embed.phase is Phase.SUCCEEDED
        assert job_creates(h) == creates + 1  # the next stage (cluster-fit), once; embed never again
    else:
        assert embed.phase is Phase.FAILED and "deleted before it finished" in (embed.reason or "")
        assert job_creates(h) == creates


def test_events_are_retried_including_run_succeeded(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 14: an Event the API fails to take (503) is retried with the loop's backoff, RunSucceeded too."""
    kube = submitted(h)
    stop, result = h.start_controller()
    for stage in stages_of(SPEC):
        name = f"{RUN}-{stage.value}"
        wait_until(lambda name=name: any(o["metadata"]["name"] == name for o in _workloads(kube)))
        if stage is stages_of(SPEC)[-1]:
            h.double.policy.faults[("create", "events")] = 2
        h.play_stage(SPEC, stage)
    wait_until(lambda: "exit" in result)
    assert result["exit"] == 0 and recorded(kube).phase is Phase.SUCCEEDED
    reasons = [e["reason"] for e in h.double.cluster.events(NS, RUN)]
    assert reasons[-1] == "RunSucceeded" and reasons.count("RunSucceeded") == 1
    assert any("will retry" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    stop.set()


def _workloads(kube: Kube) -> list[dict]:
    from dynamics.controller.runs import list_run_objects

    return [o for o in list_run_objects(kube, RUN)[0] if o["kind"] in ("Job", "PyTorchJob")]


def test_edit_role_user_can_see_and_cancel_an_indexed_job_run(h: Harness) -> None:
    """Issue 12 item 14: the built-in `edit` role cannot list pytorchjobs; status and cancel still work."""
    from dynamics.controller.status import cancel_run, show_status

    spec = make_spec(train={"launcher": "indexed-job"})
    kube = submitted(h, spec)
    Controller(h.kube(), RUN, poll=FAST_POLL).step()
    edit = {(verb, "", res) for verb in ("get", "list", "create", "delete", "patch")
            for res in ("configmaps", "pods", "pods/log", "services", "events")}
    h.double.allow(edit | {(verb, "batch", "jobs") for verb in ("get", "list", "delete")})
    out = io.StringIO()
    show_status(h.kube(), RUN, out)
    assert "embed" in out.getvalue()
    out = io.StringIO()
    assert cancel_run(h.kube(), RUN, out, interval_s=0.02) == 0
    h.double.allow(None)
    assert kube.get(CONFIG_MAPS, RUN) is None


def test_a_spec_changed_under_a_running_run_is_refused(h: Harness) -> None:
    """Issue 12 item 4: `kubectl edit` / `helm upgrade` of the run ConfigMap mid-run fails the run."""
    kube = submitted(h)
    controller = Controller(h.kube(), RUN, poll=FAST_POLL)
    controller.step()
    h.play_stage(SPEC, Stage.EMBED)
    controller.step()
    cm = kube.get(CONFIG_MAPS, RUN)
    assert cm is not None and recorded(kube).spec_sha256 is not None
    text = cm["data"][C.CONFIG_SPEC_KEY].replace("k: 100", "k: 200")
    assert text != cm["data"][C.CONFIG_SPEC_KEY]
    kube.patch(CONFIG_MAPS, RUN, {"data": {C.CONFIG_SPEC_KEY: text}})
    assert controller.step().outcome is Outcome.FAILED
    status = recorded(kube)
    assert status.phase is Phase.FAILED and "spec changed after submission" in (status.reason or "")


def test_a_restart_between_event_and_status_sends_no_event_twice(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 20 item 4: the controller dies after sending StageStarted but before recording the status
    that includes it; the restarted controller sends it again under the same name and the API's 409
    keeps one. (Before: Events were named by time, so the restart recorded a second StageStarted.)"""
    from dynamics.controller import run as run_module

    submitted(h)
    Controller(h.kube(), RUN, poll=FAST_POLL).step()  # creates the embed Job
    h.double.cluster.start_job(NS, EMBED_JOB)

    def killed(*_args: object, **_kwargs: object) -> bool:
        raise RuntimeError("killed before the status was written")

    monkeypatch.setattr(run_module, "write_status", killed)
    with pytest.raises(RuntimeError):
        Controller(h.kube(), RUN, poll=FAST_POLL).step()
    monkeypatch.undo()
    Controller(h.kube(), RUN, poll=FAST_POLL).step()
    reasons = [e["reason"] for e in h.double.cluster.events(NS, RUN)]
    assert reasons.count("StageStarted") == 1
    assert recorded(h.kube()).stage_state(Stage.EMBED).phase is Phase.RUNNING  # type: ignore[union-attr]


@pytest.mark.parametrize("on_failure", ["stop", "keep"])
def test_a_failed_run_releases_its_running_trainer(
        h: Harness, monkeypatch: pytest.MonkeyPatch, on_failure: str) -> None:
    """Issue 20 item 6: the trainer's workers are refused for longer than the deadline while the
    master holds its GPUs; the run fails and (onFailure: stop) the PyTorchJob is deleted, saying so.
    (Before: nothing was stopped: the master kept its 4 GPUs until someone cancelled.)"""
    import datetime as dt

    from dynamics.controller import runs
    from dynamics.controller.resources import PYTORCHJOBS

    spec = make_spec(kubernetes={"onFailure": on_failure})
    kube = submitted(h, spec)
    for stage in stages_of(spec)[:4]:
        Controller(h.kube(), RUN, poll=FAST_POLL).step()
        h.play_stage(spec, stage)
    Controller(h.kube(), RUN, poll=FAST_POLL).step()  # creates the PyTorchJob
    train = f"{RUN}-train"
    assert kube.get(PYTORCHJOBS, train) is not None
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=spec.kubernetes.stuck_after_seconds + 60)
    from kubedouble.resources import PYTORCHJOBS as DOUBLE_PYTORCHJOBS

    for at in (dt.datetime.now(dt.UTC), later - dt.timedelta(seconds=20)):
        h.double.cluster.refuse(DOUBLE_PYTORCHJOBS, NS, train, 'pods "demo-train-worker-0" is forbidden: exceeded '
                                "quota: gpu, requested: requests.nvidia.com/gpu=4, used: requests.nvidia.com/gpu=4, "
                                "limited: requests.nvidia.com/gpu=4", at=at)
    monkeypatch.setattr(runs, "now_utc", lambda: later)
    assert Controller(h.kube(), RUN, poll=FAST_POLL).step().outcome is Outcome.FAILED
    reason = recorded(kube).reason or ""
    assert "FailedCreatePod" in reason
    if on_failure == "stop":
        assert kube.get(PYTORCHJOBS, train) is None
        assert f"stopped pytorchjob/{train} to release its resources" in reason
    else:
        assert kube.get(PYTORCHJOBS, train) is not None
        assert "kept running (kubernetes.onFailure: keep)" in reason


def test_a_spec_change_mid_run_stops_the_running_stage(h: Harness) -> None:
    """Issue 20 item 6: the spec-changed failure releases the running embed Job too."""
    kube = submitted(h)
    controller = Controller(h.kube(), RUN, poll=FAST_POLL)
    controller.step()
    h.double.cluster.start_job(NS, EMBED_JOB)
    controller.step()
    cm = kube.get(CONFIG_MAPS, RUN)
    assert cm is not None
    kube.patch(CONFIG_MAPS, RUN, {"data": {C.CONFIG_SPEC_KEY: cm["data"][C.CONFIG_SPEC_KEY].replace("k: 100", "k: 7")}})
    assert controller.step().outcome is Outcome.FAILED
    assert kube.get(JOBS, EMBED_JOB) is None
    assert f"stopped job/{EMBED_JOB}" in (recorded(kube).reason or "")


def test_edit_role_user_sees_a_running_trainer_as_unknown_not_failed(h: Harness) -> None:
    """Issue 20 item 7: the built-in `edit` role may not list pytorchjobs (an unaggregated CRD); the
    recorded Running train stage must not look vanished. (Before: `dynamics status` said Failed.)"""
    from dynamics.controller.status import show_status

    kube = submitted(h)
    for stage in stages_of(SPEC)[:4]:
        Controller(h.kube(), RUN, poll=FAST_POLL).step()
        h.play_stage(SPEC, stage)
    Controller(h.kube(), RUN, poll=FAST_POLL).step()
    h.start_stage(SPEC, Stage.TRAIN)
    Controller(h.kube(), RUN, poll=FAST_POLL).step()
    assert recorded(kube).stage_state(Stage.TRAIN).phase is Phase.RUNNING  # type: ignore[union-attr]
    edit = {(verb, "", res) for verb in ("get", "list", "create", "delete", "patch")
            for res in ("configmaps", "pods", "pods/log", "services", "events")}
    h.double.allow(edit | {(verb, "batch", "jobs") for verb in ("get", "list", "delete")})
    out = io.StringIO()
    assert show_status(h.kube(), RUN, out) == 0
    text = out.getvalue()
    assert f"run {RUN} in namespace {NS}: Unknown (stage train)" in text
    assert "Failed" not in text
    assert "unknown: you may not list pytorchjobs.kubeflow.org in this namespace; the controller last " \
           "recorded it Running" in text


def test_the_controller_refuses_a_local_work_directory(h: Harness, tmp_path: Path) -> None:
    """Issue 20 item 11: a run that reached the cluster without dynamics-submit's check (e.g. `helm
    install` with run values) fails at once instead of writing into its pods' ephemeral disks."""
    workdir = tmp_path / "runs"
    spec = make_spec(storage={"workdir": str(workdir), "credentialsSecret": None})
    kube = submitted(h, spec)
    assert Controller(h.kube(), RUN, poll=FAST_POLL).step().outcome is Outcome.FAILED
    reason = recorded(kube).reason or ""
    assert f"a cluster run cannot use local storage: storage.workdir: '{workdir}' is a local path" in reason
    assert not workdir.exists()  # not even the resolved spec
    assert kube.list(JOBS, f"{C.LABEL_RUN}={RUN},{C.LABEL_STAGE}=embed") == []
