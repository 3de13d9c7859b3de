"""The controller against the loopback API double, with the test playing the cluster."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubedouble.harness import FAST_POLL, NS, RUN, Harness, ensure_work_bucket, harness, make_spec

from dynamics import constants as C
from dynamics.constants import Stage
from dynamics.controller.kube import REQUIRED_PERMISSIONS, Kube
from dynamics.controller.logs import show_logs
from dynamics.controller.resources import CONFIG_MAPS
from dynamics.controller.run import EXIT_FAILED, Controller, Outcome
from dynamics.controller.state import Phase, RunStatus
from dynamics.controller.status import cancel_run, show_status
from dynamics.controller.submit import submit
from dynamics.errors import KubeError
from dynamics.render import stages_of
from dynamics.spec import RunSpec

SPEC = make_spec()
RUN_SELECTOR = f"{C.LABEL_RUN}={RUN}"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def work_bucket(s3_env: object) -> None:
    """Controllers write the resolved spec to the work directory: on the moto server, never elsewhere."""
    ensure_work_bucket()


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with harness(tmp_path, gc_delay=0.05) as h:
        yield h


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


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
    refs = [f"{o['kind']}/{o['metadata']['name']}" for o in objects]
    return sorted(r for r in refs if not r.endswith(f"-{C.SUFFIX_CONTROLLER}"))


def recorded(kube: Kube) -> RunStatus:
    cm = kube.get(CONFIG_MAPS, RUN)
    assert cm is not None
    status = RunStatus.loads(cm["data"].get(C.CONFIG_STATUS_KEY))
    assert status is not None
    return status


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
        "dynamics.cli",
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


def test_failed_index_fails_the_run(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dynamics.controller")
    kube = submitted(h)
    stop, result = h.start_controller()
    for stage in (Stage.EMBED, Stage.CLUSTER_FIT):
        wait_until(lambda s=stage: f"Job/{RUN}-{s.value}" in stage_objects(kube))
        h.play_stage(SPEC, stage)
    wait_until(lambda: f"Job/{RUN}-assign" in stage_objects(kube))
    h.play_stage(SPEC, Stage.ASSIGN, succeed=False, failed_indexes=[1])
    wait_until(lambda: "exit" in result)
    assert result["exit"] == EXIT_FAILED
    reason = "stage assign failed: FailedIndexes: Job has failed indexes (failed indexes: 1)"
    text = status_text(kube)
    assert text.splitlines()[0] == f"run {RUN} in namespace {NS}: Failed"
    assert status_row(text, Stage.ASSIGN)[:3] == ["assign", "Failed", "1/2"]
    assert f"reason: {reason}" in text
    messages = [r.getMessage() for r in caplog.records]
    assert f"run {RUN}: run failed: {reason}" in messages
    assert messages[-1] == f"run {RUN} finished: Failed ({reason})"
    assert f"Job/{RUN}-scale" not in stage_objects(kube)
    # a restarted controller does not resurrect a failed run
    assert Controller(h.kube(), RUN, poll=FAST_POLL).loop() == EXIT_FAILED
    stop.set()


def test_pytorchjob_failure_reason_reaches_status(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dynamics.controller")
    kube = submitted(h)
    for stage in stages_of(SPEC)[:4]:
        Controller(h.kube(), RUN, poll=FAST_POLL).step()
        h.play_stage(SPEC, stage)
    Controller(h.kube(), RUN, poll=FAST_POLL).step()
    h.play_stage(
        SPEC, Stage.TRAIN, succeed=False, message="PyTorchJob demo-train is failed because 1 Worker replica(s) failed."
    )
    assert Controller(h.kube(), RUN, poll=FAST_POLL).step().outcome is Outcome.FAILED
    assert recorded(kube).reason == (
        "stage train failed: PyTorchJobFailed: PyTorchJob demo-train is failed because 1 Worker replica(s) failed."
    )
    assert f"reason: {recorded(kube).reason}" in status_text(kube)
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
    with pytest.raises(KubeError) as err:
        Controller(h.kube(), RUN, poll=FAST_POLL).loop()
    assert err.value.message.startswith(f'permission denied: cannot patch configmaps in namespace "{NS}"')
    h.double.stop()
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    assert Controller(h.kube(), RUN, poll=FAST_POLL, stop=stop).loop() == 0  # kept retrying until stopped
    warnings = [
        r.getMessage() for r in caplog.records if r.name == "dynamics.controller" and r.levelno >= logging.WARNING
    ]
    assert warnings and all("cannot reach the Kubernetes API server" in w for w in warnings)
