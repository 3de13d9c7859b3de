"""`dynamics-submit` without --dry-run: what it creates, and its 409 / 403 / unreachable messages."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
import yaml
from kubedouble.apierrors import StatusError
from kubedouble.harness import FAST_POLL, NS, RUN, SPEC, Harness, harness, make_spec, wait_until
from kubedouble.resources import CONFIG_MAPS as DOUBLE_CONFIG_MAPS
from kubedouble.resources import JOBS as DOUBLE_JOBS
from kubedouble.resources import PYTORCHJOBS as DOUBLE_PYTORCHJOBS
from kubedouble.resources import ResourceType

from dynamics import constants as C
from dynamics.cli import app as cli
from dynamics.constants import Stage
from dynamics.controller.kube import REQUIRED_PERMISSIONS
from dynamics.controller.resources import CONFIG_MAPS, JOBS
from dynamics.controller.run import Controller, Outcome
from dynamics.controller.state import RunStatus
from dynamics.controller.submit import submit
from dynamics.errors import KubeError
from dynamics.render import stages_of

SPEC_OBJ = make_spec()


pytestmark = pytest.mark.usefixtures("work_bucket")


def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


def test_submit_creates_config_map_and_controller_job_only(h: Harness) -> None:
    out = io.StringIO()
    assert submit(SPEC_OBJ, kube=h.kube(), out=out) == 0
    kube = h.kube()
    cm = kube.get(CONFIG_MAPS, RUN)
    assert cm is not None and "spec.yaml" in cm["data"]
    assert [j["metadata"]["name"] for j in kube.list(JOBS)] == [f"{RUN}-controller"]
    owner = kube.list(JOBS)[0]["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("ConfigMap", RUN, cm["metadata"]["uid"])
    lines = out.getvalue().splitlines()
    assert lines[0] == f"submitted run {RUN} to namespace {NS} at {h.double.url} (context 'kubedouble')"
    assert lines[1].split(":", 1)[1].strip() == f"dynamics logs {RUN} -n {NS} -f"
    command = lines[2].split(":", 1)[1].strip()
    assert command.startswith(f"kubectl logs -n {NS} -l dynamics.io/run={RUN} -f --prefix --max-log-requests=")
    assert command.endswith(" --ignore-errors")
    assert lines[3].split(":", 1)[1].strip() == f"dynamics status {RUN} -n {NS}"


def test_existing_run_409_and_replace(h: Harness) -> None:
    submit(SPEC_OBJ, kube=h.kube(), out=io.StringIO())
    old_uid = h.kube().get(CONFIG_MAPS, RUN)["metadata"]["uid"]
    with pytest.raises(KubeError) as err:
        submit(SPEC_OBJ, kube=h.kube(), out=io.StringIO())
    assert err.value.message == f"run {RUN} already exists in namespace {NS}: use --replace or pick another name"
    Controller(h.kube(), RUN, poll=FAST_POLL).step()  # the old run got as far as its first stage
    out = io.StringIO()
    assert submit(SPEC_OBJ, kube=h.kube(), replace=True, out=out) == 0
    assert out.getvalue().startswith(f"replacing run {RUN}: deleting the existing run")
    assert h.kube().get(CONFIG_MAPS, RUN)["metadata"]["uid"] != old_uid
    assert [j["metadata"]["name"] for j in h.kube().list(JOBS)] == [f"{RUN}-controller"]


def test_forbidden_names_verb_resource_and_chart(h: Harness) -> None:
    h.double.allow([p for p in REQUIRED_PERMISSIONS if p != ("create", "batch", "jobs")])
    with pytest.raises(KubeError) as err:
        submit(SPEC_OBJ, kube=h.kube(), out=io.StringIO())
    first_line = err.value.message.splitlines()[0]
    assert first_line == f'permission denied: cannot create jobs.batch in namespace "{NS}"'
    assert f"helm install dynamics charts/dynamics -n {NS}" in (err.value.hint or "")
    assert 'cannot create resource "jobs" in API group "batch"' in err.value.message


def test_unreachable_server_names_server_and_context(tmp_path: Path) -> None:
    with harness(tmp_path) as h:
        kube, url = h.kube(), h.double.url
    with pytest.raises(KubeError) as err:
        submit(SPEC_OBJ, kube=kube, out=io.StringIO())
    assert err.value.message.startswith(f"cannot reach the Kubernetes API server at {url} (context 'kubedouble'):")
    assert "refused" in err.value.message.lower()


def test_cli_errors_print_without_traceback(
    h: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(h.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    path = spec_file(tmp_path)
    assert cli.submit_main([str(path), "--offline"]) == 0
    assert cli.submit_main([str(path), "--offline"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: run {RUN} already exists in namespace {NS}: use --replace or pick another name")
    assert "Traceback" not in err
    h.double.stop()
    assert cli.submit_main([str(path), "--replace", "--offline"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot reach the Kubernetes API server at {h.double.url} (context 'kubedouble')")
    assert "Traceback" not in err and "Retrying" not in err


def _exists(h: Harness, kind: ResourceType, name: str) -> bool:
    try:
        h.double.store.get(kind, NS, name)
    except StatusError:
        return False
    return True


@pytest.mark.parametrize("launcher", ["pytorchjob", "indexed-job"])
def test_wait_follows_the_run_and_required_permissions_are_exact(h: Harness, launcher: str) -> None:
    """Submit, a controller failing the run's first stage, submit --replace --wait, and a whole
    controller run under an allow-list of exactly REQUIRED_PERMISSIONS: everything works, and every
    permission is used (the failure reads the failed pods and a log tail; across both launchers)."""
    # NetworkPolicies on: submit creates them (issue 20 item 13), so every permission is used.
    spec = make_spec(train={"launcher": launcher}, kubernetes={"networkPolicy": {"enabled": True}})
    h.double.allow(REQUIRED_PERMISSIONS)
    submit(spec, kube=h.kube(), out=io.StringIO())
    assert Controller(h.kube(), RUN, poll=FAST_POLL).step().outcome is None
    h.play_stage(spec, Stage.EMBED, succeed=False, failed_indexes=[1], exit_code=137, reason="OOMKilled")
    assert Controller(h.kube(), RUN, poll=FAST_POLL).step().outcome is Outcome.FAILED
    failed = RunStatus.loads(h.kube().get(CONFIG_MAPS, RUN)["data"][C.CONFIG_STATUS_KEY])
    assert failed is not None and "exit code 137 (OOMKilled)" in (failed.reason or "")
    assert [e["reason"] for e in h.double.cluster.events(NS, RUN)][-2:] == ["StageFailed", "RunFailed"]
    old_uid = h.double.store.get(DOUBLE_CONFIG_MAPS, NS, RUN)["metadata"]["uid"]

    def operate() -> None:  # the cluster: a controller for the new run, and the stages' workloads
        wait_until(
            lambda: (
                _exists(h, DOUBLE_CONFIG_MAPS, RUN)
                and h.double.store.get(DOUBLE_CONFIG_MAPS, NS, RUN)["metadata"]["uid"] != old_uid
            )
        )
        h.start_controller()
        for stage in stages_of(spec):
            kind = DOUBLE_PYTORCHJOBS if stage is Stage.TRAIN and launcher == "pytorchjob" else DOUBLE_JOBS
            wait_until(lambda k=kind, s=stage: _exists(h, k, f"{RUN}-{s.value}"))
            h.play_stage(spec, stage)

    operator = threading.Thread(target=operate, daemon=True)
    operator.start()
    out = io.StringIO()
    assert submit(spec, kube=h.kube(), replace=True, wait=True, poll=FAST_POLL, out=out) == 0
    operator.join(timeout=10)
    lines = out.getvalue().splitlines()
    assert f"stage embed: Succeeded 2/2 (job/{RUN}-embed)" in lines
    assert lines[-1] == "run succeeded"
    used = {(a.verb, a.group, a.resource) for a in h.double.accesses}
    other_launcher = (
        ("create", "", "services") if launcher == "pytorchjob" else ("create", "kubeflow.org", "pytorchjobs")
    )
    # Listing Events happens only on a pass that sees a stage running (timing-dependent here;
    # tests/controller/test_controller_stuck.py exercises it); deleting workloads only when a run fails
    # with some still running (test_controller_contract.py's release tests exercise it).
    sometimes = {("list", "", "events"), ("delete", "batch", "jobs"), ("delete", "kubeflow.org", "pytorchjobs")}
    assert used - sometimes == set(REQUIRED_PERMISSIONS) - {other_launcher, *sometimes}


def test_cli_refuses_edited_spec_then_replace_clears_stale_stages(
    h: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dynamics.spec.fingerprint import run_paths
    from dynamics.spec.loader import dump_spec
    from dynamics.stages.inputs import marker
    from dynamics.storage import objects as storage
    from dynamics.storage.pattern import expand

    monkeypatch.setenv("KUBECONFIG", str(h.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    for uri in expand(SPEC["data"]["shards"]) + expand(SPEC["eval"]["datasets"][0]["shards"]):
        storage.write_bytes(uri, b"")
    # A previous run of this name recorded its spec and finished scale (as its controller and stage would).
    paths = run_paths(SPEC_OBJ)
    storage.write_bytes(paths.spec, dump_spec(SPEC_OBJ).encode())
    storage.write_marker(paths.scale_marker, marker(SPEC_OBJ, Stage.SCALE))
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "sample": {"alpha": 0.5}}))
    assert cli.submit_main([str(path)]) == 2
    err = capsys.readouterr().err
    assert "sample.alpha (0.2 -> 0.5)" in err and "invalidates scale, train, eval" in err and "Traceback" not in err
    assert not h.kube().list(JOBS)  # nothing submitted
    assert cli.submit_main([str(path), "--replace"]) == 0
    assert not storage.exists(paths.scale_marker)
    assert "alpha: 0.5" in storage.read_bytes(paths.spec).decode()
    assert [j["metadata"]["name"] for j in h.kube().list(JOBS)] == [f"{RUN}-controller"]


def test_printed_log_command_works_with_real_kubectl_and_many_pods(h: Harness) -> None:
    """Issue 12 item 12: plain `kubectl logs -l ... -f` stops at 5 streams; the printed one does not."""
    spec = make_spec(data={"shards": "s3://bucket/data/{00000..00039}.tar", "approxSamples": 400000},
                     embed={"shardsPerPart": 4, "parallelism": 10})
    out = io.StringIO()
    assert submit(spec, kube=h.kube(), out=out) == 0
    command = out.getvalue().splitlines()[2].split(":", 1)[1].strip().split()
    assert command[:2] == ["kubectl", "logs"]
    cluster = h.double.cluster
    cluster.start_job(NS, f"{RUN}-controller", log="controller: running\n")
    kube = h.kube()
    Controller(kube, RUN, poll=FAST_POLL).step()  # creates the embed Job (10 indexes)
    pods = cluster.start_job(NS, f"{RUN}-embed", log="embed: part done\n")
    assert len(pods) == 10
    cluster.succeed_job(NS, f"{RUN}-embed")
    cluster.succeed_job(NS, f"{RUN}-controller")
    plain = h.kubectl.run("logs", "-n", NS, "-l", f"dynamics.io/run={RUN}", "-f", check=False)
    assert plain.returncode != 0 and "maximum" in plain.stderr  # the old command, as real kubectl answers
    done = h.kubectl.run(*command[1:])
    lines = done.stdout.splitlines()
    assert sum("embed: part done" in line for line in lines) == 10
    assert any("controller: running" in line for line in lines)
    assert all(line.startswith("[pod/") for line in lines)


def test_cancel_and_resubmit_of_a_helm_installed_run(h: Harness) -> None:
    """Issue 20 item 14: a run installed with Helm has a controller Job that Helm owns, not the run
    ConfigMap. `dynamics cancel` removes it too, and a submission that finds one left over refuses
    before creating anything. (Before: cancel waited out its timeout on the Job, and a resubmission
    created an orphan ConfigMap, then failed with 409 on the Job.)"""
    from dynamics.controller.status import cancel_run
    from dynamics.render import render_submission

    spec = make_spec()
    kube = h.kube()
    config_map, *rest = render_submission(spec)  # what `helm install` creates, unowned
    controller = rest[-1]
    kube.create(config_map)
    kube.create(controller)
    out = io.StringIO()
    assert cancel_run(kube, RUN, out, timeout_s=10, interval_s=0.02) == 0
    assert kube.get(JOBS, controller["metadata"]["name"]) is None and kube.get(CONFIG_MAPS, RUN) is None
    kube.create(controller)  # left over, e.g. a release deleted with its ConfigMap only
    with pytest.raises(KubeError) as err:
        submit(spec, kube=kube, out=io.StringIO())
    assert "is left over from an earlier run" in err.value.message and "dynamics cancel" in (err.value.hint or "")
    assert kube.get(CONFIG_MAPS, RUN) is None  # nothing created


def test_a_cluster_submission_pins_a_run_model_reference(
        h: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 22 item 1: `embed.model: run:NAME` submitted to a cluster is pinned to NAME's train
    fingerprint before the ConfigMap is written, as --local does, so the embed stage's fingerprint
    names the weights (before: only --local pinned it)."""
    from dynamics.spec.fingerprint import stage_fingerprint
    from dynamics.spec.loader import dump_spec, load_spec_text
    from dynamics.storage import objects as storage
    from dynamics.storage.layout import RunPaths

    monkeypatch.setenv("KUBECONFIG", str(h.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr("dynamics.stages.preflight.check_inputs", lambda spec: None)  # no shards here
    workdir = f"s3://bucket/pin-{tmp_path.name[-8:]}"
    source = make_spec(name="boot-1", storage={"workdir": workdir})
    storage.write_bytes(RunPaths.for_run(workdir, "boot-1").spec, dump_spec(source).encode())
    spec = make_spec(storage={"workdir": workdir}, embed={"backend": "open_clip", "model": "run:boot-1",
                                                          "gpusPerPod": 0})
    path = tmp_path / "spec.yaml"
    path.write_text(dump_spec(spec))
    assert cli.submit_main([str(path)]) == 0
    submitted = load_spec_text(h.kube().get(CONFIG_MAPS, RUN)["data"][C.CONFIG_SPEC_KEY], "cm")
    assert submitted.embed.model == f"run:boot-1@{stage_fingerprint(source, Stage.TRAIN)[:16]}"
