"""Issue 20 item 8: `dynamics logs RUN -f` follows a run's pods as they come and go, waits for pods that
have not started, and ends with the run; the printed kubectl line survives pods waiting to start.

The double answers pod logs as kube-apiserver and the kubelet do (tests/kubedouble/streams.py): 204
for a pod with no node yet, 400 "is waiting to start: ContainerCreating" for a container not started.
"""

from __future__ import annotations

import io
import subprocess
import threading
import time

import pytest
from kubedouble.harness import NS, RUN, Harness, make_spec
from kubedouble.kubectl import KUBECTL
from kubedouble.resources import CONFIG_MAPS, PODS

from dynamics import constants as C
from dynamics.constants import Stage
from dynamics.controller.logs import follow_over, log_source, pod_started, show_logs, unscheduled
from dynamics.controller.state import Phase, RunStatus, StageState
from dynamics.controller.submit import submit
from dynamics.render.logcmd import log_command

pytestmark = pytest.mark.usefixtures("work_bucket")

POLL_S = 0.05
UNSCHEDULABLE = "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."


def test_follow_ends_when_no_new_pod_can_come() -> None:
    running = RunStatus(Phase.RUNNING, Stage.TRAIN, stages=(StageState(Stage.EMBED, Phase.SUCCEEDED),
                                                            StageState(Stage.TRAIN, Phase.RUNNING)))
    assert follow_over(False, None, None) is True  # cancelled: its ConfigMap (and pods) are gone
    assert follow_over(None, None, None) is None  # the ConfigMap cannot be read
    assert follow_over(True, None, None) is False  # submitted, not started
    assert follow_over(True, running, None) is False
    assert follow_over(True, running, "embed") is True and follow_over(True, running, "train") is False
    assert follow_over(True, RunStatus(Phase.FAILED, Stage.EMBED), "train") is True


