"""The controller's pure decision and state reading: no API server involved."""

from __future__ import annotations

import copy
import itertools
from collections import Counter
from typing import Any

from kubedouble.harness import make_spec

from dynamics.constants import Stage
from dynamics.controller.decide import (
    CRD_MISSING_REASON,
    CreateObject,
    Finish,
    Observed,
    WriteStatus,
    failed_stages,
    next_actions,
    stage_states,
)
from dynamics.controller.report import (
    EventReason,
    RunEvent,
    describe_changes,
    failure_details,
    run_events,
    stage_line,
    status_report,
)
from dynamics.controller.state import (
    MAX_TEXT_CHARS,
    Phase,
    PodFailure,
    RunStatus,
    StageState,
    failed_pods,
    log_tail,
    pod_failure,
)
from dynamics.render import render_stage, stages_of

SPEC = make_spec()


def live(obj: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["metadata"]["uid"] = f"uid-{obj['metadata']['name']}"
    if status is not None:
        out["status"] = status
    return out


def cond(kind: str, reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": kind, "status": "True", "reason": reason, "message": message}


def workload(stage: Stage) -> dict[str, Any]:
    return render_stage(SPEC, stage)[-1]


def succeeded(stage: Stage) -> dict[str, Any]:
    obj = workload(stage)
    if obj["kind"] == "PyTorchJob":
        return live(obj, {"conditions": [cond("Running"), cond("Succeeded", "PyTorchJobSucceeded")]})
    n = obj["spec"].get("completions", 1)
    return live(obj, {"succeeded": n, "conditions": [cond("SuccessCriteriaMet"), cond("Complete")]})


def done_until(stage: Stage) -> list[dict[str, Any]]:
    """Live objects of every stage before ``stage``, all succeeded."""
    stages = stages_of(SPEC)
    return [succeeded(s) for s in stages[: stages.index(stage)]]


def creates(actions: list[Any]) -> list[tuple[str, str]]:
    return [(a.obj["kind"], a.obj["metadata"]["name"]) for a in actions if isinstance(a, CreateObject)]


def test_fresh_run_creates_the_first_stage_only() -> None:
    actions = next_actions(SPEC, Observed())
    assert creates(actions) == [("Job", "demo-embed")]
    status = actions[-1].status
    assert isinstance(actions[-1], WriteStatus)
    assert (status.phase, status.stage) == (Phase.PENDING, Stage.EMBED)
    assert [s.stage for s in status.stages] == list(stages_of(SPEC))


def test_each_boundary_creates_the_next_stage() -> None:
    stages = stages_of(SPEC)
    for before, after in itertools.pairwise(stages):
        actions = next_actions(SPEC, Observed.of(done_until(after)))
        assert {a.stage for a in actions if isinstance(a, CreateObject)} == {after}, before
        assert actions[-1].status.phase is Phase.RUNNING


def test_running_stage_waits_and_reports_progress() -> None:
    embed = live(workload(Stage.EMBED), {"succeeded": 1, "active": 1})
    actions = next_actions(SPEC, Observed.of([embed]))
    assert creates(actions) == []
    state = actions[-1].status.stage_state(Stage.EMBED)
    assert (state.phase, state.done, state.total, state.active, state.object) == (
        Phase.RUNNING,
        1,
        2,
        1,
        "job/demo-embed",
    )
    assert stage_line(state) == "stage embed: Running 1/2 done, 1 active (job/demo-embed)"


def test_all_succeeded_finishes() -> None:
    actions = next_actions(SPEC, Observed.of([*done_until(Stage.EVAL), succeeded(Stage.EVAL)]))
    assert isinstance(actions[0], WriteStatus) and actions[0].status.phase is Phase.SUCCEEDED
    assert actions[-1] == Finish(Phase.SUCCEEDED, None)


def test_failed_index_fails_the_run_with_its_reason() -> None:
    message = "Job has failed indexes"
    assign = live(
        workload(Stage.ASSIGN),
        {"failed": 1, "succeeded": 1, "failedIndexes": "1", "conditions": [cond("Failed", "FailedIndexes", message)]},
    )
    actions = next_actions(SPEC, Observed.of([*done_until(Stage.ASSIGN), assign]))
    assert creates(actions) == []
    reason = "stage assign failed: FailedIndexes: Job has failed indexes (failed indexes: 1)"
    assert actions[-1] == Finish(Phase.FAILED, reason)
    assert actions[0].status.reason == reason and actions[0].status.stage is Stage.ASSIGN


def test_pytorchjob_failed_condition_fails_the_run() -> None:
    train = live(workload(Stage.TRAIN), {"conditions": [cond("Failed", "PyTorchJobFailed", "Worker OOMKilled")]})
    actions = next_actions(SPEC, Observed.of([*done_until(Stage.TRAIN), train]))
    assert actions[-1] == Finish(Phase.FAILED, "stage train failed: PyTorchJobFailed: Worker OOMKilled")


def test_recorded_terminal_status_is_sticky() -> None:
    recorded = RunStatus(Phase.FAILED, Stage.EMBED, "stage embed failed: x")
    assert next_actions(SPEC, Observed(recorded=recorded)) == [Finish(Phase.FAILED, "stage embed failed: x")]


def test_recorded_success_survives_ttl_deletion() -> None:
    """A finished Job removed by ttlSecondsAfterFinished still counts as done (no re-run)."""
    recorded = RunStatus(
        Phase.RUNNING, Stage.CLUSTER_FIT, stages=(StageState(Stage.EMBED, Phase.SUCCEEDED, "job/demo-embed", 2, 2),)
    )
    actions = next_actions(SPEC, Observed(recorded=recorded))
    assert creates(actions) == [("Job", "demo-cluster-fit")]


def test_missing_crd_fails_fast_before_creating_anything() -> None:
    actions = next_actions(SPEC, Observed(unserved_kinds=frozenset({"PyTorchJob"})))
    assert creates(actions) == []
    assert actions[-1] == Finish(Phase.FAILED, f"stage train failed: {CRD_MISSING_REASON}")
    indexed = make_spec(train={"launcher": "indexed-job"})
    assert creates(next_actions(indexed, Observed(unserved_kinds=frozenset({"PyTorchJob"})))) == [("Job", "demo-embed")]


def test_indexed_trainer_creates_only_its_missing_objects() -> None:
    spec = make_spec(train={"launcher": "indexed-job"})
    before = [o for o in (succeeded(s) for s in stages_of(spec)[:4])]
    pdb, service, _ = (live(o) for o in render_stage(spec, Stage.TRAIN))
    assert creates(next_actions(spec, Observed.of(before))) == [
        ("PodDisruptionBudget", "demo-train"), ("Service", "demo-train"), ("Job", "demo-train")]
    assert creates(next_actions(spec, Observed.of([*before, pdb, service]))) == [("Job", "demo-train")]


def test_later_stages_stay_pending_until_earlier_ones_succeed() -> None:
    states = stage_states(SPEC, Observed.of([live(workload(Stage.EMBED), {"active": 2})]))
    assert [s.phase for s in states] == [Phase.RUNNING] + [Phase.PENDING] * 5


def test_status_json_round_trip_and_garbage() -> None:
    status = next_actions(SPEC, Observed.of(done_until(Stage.ASSIGN)))[-1].status
    assert RunStatus.loads(status.dumps()) == status
    assert RunStatus.loads("{not json") is None and RunStatus.loads(None) is None


def test_progress_lines_and_status_table() -> None:
    first = next_actions(SPEC, Observed())[-1].status
    running = next_actions(SPEC, Observed.of([live(workload(Stage.EMBED), {"active": 2})]))[-1].status
    assert describe_changes(None, first) == []
    assert describe_changes(first, running) == ["stage embed: Running 0/2 done, 2 active (job/demo-embed)"]
    table = status_report("demo", "team", running, {Stage.EMBED: Counter({"Running": 2})})
    lines = table.splitlines()
    assert lines[0] == "run demo in namespace team: Running (stage embed)"
    assert lines[2].split() == ["STAGE", "STATE", "PROGRESS", "OBJECT", "PODS"]
    assert lines[3].split() == ["embed", "Running", "0/2", "job/demo-embed", "2", "Running"]
    assert lines[4].split() == ["cluster-fit", "Pending", "-", "-", "-"]


# --- failed pods, failure details and Events (pure) ---


def pod(name: str, phase: str, *statuses: dict[str, Any], index: int | None = None, **status: Any) -> dict[str, Any]:
    labels = {"batch.kubernetes.io/job-completion-index": str(index)} if index is not None else {}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "main"}]},
        "status": {"phase": phase, "containerStatuses": list(statuses), **status},
    }


