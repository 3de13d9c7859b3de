"""The controller against the loopback API double, with the test playing the cluster."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from kubedouble.harness import FAST_POLL, NS, RUN, Harness, harness, make_spec, wait_until
from kubedouble.harness import recorded as harness_recorded
from kubedouble.resources import PODS as DOUBLE_PODS

from dynamics import constants as C
from dynamics.constants import Stage
from dynamics.controller.kube import REQUIRED_PERMISSIONS, Kube
from dynamics.controller.logs import show_logs
from dynamics.controller.resources import CONFIG_MAPS, JOBS
from dynamics.controller.run import EXIT_FAILED, Controller, Outcome
from dynamics.controller.state import Phase, RunStatus
from dynamics.controller.status import cancel_run, show_status
from dynamics.controller.submit import submit
from dynamics.render import stages_of
from dynamics.spec.loader import dump_spec
from dynamics.spec.model import RunSpec
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths

SPEC = make_spec()
RUN_SELECTOR = f"{C.LABEL_RUN}={RUN}"
REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("work_bucket")






def submitted(h: Harness, spec: RunSpec = SPEC) -> Kube:
    kube = h.kube()
    assert submit(spec, kube=kube, out=io.StringIO()) == 0
    return kube


def workloads(h: Harness) -> list[str]:
    """``kubectl get jobs,pytorchjobs -l dynamics.io/run=demo -o name`` (the real kubectl)."""
    return h.kubectl.run("get", "jobs,pytorchjobs", "-l", RUN_SELECTOR, "-o", "name").stdout.split()


def stage_objects(kube: Kube) -> list[str]:
    """Every Job/PyTorchJob/Service of the run except the controller's, as kind/name."""
    from dynamics.controller.runs import list_run_objects

    objects, _ = list_run_objects(kube, RUN)
    refs = [f"{o['kind']}/{o['metadata']['name']}" for o in objects if o["kind"] in ("Job", "PyTorchJob", "Service")]
    return sorted(r for r in refs if not r.endswith(f"-{C.SUFFIX_CONTROLLER}"))


def recorded(kube: Kube) -> RunStatus:
    return harness_recorded(kube, RUN)


def status_text(kube: Kube) -> str:
    out = io.StringIO()
    show_status(kube, RUN, out)
    return out.getvalue()


def status_row(text: str, stage: Stage) -> list[str]:
    return next(line.split() for line in text.splitlines() if line.split()[:1] == [stage.value])