def test_pod_states() -> None:
    waiting = {"status": {"phase": "Pending", "containerStatuses": [{"state": {"waiting": {}}}]}}
    restarted = {"status": {"phase": "Running", "containerStatuses": [
        {"state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"exitCode": 1}}}]}}
    assert not pod_started(waiting) and pod_started(restarted) and pod_started({"status": {"phase": "Failed"}})
    # the log the kubelet serves: the running container's, else the last terminated one's (CrashLoopBackOff)
    restarted["status"]["containerStatuses"][0].update(name="main")
    restarted["status"]["containerStatuses"][0]["lastState"]["terminated"]["containerID"] = "containerd://a"
    assert log_source(restarted, "main") == "containerd://a" and log_source(waiting, "main") is None
    running = {"status": {"containerStatuses": [{"name": "main", "containerID": "containerd://b",
                                                 "state": {"running": {}}, "lastState": restarted["status"][
                                                     "containerStatuses"][0]["lastState"]}]}}
    assert log_source(running, "main") == "containerd://b"
    condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": UNSCHEDULABLE}
    assert unscheduled({"status": {"conditions": [condition]}}) == f"not scheduled yet: {UNSCHEDULABLE}"


def _labels(stage: str) -> dict[str, str]:
    return {C.LABEL_RUN: RUN, C.LABEL_STAGE: stage}


def _unschedulable_pod(h: Harness, name: str) -> None:
    """A pod the scheduler could not place: no node, no container statuses (the log answer is 204)."""
    h.double.cluster.create_pod(NS, name, labels=_labels("embed"), phase="Pending")
    pod = h.double.store.get(PODS, NS, name)
    pod["status"] = {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": UNSCHEDULABLE}]}
    h.double.store.replace(PODS, NS, name, pod, status=True)


def _record(h: Harness, status: RunStatus) -> None:
    cm = h.double.store.get(CONFIG_MAPS, NS, RUN)
    cm["data"][C.CONFIG_STATUS_KEY] = status.dumps()
    h.double.store.replace(CONFIG_MAPS, NS, RUN, cm)


def by_pod(text: str) -> dict[str, list[str]]:
    """{pod: its lines in the order printed} from ``[pod] line`` output."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        pod, _, rest = line[1:].partition("] ")
        out.setdefault(pod, []).append(rest)
    return out


def _eventually(predicate: object, what: str) -> None:
    deadline = time.monotonic() + 10
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_follow_waits_for_pending_pods_and_picks_up_new_ones(h: Harness) -> None:
    """Before: the Pending pod's follow ended at once with its 400, and the train pod was never seen."""
    submit(make_spec(), kube=h.kube(), out=io.StringIO())
    cluster = h.double.cluster
    cluster.create_pod(NS, f"{RUN}-embed-0", labels=_labels("embed"), phase="Pending")  # ContainerCreating
    _unschedulable_pod(h, f"{RUN}-embed-1")
    out, result = io.StringIO(), {}
    thread = threading.Thread(target=lambda: result.update(exit=show_logs(h.kube(), RUN, out, follow=True,
                                                                           poll_s=POLL_S)), daemon=True)
    thread.start()
    said = (f"[{RUN}-embed-0] (waiting to start: ContainerCreating)",
            f"[{RUN}-embed-1] (not scheduled yet: {UNSCHEDULABLE})")
    _eventually(lambda: all(line in out.getvalue() for line in said), "the waiting reasons")
    for i in (0, 1):  # the first starts, then the second is scheduled and starts
        cluster.set_pod_phase(NS, f"{RUN}-embed-{i}", "Running")
        cluster.set_log(NS, f"{RUN}-embed-{i}", f"embed part {i}\n")
    _eventually(lambda: f"[{RUN}-embed-1] embed part 1" in out.getvalue(), "the started pods' logs")
    cluster.set_log(NS, f"{RUN}-embed-0", "embed part 0 done\n", append=True)
    for i in (0, 1):
        cluster.set_pod_phase(NS, f"{RUN}-embed-{i}", "Succeeded")
    cluster.create_pod(NS, f"{RUN}-train-master-0", labels=_labels("train"), log="step 1\n")  # a later stage
    _eventually(lambda: f"[{RUN}-train-master-0] step 1" in out.getvalue(), "the new pod's log")
    time.sleep(5 * POLL_S)
    assert thread.is_alive()  # the run is still running: more pods may come
    cluster.set_log(NS, f"{RUN}-train-master-0", "step 2\n", append=True)
    _record(h, RunStatus(Phase.SUCCEEDED))
    cluster.set_pod_phase(NS, f"{RUN}-train-master-0", "Succeeded")
    thread.join(timeout=10)
    assert result == {"exit": 0}
    assert by_pod(out.getvalue()) == {  # each pod's lines in order, once (pods interleave)
        f"{RUN}-embed-0": ["(waiting to start: ContainerCreating)", "embed part 0", "embed part 0 done"],
        f"{RUN}-embed-1": [f"(not scheduled yet: {UNSCHEDULABLE})", "embed part 1"],
        f"{RUN}-train-master-0": ["step 1", "step 2"],
    }


def _container_state(h: Harness, name: str, container_id: str, restarts: int) -> None:
    pod = h.double.store.get(PODS, NS, name)
    status = pod["status"]["containerStatuses"][0]
    if restarts:
        status["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error", "containerID": status["containerID"]}}
    status.update(containerID=container_id, restartCount=restarts)
    h.double.store.replace(PODS, NS, name, pod, status=True)


def test_follow_prints_a_restarted_containers_new_log_from_its_start(h: Harness) -> None:
    submit(make_spec(), kube=h.kube(), out=io.StringIO())
    name = f"{RUN}-train-master-0"
    h.double.cluster.create_pod(NS, name, labels=_labels("train"), log="first 1\nfirst 2\n")
    _container_state(h, name, "containerd://first", 0)
    out, result = io.StringIO(), {}
    thread = threading.Thread(target=lambda: result.update(exit=show_logs(h.kube(), RUN, out, follow=True,
                                                                           poll_s=POLL_S)), daemon=True)
    thread.start()
    _eventually(lambda: "first 2" in out.getvalue(), "the first container's log")
    h.double.cluster.set_log(NS, name, "second 1\n")  # the new container's own log file
    _container_state(h, name, "containerd://second", 1)
    _eventually(lambda: "second 1" in out.getvalue(), "the restarted container's log")
    _record(h, RunStatus(Phase.SUCCEEDED))
    h.double.cluster.set_pod_phase(NS, name, "Succeeded")
    thread.join(timeout=10)
    assert result == {"exit": 0}
    assert out.getvalue().splitlines() == [f"[{name}] first 1", f"[{name}] first 2", f"[{name}] second 1"]


def test_follow_of_a_finished_run_prints_and_ends_and_an_unknown_run_is_an_error(h: Harness) -> None:
    submit(make_spec(), kube=h.kube(), out=io.StringIO())
    h.double.cluster.create_pod(NS, f"{RUN}-embed-0", labels=_labels("embed"), phase="Succeeded", log="done\n")
    h.double.cluster.create_pod(NS, f"{RUN}-train-0", labels=_labels("train"), phase="Pending")
    _record(h, RunStatus(Phase.FAILED, Stage.TRAIN))  # the train pod never started: not waited for
    out = io.StringIO()
    assert show_logs(h.kube(), RUN, out, follow=True, poll_s=POLL_S) == 0
    assert out.getvalue().splitlines() == [f"[{RUN}-embed-0] done",
                                           f"[{RUN}-train-0] (waiting to start: ContainerCreating)"]
    out = io.StringIO()
    assert show_logs(h.kube(), "other", out, follow=True, poll_s=POLL_S) == 1
    assert out.getvalue() == f"no run other in namespace {NS}, and no pods of it\n"


def test_printed_kubectl_line_survives_a_pod_waiting_to_start(h: Harness) -> None:
    """Real kubectl v1.35 against the double: the old line ended at once (exit 1) on the Pending pod."""
    cluster = h.double.cluster
    cluster.create_pod(NS, f"{RUN}-embed-0", labels=_labels("embed"), log="embedded\n")
    cluster.create_pod(NS, f"{RUN}-embed-1", labels=_labels("embed"), phase="Pending")
    old = h.kubectl.run("logs", "-n", NS, "-l", f"{C.LABEL_RUN}={RUN}", "-f", "--prefix", check=False)
    waiting = f'container "main" in pod "{RUN}-embed-1" is waiting to start: ContainerCreating'
    assert old.returncode == 1 and old.stderr == f"Error from server (BadRequest): {waiting}\n"
    command = log_command(make_spec(), NS).split()
    assert command[:2] == ["kubectl", "logs"] and "--ignore-errors" in command
    kubectl = [str(KUBECTL), "--kubeconfig", str(h.kubectl.kubeconfig), "--cache-dir", str(h.kubectl.cache_dir)]
    proc = subprocess.Popen([*kubectl, *command[1:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    assert proc.poll() is None  # still following the running pod
    cluster.set_log(NS, f"{RUN}-embed-0", "more\n", append=True)
    time.sleep(0.5)
    cluster.set_pod_phase(NS, f"{RUN}-embed-0", "Succeeded")
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert f"[pod/{RUN}-embed-0/main] embedded" in stdout and f"[pod/{RUN}-embed-0/main] more" in stdout
    assert f"error: {waiting}" in stdout  # --ignore-errors: the waiting pod's error is a line of the output