def terminated(code: int, reason: str, key: str = "state", message: str | None = None) -> dict[str, Any]:
    ended = {"exitCode": code, "reason": reason, **({"message": message} if message else {})}
    return {"name": "main", key: {"terminated": ended}}


def test_pod_failure_reads_exit_codes_and_reasons() -> None:
    assert pod_failure(pod("a", "Failed", terminated(137, "OOMKilled"))) == PodFailure("a", "main", 137, "OOMKilled")
    restarted = {"name": "main", "state": {"running": {}}, "lastState": terminated(1, "Error")["state"]}
    assert pod_failure(pod("b", "Running", restarted)) == PodFailure("b", "main", 1, "Error")
    evicted = pod("c", "Failed", reason="Evicted", message="The node was low on resource: memory.")
    assert pod_failure(evicted) == PodFailure("c", None, None, "Evicted", "The node was low on resource: memory.")
    assert pod_failure(pod("d", "Succeeded", terminated(0, "Completed"))) is None
    assert pod_failure(pod("e", "Running", {"name": "main", "state": {"running": {}}})) is None
    long_message = pod("f", "Failed", terminated(2, "Error", message="x" * 1000))
    assert len(pod_failure(long_message).message or "") == MAX_TEXT_CHARS


def test_failed_pods_in_index_order_and_log_tail() -> None:
    pods = [
        pod("j-10-x", "Failed", terminated(1, "Error"), index=10),
        pod("j-2-x", "Failed", terminated(137, "OOMKilled"), index=2),
        pod("j-3-x", "Succeeded", terminated(0, "Completed"), index=3),
    ]
    assert [f.pod for f in failed_pods(pods)] == ["j-2-x", "j-10-x"]
    text = "".join(f"line {i}\n" for i in range(20)) + "\n" + "y" * 500 + "\n"
    tail = log_tail(text)
    assert len(tail) == 10 and tail[0] == "line 11" and tail[-1] == "y" * (MAX_TEXT_CHARS - 3) + "..."


