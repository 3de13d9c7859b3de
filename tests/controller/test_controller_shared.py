"""Shared stages on a cluster are claimed, not raced (issue 21 item 6): two runs with equal embed and
cluster settings submitted together make one embedding pass, and both succeed."""

from __future__ import annotations

import io
import uuid

import pytest
from kubedouble.harness import FAST_POLL, Harness, make_spec

from dynamics.constants import Stage
from dynamics.controller.resources import JOBS, PYTORCHJOBS
from dynamics.controller.run import Controller, Outcome
from dynamics.controller.runs import read_run
from dynamics.controller.state import Phase
from dynamics.controller.submit import submit
from dynamics.render import stages_of
from dynamics.spec.fingerprint import run_paths
from dynamics.spec.model import RunSpec
from dynamics.stages.common import storage_config
from dynamics.stages.inputs import marker
from dynamics.stages.progress import stage_markers
from dynamics.storage import objects as storage

pytestmark = pytest.mark.usefixtures("work_bucket")
SHARED = (Stage.EMBED, Stage.CLUSTER_FIT, Stage.ASSIGN)


def _finish(h: Harness, spec: RunSpec, stage: Stage) -> None:
    """The stage's pods ran: its Job succeeds and its markers are where the stage writes them."""
    h.play_stage(spec, stage)
    for uri in stage_markers(spec, run_paths(spec), stage):
        storage.write_marker(uri, marker(spec, stage), storage_config(spec))


def test_two_runs_submitted_together_compute_the_shared_stages_once(h: Harness) -> None:
    workdir = f"s3://bucket/shared-{uuid.uuid4().hex[:8]}"
    specs = {name: make_spec(name=name, storage={"workdir": workdir}, sample={"alpha": alpha})
             for name, alpha in (("sweep-a", 0.2), ("sweep-b", 0.5))}
    kube = h.kube()
    for spec in specs.values():
        assert submit(spec, kube=kube, out=io.StringIO()) == 0
    controllers = {name: Controller(h.kube(), name, poll=FAST_POLL) for name in specs}
    outcomes: dict[str, Outcome | None] = {name: None for name in specs}
    played: set[str] = set()
    for _ in range(40):
        for name, controller in controllers.items():
            if outcomes[name] is None:
                outcomes[name] = controller.step().outcome
        if all(outcomes.values()):
            break
        for job in [*kube.list(JOBS), *kube.list(PYTORCHJOBS)]:
            job_name = job["metadata"]["name"]
            run = next((r for r in specs if job_name.startswith(f"{r}-") and not job_name.endswith("controller")), None)
            if run is not None and job_name not in played:
                played.add(job_name)
                spec = specs[run]
                _finish(h, spec, next(s for s in stages_of(spec) if job_name == f"{run}-{s.value}"))
        if "sweep-a-embed" in played and "sweep-b-embed" not in played:
            waiting = read_run(kube, "sweep-b")
            assert waiting is not None and waiting.recorded is not None
            if waiting.recorded.stage is Stage.EMBED:
                assert "waiting for run sweep-a" in (waiting.recorded.reason or "")
    assert outcomes == {"sweep-a": Outcome.SUCCEEDED, "sweep-b": Outcome.SUCCEEDED}
    names = {j["metadata"]["name"] for j in kube.list(JOBS)} | played
    for stage in SHARED:  # one embedding (and clustering) pass: the first run's
        assert f"sweep-a-{stage.value}" in names and f"sweep-b-{stage.value}" not in names
    record = read_run(kube, "sweep-b")
    assert record is not None and record.recorded is not None
    for stage in SHARED:
        state = record.recorded.stage_state(stage)
        assert state is not None and state.phase is Phase.SUCCEEDED and (state.reason or "").startswith("reused")
    assert f"sweep-b-{Stage.SCALE.value}" in names  # its own stages ran
