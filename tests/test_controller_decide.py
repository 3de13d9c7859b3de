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
    next_actions,
    stage_states,
)
from dynamics.controller.report import describe_changes, stage_line, status_report
from dynamics.controller.state import Phase, RunStatus, StageState
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
        assert [a.stage for a in actions if isinstance(a, CreateObject)] == [after], before
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
    service = live(render_stage(spec, Stage.TRAIN)[0])
    assert creates(next_actions(spec, Observed.of(before))) == [("Service", "demo-train"), ("Job", "demo-train")]
    assert creates(next_actions(spec, Observed.of([*before, service]))) == [("Job", "demo-train")]


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