def test_full_run_through_every_stage(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dynamics.controller")
    kube = submitted(h)
    h.double.cluster.start_job(NS, f"{RUN}-controller", log="controller started\n")
    stop, result = h.start_controller()
    for stage in stages_of(SPEC):
        name = f"{RUN}-{stage.value}"
        kind = "pytorchjob.kubeflow.org" if stage is Stage.TRAIN else "job.batch"
        wait_until(lambda n=name: any(w.endswith(f"/{n}") for w in workloads(h)))
        assert f"{kind}/{name}" in workloads(h)
        h.start_stage(SPEC, stage)
        # mid-stage: the controller records the running stage; status and logs show it with its pods
        pods = 2 if stage in (Stage.EMBED, Stage.ASSIGN, Stage.TRAIN) else 1
        wait_until(lambda s=stage, n=pods: recorded(kube).stage_state(s).active == n)
        assert (recorded(kube).phase, recorded(kube).stage) == (Phase.RUNNING, stage)
        text = status_text(kube)
        assert text.splitlines()[0] == f"run {RUN} in namespace {NS}: Running (stage {stage.value})"
        row = status_row(text, stage)
        assert row == [stage.value, "Running", f"0/{pods}", f"{kind.split('.')[0]}/{name}", str(pods), "Running"]
        logs = io.StringIO()
        show_logs(kube, RUN, logs, stage=stage.value)
        lines = logs.getvalue().splitlines()
        assert len(lines) == pods and all(line.endswith(f"] {stage.value}: working") for line in lines)
        assert all(line.startswith(f"[{name}-") for line in lines)
        h.finish_stage(SPEC, stage)
    wait_until(lambda: "exit" in result)
    assert result["exit"] == 0
    assert recorded(kube).phase is Phase.SUCCEEDED
    assert status_text(kube).splitlines()[0] == f"run {RUN} in namespace {NS}: Succeeded"
    assert stage_objects(kube) == sorted(
        f"{'PyTorchJob' if s is Stage.TRAIN else 'Job'}/{RUN}-{s.value}" for s in stages_of(SPEC)
    )
    assert sorted(workloads(h)) == sorted(
        [f"job.batch/{RUN}-controller", f"pytorchjob.kubeflow.org/{RUN}-train"]
        + [f"job.batch/{RUN}-{s.value}" for s in stages_of(SPEC) if s is not Stage.TRAIN]
    )
    messages = [r.getMessage() for r in caplog.records]
    assert f"run {RUN}: stage embed: created job/{RUN}-embed" in messages
    assert f"run {RUN}: stage embed: Running 0/2 done, 2 active (job/{RUN}-embed)" in messages
    assert f"run {RUN}: stage train: Succeeded 2/2 (pytorchjob/{RUN}-train)" in messages
    assert messages[-1] == f"run {RUN} finished: Succeeded"
    stage_events = [("StageStarted", "StageSucceeded")] * len(stages_of(SPEC))
    assert [r for _, r, _ in events(h)] == [r for pair in stage_events for r in pair] + ["RunSucceeded"]
    all_logs = io.StringIO()
    show_logs(kube, RUN, all_logs)
    first = all_logs.getvalue().splitlines()[0]
    assert first.startswith(f"[{RUN}-controller-") and first.endswith("] controller started")
    stop.set()


def test_killing_the_controller_at_every_stage_boundary(h: Harness) -> None:
    """A controller killed after creating a stage (before or after recording status) is replaced
    by a fresh one, which neither duplicates objects nor changes the end state."""
    kube = submitted(h)
    for i, stage in enumerate(stages_of(SPEC)):
        first = Controller(h.kube(), RUN, poll=FAST_POLL)
        if i % 2:  # die between creating the stage's object and writing status.json
            first.kube.patch = _crash  # type: ignore[method-assign]
            with pytest.raises(KilledError):
                first.step()
        else:
            assert first.step().outcome is None
        # the replacement controller, started from scratch
        assert Controller(h.kube(), RUN, poll=FAST_POLL).step().outcome is None
        assert Controller(h.kube(), RUN, poll=FAST_POLL).step().outcome is None
        assert len([o for o in stage_objects(kube) if o.endswith(f"/{RUN}-{stage.value}")]) == 1
        assert recorded(kube).stage is stage
        h.play_stage(SPEC, stage)
    assert Controller(h.kube(), RUN, poll=FAST_POLL).step().outcome is Outcome.SUCCEEDED
    assert len(stage_objects(kube)) == len(stages_of(SPEC))
    interrupted = recorded(kube)

    # the same run, never interrupted, ends in exactly the same recorded state
    assert cancel_run(kube, RUN, io.StringIO(), interval_s=0.02) == 0
    submitted(h)
    for stage in stages_of(SPEC):
        Controller(h.kube(), RUN, poll=FAST_POLL).step()
        h.play_stage(SPEC, stage)
    assert Controller(h.kube(), RUN, poll=FAST_POLL).step().outcome is Outcome.SUCCEEDED
    assert recorded(kube) == interrupted


class KilledError(Exception):
    """Stands in for SIGKILL in the middle of a controller pass."""


def _crash(*args: object, **kwargs: object) -> None:
    raise KilledError


def test_sigkilled_controller_process_is_replaced(h: Harness) -> None:
    """The real `dynamics controller` process, killed with SIGKILL at two stage boundaries."""
    kube = submitted(h)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "dynamics.cli.app",
        "controller",
        "--run",
        RUN,
        "-n",
        NS,
        "--kubeconfig",
        str(h.kubeconfig),
        "--poll-min",
        "0.02",
        "--poll-max",
        "0.1",
    ]

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    for stage in (Stage.EMBED, Stage.CLUSTER_FIT):
        proc = start()
        wait_until(lambda s=stage: f"{RUN}-{s.value}" in " ".join(stage_objects(kube)), timeout=20)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        h.play_stage(SPEC, stage)
    proc = start()
    for stage in stages_of(SPEC)[2:]:
        wait_until(lambda s=stage: f"{RUN}-{s.value}" in " ".join(stage_objects(kube)), timeout=20)
        h.play_stage(SPEC, stage)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert f"run {RUN} finished: Succeeded" in output
    assert len(stage_objects(kube)) == len(stages_of(SPEC))


FAILED_LOG = "".join(f"assign: part 1, batch {i}\n" for i in range(14)) + "MemoryError: cannot allocate 4 GiB\n"
JOB_INDEX = "batch.kubernetes.io/job-completion-index"