def failed_assign(pods: list[PodFailure]) -> list[Any]:
    message = "Job has failed indexes"
    assign = live(
        workload(Stage.ASSIGN),
        {"failed": 5, "succeeded": 1, "failedIndexes": "1", "conditions": [cond("Failed", "FailedIndexes", message)]},
    )
    return next_actions(SPEC, Observed.of([*done_until(Stage.ASSIGN), assign], pod_failures={Stage.ASSIGN: pods}))


def test_failed_pods_reach_the_reason_and_the_report() -> None:
    first = PodFailure("demo-assign-1-a", "assign", 137, "OOMKilled", log_tail=("batch 9", "Killed"))
    others = [PodFailure(f"demo-assign-1-{c}", "assign", 1, "Error") for c in "bcde"]
    actions = failed_assign([first, *others])
    status = actions[0].status
    condition = "stage assign failed: FailedIndexes: Job has failed indexes (failed indexes: 1)"
    assert status.reason == (
        f"{condition}; pods demo-assign-1-a: exit code 137 (OOMKilled), demo-assign-1-b: exit code 1 (Error), "
        "demo-assign-1-c: exit code 1 (Error) (5 failed pods)"
    )
    assert actions[-1] == Finish(Phase.FAILED, status.reason)
    state = status.stage_state(Stage.ASSIGN)
    assert state.pods == (first, *others[:2]) and RunStatus.loads(status.dumps()) == status
    assert failure_details(state) == [
        "failed pods of stage assign:",
        "  demo-assign-1-a (container assign): exit code 137 (OOMKilled)",
        "  demo-assign-1-b (container assign): exit code 1 (Error)",
        "  demo-assign-1-c (container assign): exit code 1 (Error)",
        "last 2 log lines of demo-assign-1-a:",
        "  | batch 9",
        "  | Killed",
    ]
    report = status_report("demo", "team", status, {}).splitlines()
    assert report[report.index(f"reason: {status.reason}") + 1 :] == ["", *failure_details(state)]
    # no pods observed (unreadable, or gone): the condition alone
    assert failed_assign([])[0].status.reason == condition


def test_failed_stages_are_the_live_failed_workloads() -> None:
    assign = live(workload(Stage.ASSIGN), {"conditions": [cond("Failed", "BackoffLimitExceeded")]})
    observed = Observed.of([*done_until(Stage.ASSIGN), assign])
    assert failed_stages(SPEC, observed) == [Stage.ASSIGN]
    ended = RunStatus(Phase.FAILED, Stage.ASSIGN, "stage assign failed: x")
    assert failed_stages(SPEC, Observed.of([*done_until(Stage.ASSIGN), assign], ended)) == []
    assert failed_stages(SPEC, Observed.of(done_until(Stage.ASSIGN))) == []


def test_events_for_stage_transitions() -> None:
    first = next_actions(SPEC, Observed())[-1].status
    running = next_actions(SPEC, Observed.of([live(workload(Stage.EMBED), {"active": 2})]))[-1].status
    embed_done = next_actions(SPEC, Observed.of(done_until(Stage.CLUSTER_FIT)))[-1].status
    assert run_events(None, first) == []
    assert run_events(first, running) == [RunEvent(EventReason.STAGE_STARTED, "stage embed started (job/demo-embed)",
                                                          Stage.EMBED)]
    assert run_events(running, running) == []
    assert run_events(running, embed_done) == [
        RunEvent(EventReason.STAGE_SUCCEEDED, "stage embed succeeded 2/2 (job/demo-embed)", Stage.EMBED)
    ]
    # a stage seen only once it had ended gets both of its Events
    assert [e.reason for e in run_events(first, embed_done)] == [EventReason.STAGE_STARTED, EventReason.STAGE_SUCCEEDED]
    failed = failed_assign([])[0].status
    events = run_events(RunStatus(Phase.RUNNING, Stage.ASSIGN, stages=failed.stages[:2]), failed)
    assert [(e.type, e.reason) for e in events] == [
        ("Normal", EventReason.STAGE_STARTED),
        ("Warning", EventReason.STAGE_FAILED),
        ("Warning", EventReason.RUN_FAILED),
    ]
    assert events[-1].message == f"run failed: {failed.reason}"
    done = next_actions(SPEC, Observed.of([*done_until(Stage.EVAL), succeeded(Stage.EVAL)]))[0].status
    assert run_events(done, done) == [] and run_events(embed_done, done)[-1] == RunEvent(
        EventReason.RUN_SUCCEEDED, "run succeeded"
    )