def events(h: Harness) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Events about the run ConfigMap, oldest first."""
    return [(e["type"], e["reason"], e["message"]) for e in h.double.cluster.events(NS, RUN)]


def failed_pod(h: Harness, stage: Stage, index: int) -> str:
    [pod] = h.double.cluster.pods(NS, **{C.LABEL_STAGE: stage.value, JOB_INDEX: str(index)})
    return pod["metadata"]["name"]


def test_failed_index_fails_the_run_with_exit_codes_and_log_tail(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dynamics.controller")
    kube = submitted(h)
    stop, result = h.start_controller()
    for stage in (Stage.EMBED, Stage.CLUSTER_FIT):
        wait_until(lambda s=stage: f"Job/{RUN}-{s.value}" in stage_objects(kube))
        h.play_stage(SPEC, stage)
    wait_until(lambda: f"Job/{RUN}-assign" in stage_objects(kube))
    h.play_stage(
        SPEC, Stage.ASSIGN, succeed=False, failed_indexes=[1], exit_code=137, reason="OOMKilled", log=FAILED_LOG
    )
    wait_until(lambda: "exit" in result)
    assert result["exit"] == EXIT_FAILED
    pod = failed_pod(h, Stage.ASSIGN, 1)
    stage_reason = f"FailedIndexes: Job has failed indexes (failed indexes: 1); pod {pod}: exit code 137 (OOMKilled)"
    reason = f"stage assign failed: {stage_reason}"
    tail = FAILED_LOG.splitlines()[-10:]
    details = [
        "failed pods of stage assign:",
        f"  {pod} (container assign): exit code 137 (OOMKilled)",
        f"last 10 log lines of {pod}:",
        *(f"  | {line}" for line in tail),
    ]
    # `dynamics status`: the table, a one-line reason, then the failed pods and the log tail
    lines = status_text(kube).splitlines()
    assert lines[0] == f"run {RUN} in namespace {NS}: Failed"
    assert status_row("\n".join(lines), Stage.ASSIGN)[:3] == ["assign", "Failed", "1/2"]
    at = lines.index(f"reason: {reason}")
    assert lines[at + 1 :] == ["", *details]
    # the controller's log
    messages = [r.getMessage() for r in caplog.records]
    failed_at = messages.index(f"run {RUN}: stage assign: Failed (job/{RUN}-assign): {stage_reason}")
    assert messages[failed_at + 1 : failed_at + 1 + len(details)] == [f"run {RUN}: {line}" for line in details]
    assert f"run {RUN}: run failed: {reason}" in messages
    assert messages[-1] == f"run {RUN} finished: Failed ({reason})"
    assert f"Job/{RUN}-scale" not in stage_objects(kube)
    # Events on the run ConfigMap, as `kubectl describe configmap` shows them
    started = [("Normal", "StageStarted", f"stage {s} started (job/{RUN}-{s})") for s in ("embed", "cluster-fit")]
    assert events(h) == [
        started[0],
        ("Normal", "StageSucceeded", f"stage embed succeeded 2/2 (job/{RUN}-embed)"),
        started[1],
        ("Normal", "StageSucceeded", f"stage cluster-fit succeeded 1/1 (job/{RUN}-cluster-fit)"),
        ("Normal", "StageStarted", f"stage assign started (job/{RUN}-assign)"),
        ("Warning", "StageFailed", f"stage assign failed (job/{RUN}-assign): {stage_reason}"),
        ("Warning", "RunFailed", f"run failed: {reason}"),
    ]
    described = h.kubectl.run("describe", "configmap", RUN).stdout
    assert "Warning  RunFailed" in described and "Normal   StageStarted" in described
    listed = h.kubectl.run("get", "events", "--field-selector", f"involvedObject.name={RUN}").stdout
    assert listed.split()[:5] == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT"] and f"configmap/{RUN}" in listed
    # a restarted controller does not resurrect a failed run, nor repeat its Events
    assert Controller(h.kube(), RUN, poll=FAST_POLL).loop() == EXIT_FAILED
    assert len(events(h)) == 7
    stop.set()


def fail_first_stage(h: Harness, **failure: object) -> RunStatus:
    """Submit, let a controller create the embed Job, fail index 0 (exit 137), and end the run."""
    kube = submitted(h)
    assert Controller(h.kube(), RUN, poll=FAST_POLL).step().outcome is None
    h.play_stage(SPEC, Stage.EMBED, succeed=False, failed_indexes=[0], exit_code=137, reason="OOMKilled", **failure)
    assert Controller(h.kube(), RUN, poll=FAST_POLL).step().outcome is Outcome.FAILED
    return recorded(kube)


CONDITION = "stage embed failed: FailedIndexes: Job has failed indexes (failed indexes: 0)"


@pytest.mark.parametrize(
    ("forbidden", "has_exit_code", "has_log"),
    [(("get", "", "pods/log"), True, False), (("list", "", "pods"), False, False)],
)
def test_unreadable_pods_or_logs_fall_back_to_the_condition(
    h: Harness, caplog: pytest.LogCaptureFixture, forbidden: tuple[str, str, str], has_exit_code: bool, has_log: bool
) -> None:
    h.double.allow([p for p in REQUIRED_PERMISSIONS if p != forbidden])
    status = fail_first_stage(h)
    assert status.reason is not None and status.reason.startswith(CONDITION)
    assert ("exit code 137 (OOMKilled)" in status.reason) is has_exit_code
    embed = status.stage_state(Stage.EMBED)
    assert embed is not None and any(p.log_tail for p in embed.pods) is has_log
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "permission denied" in warnings[0]


def test_pod_gone_before_its_log_is_read(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    real_log = Kube.log

    def deleted_first(kube: Kube, pod: str, **kwargs: object) -> str:
        h.double.store.delete(DOUBLE_PODS, NS, pod)
        return real_log(kube, pod, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Kube, "log", deleted_first)
    status = fail_first_stage(h, log="never read\n")
    assert status.reason is not None and status.reason.startswith(f"{CONDITION}; pod {RUN}-embed-0-")
    assert status.reason.endswith(": exit code 137 (OOMKilled)")
    embed = status.stage_state(Stage.EMBED)
    assert embed is not None and [p.log_tail for p in embed.pods] == [()]


def test_forbidden_events_warn_once_and_the_run_goes_on(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    h.double.allow([p for p in REQUIRED_PERMISSIONS if p != ("create", "", "events")])
    kube = submitted(h)
    controller = Controller(h.kube(), RUN, poll=FAST_POLL)
    for stage in stages_of(SPEC):
        assert controller.step().outcome is None
        h.play_stage(SPEC, stage)
    assert controller.step().outcome is Outcome.SUCCEEDED
    assert recorded(kube).phase is Phase.SUCCEEDED and h.double.cluster.events(NS) == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f'run {RUN}: permission denied: cannot create events in namespace "{NS}"; continuing without recording Events'
    ]


def test_resolved_spec_is_written_once_and_storage_trouble_is_not_fatal(
    h: Harness, s3_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dynamics.controller")
    spec = make_spec(storage={"workdir": f"{s3_bucket}/runs"})
    submitted(h, spec)
    uri = RunPaths.for_run(spec.storage.workdir, RUN).spec
    assert Controller(h.kube(), RUN, poll=FAST_POLL).step().outcome is None
    assert storage.read_bytes(uri).decode() == dump_spec(spec)
    assert f"run {RUN}: wrote the resolved spec to {uri}" in [r.getMessage() for r in caplog.records]
    storage.write_bytes(uri, b"kept")  # an existing spec.yaml is left alone
    assert Controller(h.kube(), RUN, poll=FAST_POLL).step().outcome is None
    assert storage.read_bytes(uri) == b"kept"
    # a work directory the controller cannot write to: a warning, and the run goes on
    other = make_spec(name="other", storage={"workdir": f"{s3_bucket}-missing/runs"})
    submitted(h, other)
    caplog.clear()
    assert Controller(h.kube(), "other", poll=FAST_POLL).step().outcome is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings[0].startswith("run other: could not write the resolved spec: ") and "-missing" in warnings[0]
    assert warnings[1].startswith("run other: cannot coordinate shared stages") and len(warnings) == 2
    assert any(j["metadata"]["name"] == "other-embed" for j in h.kube().list(JOBS))


def test_pytorchjob_failure_reason_reaches_status(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dynamics.controller")
    kube = submitted(h)
    for stage in stages_of(SPEC)[:4]:
        Controller(h.kube(), RUN, poll=FAST_POLL).step()
        h.play_stage(SPEC, stage)
    Controller(h.kube(), RUN, poll=FAST_POLL).step()
    h.play_stage(
        SPEC,
        Stage.TRAIN,
        succeed=False,
        message="PyTorchJob demo-train is failed because 1 Worker replica(s) failed.",
        exit_code=1,
        log="step 10\nRuntimeError: NCCL error\n",
    )
    assert Controller(h.kube(), RUN, poll=FAST_POLL).step().outcome is Outcome.FAILED
    assert recorded(kube).reason == (
        "stage train failed: PyTorchJobFailed: PyTorchJob demo-train is failed because 1 Worker replica(s) failed.; "
        f"pods {RUN}-train-master-0: exit code 1 (Error), {RUN}-train-worker-0: exit code 1 (Error)"
    )
    text = status_text(kube)
    assert f"reason: {recorded(kube).reason}" in text
    assert text.rstrip().endswith(
        f"last 2 log lines of {RUN}-train-master-0:\n  | step 10\n  | RuntimeError: NCCL error"
    )
    assert caplog.records[-1].getMessage() == f"run {RUN} finished: Failed ({recorded(kube).reason})"


def test_missing_training_operator_fails_before_any_stage(h: Harness) -> None:
    h.double.kubeflow = False
    kube = submitted(h)
    assert Controller(h.kube(), RUN, poll=FAST_POLL).step().outcome is Outcome.FAILED
    assert stage_objects(kube) == []
    assert "PyTorchJob CRD (kubeflow.org/v1) is not installed" in (recorded(kube).reason or "")


def test_cancel_deletes_everything_and_stops_the_controller(tmp_path: Path) -> None:
    with harness(tmp_path, gc_delay=0.2) as h:
        kube = submitted(h)
        stop, result = h.start_controller()
        wait_until(lambda: f"Job/{RUN}-embed" in stage_objects(kube))
        h.double.cluster.start_job(NS, f"{RUN}-embed")
        out = io.StringIO()
        assert cancel_run(kube, RUN, out, interval_s=0.02) == 0
        assert out.getvalue().splitlines()[-1] == f"cancelled run {RUN}: deleted its ConfigMap and 2 objects"
        assert workloads(h) == [] and kube.get(CONFIG_MAPS, RUN) is None
        wait_until(lambda: "exit" in result)
        assert result["exit"] == 0
        stop.set()


def test_missing_permission_is_fatal_but_unreachable_is_retried(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    submitted(h)
    h.double.allow([p for p in REQUIRED_PERMISSIONS if p != ("patch", "", "configmaps")])
    assert Controller(h.kube(), RUN, poll=FAST_POLL).loop() == EXIT_FAILED  # not retried (a Job retry loop)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors[0].startswith(f'run {RUN}: permission denied: cannot patch configmaps in namespace "{NS}"')
    caplog.clear()
    h.double.stop()
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    assert Controller(h.kube(), RUN, poll=FAST_POLL, stop=stop).loop() == 0  # kept retrying until stopped
    warnings = [
        r.getMessage() for r in caplog.records if r.name == "dynamics.controller" and r.levelno >= logging.WARNING
    ]
    assert warnings and all("cannot reach the Kubernetes API server" in w for w in warnings)


def test_a_refused_read_is_recorded_as_the_runs_failure(h: Harness) -> None:
    """Issue 20 item 5: a 403 on a call other than create (here: listing a running stage's pods)
    ends the controller and the run's status says why. (Before: it exited and the status stayed Running.)"""
    kube = submitted(h)
    controller = Controller(h.kube(), RUN, poll=FAST_POLL)
    controller.step()
    h.double.cluster.start_job(NS, f"{RUN}-embed")
    controller.step()
    assert recorded(kube).phase is Phase.RUNNING
    h.double.allow([p for p in REQUIRED_PERMISSIONS if p != ("list", "", "pods")])
    assert Controller(h.kube(), RUN, poll=FAST_POLL).loop() == EXIT_FAILED
    h.double.allow(None)
    status = recorded(kube)
    assert status.phase is Phase.FAILED and status.stage is Stage.EMBED
    assert "the controller cannot continue: permission denied: cannot list pods" in (status.reason or "")
    assert "fix: install the dynamics chart" in (status.reason or "")
    assert [e["reason"] for e in h.double.cluster.events(NS, RUN)][-1] == "RunFailed"


def test_a_401_is_retried_while_the_token_rotates(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 20 item 5: 401 is not permanent (projected tokens rotate); a lasting 401 still ends it."""
    from dynamics.controller.run import MAX_UNAUTHORIZED_PASSES

    submitted(h)
    controller = Controller(h.kube(), RUN, poll=FAST_POLL)
    h.double.policy.token = "rotated"  # the controller's credentials are refused for a while
    for _ in range(3):
        assert controller._guarded_step() == (None, False)
    assert any("retrying: service account tokens rotate" in r.getMessage() for r in caplog.records)
    h.double.policy.token = None  # the new token is in place
    assert controller._guarded_step()[0] is None
    assert recorded(h.kube()).phase is not Phase.FAILED
    h.double.policy.token = "revoked"
    outcomes = [controller._guarded_step()[0] for _ in range(MAX_UNAUTHORIZED_PASSES)]
    assert outcomes[:-1] == [None] * (MAX_UNAUTHORIZED_PASSES - 1) and outcomes[-1] is Outcome.REFUSED
