"""`dynamics status/list/logs/cancel/controller/doctor` through the real CLI entry point."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from pathlib import Path

import pytest
import yaml
from kubedouble.harness import NS, RUN, SPEC, Harness, make_spec, wait_until
from kubedouble.resources import NODES, SECRETS

from dynamics.cli import app as cli
from dynamics.constants import Stage
from dynamics.controller.kube import REQUIRED_PERMISSIONS
from dynamics.controller.resources import JOBS
from dynamics.controller.submit import submit
from dynamics.storage import objects as storage

pytestmark = pytest.mark.usefixtures("work_bucket")






def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def controller(*extra: str) -> list[str]:
    return ["controller", "--run", RUN, "--poll-min", "0.02", "--poll-max", "0.1", *extra]


def test_status_list_logs_and_cancel(h: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    spec = make_spec()
    submit(spec, kube=h.kube(), out=io.StringIO())
    code, out, _ = run_cli(capsys, "list")
    assert code == 0 and out.split()[:8] == ["NAME", "PHASE", "STAGE", "AGE", RUN, "Pending", "-", out.split()[7]]
    code, out, _ = run_cli(capsys, "status", RUN)
    assert out.splitlines()[0] == f"run {RUN} in namespace {NS}: Pending (stage embed)"
    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.update(exit=cli.main(controller())), daemon=True)
    thread.start()
    wait_until(lambda: any(j["metadata"]["name"] == f"{RUN}-embed" for j in h.kube().list(JOBS)))
    h.double.cluster.start_job(NS, f"{RUN}-embed", log="embedded part\nsecond line\n")
    h.double.cluster.progress_job(NS, f"{RUN}-embed", [0])
    wait_until(lambda: "Running" in run_cli(capsys, "list")[1])
    code, out, _ = run_cli(capsys, "status", RUN, "-n", NS)
    row = next(line.split() for line in out.splitlines() if line.startswith("embed"))
    assert row == ["embed", "Running", "1/2", f"job/{RUN}-embed", "2", "Running"]
    code, out, _ = run_cli(capsys, "logs", RUN, "--stage", "embed")
    pods = sorted({line.split("]")[0][1:] for line in out.splitlines()})
    assert len(pods) == 2 and all(p.startswith(f"{RUN}-embed-") for p in pods)
    assert out.splitlines()[:2] == [f"[{pods[0]}] embedded part", f"[{pods[0]}] second line"]
    code, out, _ = run_cli(capsys, "status", RUN, "-o", "json")
    assert yaml.safe_load(out)["stage"] == "embed"
    code, out, _ = run_cli(capsys, "cancel", RUN)
    assert code == 0 and out.splitlines()[-1] == f"cancelled run {RUN}: deleted its ConfigMap and 2 objects"
    thread.join(timeout=5)
    assert result == {"exit": 0}
    code, _, err = run_cli(capsys, "status", RUN)
    assert code == 1 and err.startswith(f'error: run "{RUN}" not found in namespace "{NS}"')


def test_list_and_status_output_formats(h: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    submit(make_spec(), kube=h.kube(), out=io.StringIO())
    code, out, _ = run_cli(capsys, "list", "-o", "json")
    assert code == 0 and [r["name"] for r in json.loads(out)["runs"]] == [RUN]
    code, out, _ = run_cli(capsys, "list", "-o", "yaml")
    assert yaml.safe_load(out)["runs"][0]["phase"] == "Pending"
    assert run_cli(capsys, "list", "-o", "name")[1].split() == [RUN]
    header = ["NAME", "PHASE", "STAGE", "AGE", "CREATED", "REASON"]
    assert run_cli(capsys, "list", "-o", "wide")[1].split()[:6] == header
    code, out, _ = run_cli(capsys, "status", RUN, "-o", "yaml")
    assert code == 0 and yaml.safe_load(out)["stage"] == "embed"
    code, out, _ = run_cli(capsys, "status", RUN, "-o", "wide")
    assert "DONE  ACTIVE  FAILED  TOTAL  REASON" in out and out.splitlines()[0].startswith(f"run {RUN}")


def test_logs_follow_streams_until_pods_end(h: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    labels = {"dynamics.io/run": RUN, "dynamics.io/stage": "train"}
    h.double.cluster.create_pod(NS, f"{RUN}-train-master-0", labels=labels, log="step 1\n")
    h.double.cluster.create_pod(NS, f"{RUN}-train-worker-0", labels=labels, log="step 1\n")

    def finish() -> None:
        time.sleep(0.3)
        h.double.cluster.set_log(NS, f"{RUN}-train-master-0", "step 2\n", append=True)
        time.sleep(0.3)
        for pod in ("master", "worker"):
            h.double.cluster.set_pod_phase(NS, f"{RUN}-train-{pod}-0", "Succeeded")

    threading.Thread(target=finish, daemon=True).start()
    code, out, _ = run_cli(capsys, "logs", RUN, "-f")
    assert code == 0
    assert sorted(out.splitlines()) == [
        f"[{RUN}-train-master-0] step 1",
        f"[{RUN}-train-master-0] step 2",
        f"[{RUN}-train-worker-0] step 1",
    ]


def test_controller_command_exit_code_on_failure(
    h: Harness, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dynamics.controller")
    spec = make_spec()
    submit(spec, kube=h.kube(), out=io.StringIO())

    def fail_embed() -> None:
        wait_until(lambda: any(j["metadata"]["name"] == f"{RUN}-embed" for j in h.kube().list(JOBS)))
        h.play_stage(
            spec, Stage.EMBED, succeed=False, failed_indexes=[0], exit_code=137, reason="OOMKilled", log="oom\n"
        )

    threading.Thread(target=fail_embed, daemon=True).start()
    code, _, _ = run_cli(capsys, *controller())
    assert code == 2
    [pod] = h.double.cluster.pods(NS, **{"dynamics.io/stage": "embed", "batch.kubernetes.io/job-completion-index": "0"})
    name = pod["metadata"]["name"]
    reason = (
        "stage embed failed: FailedIndexes: Job has failed indexes (failed indexes: 0); "
        f"pod {name}: exit code 137 (OOMKilled)"
    )
    assert caplog.records[-1].getMessage() == f"run {RUN} finished: Failed ({reason})"
    # `dynamics status NAME`: exit code 1, the one-line reason, then the pod and its log tail
    code, out, _ = run_cli(capsys, "status", RUN)
    assert code == 1
    assert out.splitlines()[-6:] == [
        f"reason: {reason}",
        "",
        "failed pods of stage embed:",
        f"  {name} (container embed): exit code 137 (OOMKilled)",
        f"last 1 log line of {name}:",
        "  | oom",
    ]
    code, out, _ = run_cli(capsys, "status", RUN, "-o", "json")
    embed = next(s for s in yaml.safe_load(out)["stages"] if s["stage"] == "embed")
    assert embed["pods"] == [
        {
            "pod": name,
            "container": "embed",
            "exit_code": 137,
            "reason": "OOMKilled",
            "message": None,
            "log_tail": ["oom"],
        }
    ]


# --- doctor ---


def doctor_lines(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, list[str]]]:
    code, checks, _ = doctor_run(capsys, *argv)
    return code, checks


def doctor_run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, list[str]], str]:
    """Exit code, {check name: [verdict, line, fix line]}, and the closing summary line."""
    code, out, _ = run_cli(capsys, "doctor", *argv)
    checks: dict[str, list[str]] = {}
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] in ("PASS", "FAIL", "WARN", "SKIP"):
            name = line[6:].split("  ")[0].strip()
            checks[name] = [parts[0], line]
        elif parts and parts[0] == "fix:":
            checks[name].append(line.strip())
    return code, checks, out.splitlines()[-1]


def write_spec(tmp_path: Path, bucket: str, **overrides: object) -> Path:
    data = yaml.safe_load(yaml.safe_dump(SPEC))
    data["storage"] = {"workdir": f"{bucket}/runs", "credentialsSecret": "s3-creds"}
    data["data"]["shards"] = f"{bucket}/data/{{00000..00039}}.tar"
    for key, value in overrides.items():
        data[key].update(value)  # type: ignore[union-attr]
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_doctor_all_pass(h: Harness, tmp_path: Path, s3_bucket: str, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(40):
        storage.write_bytes(f"{s3_bucket}/data/{i:05d}.tar", b"x")
    # GPU feature discovery's labels: the current names, and only the deprecated ones (older GFD)
    h.double.cluster.add_node("gpu-1", gpus=4, labels={"nvidia.com/cuda.driver-version.major": "580",
                                                       "nvidia.com/cuda.driver-version.full": "580.65.06"})
    h.double.cluster.add_node("gpu-2", gpus=8, labels={"nvidia.com/cuda.driver.major": "590",
                                                       "nvidia.com/cuda.driver.minor": "48",
                                                       "nvidia.com/cuda.driver.rev": "01"})
    h.double.store.create(SECRETS, NS, {"metadata": {"name": "s3-creds"}, "data": {}})
    code, checks, summary = doctor_run(capsys, str(write_spec(tmp_path, s3_bucket)))
    assert {name: c[0] for name, c in checks.items()} == {
        "Kubernetes API": "PASS",
        "RBAC": "PASS",
        "PyTorchJob CRD": "PASS",
        "Pod Security": "PASS",
        "GPU nodes": "PASS",
        "GPU driver": "PASS",
        "S3 credentials": "PASS",
        "NetworkPolicy": "PASS",
        "work directory": "PASS",
        "shards": "PASS",
    }
    assert code == 0
    assert "2 of 2 nodes have >= 4 nvidia.com/gpu (need 2)" in checks["GPU nodes"][1]
    assert "driver >= 580 (CUDA 13) on gpu-1 580.65.06, gpu-2 590.48.01" in checks["GPU driver"][1]
    assert "all 40 shards" in checks["shards"][1]
    assert summary == "all checks passed"


def test_doctor_names_gpu_nodes_whose_driver_is_too_old_and_counts_warnings(
    h: Harness, tmp_path: Path, s3_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 20 items 9 and 11: doctor checks node drivers against the images' CUDA 13 (>= 580), and
    says 'passed with 1 warning', not 'all checks passed', after a warning."""
    for i in range(40):
        storage.write_bytes(f"{s3_bucket}/data/{i:05d}.tar", b"x")
    h.double.store.create(SECRETS, NS, {"metadata": {"name": "s3-creds"}, "data": {}})
    old = {"nvidia.com/cuda.driver-version.major": "570", "nvidia.com/cuda.driver-version.full": "570.124.06"}
    h.double.cluster.add_node("gpu-old", gpus=8, labels=old)
    h.double.cluster.add_node("gpu-new", gpus=8, labels={"nvidia.com/cuda.driver-version.full": "580.95.05"})
    code, checks, summary = doctor_run(capsys, str(write_spec(tmp_path, s3_bucket)))
    assert [name for name, c in checks.items() if c[0] != "PASS"] == ["GPU driver"]
    verdict, line, fix = checks["GPU driver"]
    assert verdict == "WARN" and "needs NVIDIA driver >= 580; older on gpu-old (570.124.06)" in line
    assert "gpu-new" not in line
    assert fix.startswith("fix: upgrade the NVIDIA driver on those nodes to 580 or newer")
    assert "key: nvidia.com/cuda.driver-version.major, operator: Gt, values: ['579']" in fix
    assert code == 0 and summary == "passed with 1 warning"
    # every GPU node too old: nothing GPU can run anywhere
    h.double.store.delete(NODES, None, "gpu-new")
    code, checks, summary = doctor_run(capsys, str(write_spec(tmp_path, s3_bucket)))
    assert checks["GPU driver"][0] == "FAIL" and code == 1 and summary == "2 problems found"  # GPU nodes: 1 of 2


def test_doctor_fails_local_storage_for_a_cluster_run(
    h: Harness, tmp_path: Path, s3_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 20 item 11: a local work directory was a WARN followed by 'all checks passed'."""
    code, checks, summary = doctor_run(capsys, str(write_spec(tmp_path, s3_bucket, storage={"workdir": "runs"},
                                                             data={"shards": "data/{00..39}.tar"})))
    assert checks["work directory"][0] == "FAIL" and "runs is a local path" in checks["work directory"][1]
    assert checks["shards"][0] == "FAIL" and "data/{00..39}.tar is a local path" in checks["shards"][1]
    assert code == 1 and "problems found" in summary


def test_doctor_reports_each_problem_with_a_fix(
    h: Harness, tmp_path: Path, s3_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    h.double.kubeflow = False
    h.double.allow(
        [p for p in REQUIRED_PERMISSIONS if p[2] != "pytorchjobs" and p != ("create", "batch", "jobs")]
        + [("list", "", "nodes"), ("get", "", "secrets")]
    )
    h.double.cluster.add_node("gpu-1", gpus=4)
    storage.write_bytes(f"{s3_bucket}/data/00000.tar", b"x")
    code, checks = doctor_lines(capsys, str(write_spec(tmp_path, s3_bucket)))
    assert code == 1
    verdicts = {name: c[0] for name, c in checks.items()}
    assert verdicts == {
        "Kubernetes API": "PASS",
        "RBAC": "FAIL",
        "PyTorchJob CRD": "FAIL",
        "Pod Security": "WARN",  # may not read its namespace
        "GPU nodes": "FAIL",
        "GPU driver": "SKIP",  # no driver labels on the node (GPU feature discovery not deployed)
        "S3 credentials": "FAIL",
        "NetworkPolicy": "PASS",
        "work directory": "PASS",
        "shards": "FAIL",
    }
    assert (
        "missing: create jobs.batch, list pytorchjobs.kubeflow.org, create pytorchjobs.kubeflow.org"
        in checks["RBAC"][1]
    )
    assert (
        checks["RBAC"][2] == f"fix: `helm install dynamics charts/dynamics -n {NS}` creates the Role and "
        "RoleBinding; or ask an admin to grant these verbs"
    )
    assert "train.launcher: indexed-job" in checks["PyTorchJob CRD"][2]
    assert "1 of 1 nodes have >= 4 nvidia.com/gpu (need 2)" in checks["GPU nodes"][1]
    assert "kubectl create secret generic s3-creds" in checks["S3 credentials"][2]
    assert "39 of 40 shards" in checks["shards"][1]
    # the indexed-job launcher needs neither the CRD nor the pytorchjobs permissions
    code, checks = doctor_lines(capsys, str(write_spec(tmp_path, s3_bucket, train={"launcher": "indexed-job"})))
    assert checks["PyTorchJob CRD"][0] == "SKIP"
    assert checks["RBAC"][1].endswith("missing: create jobs.batch")


def test_doctor_restricted_namespace(h: Harness, tmp_path: Path, s3_bucket: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 12 item 2: doctor says what a restricted namespace will refuse, and how to fix it."""
    from kubedouble.resources import NAMESPACES

    ns = h.double.store.get(NAMESPACES, None, NS)
    ns["metadata"]["labels"] = {"pod-security.kubernetes.io/enforce": "restricted"}
    h.double.store.replace(NAMESPACES, None, NS, ns)
    code, checks = doctor_lines(capsys, str(write_spec(tmp_path, s3_bucket)))
    assert code == 1 and checks["Pod Security"][0] == "FAIL"
    assert "init-pytorch" in checks["Pod Security"][1]
    assert "charts/operator/pytorch-init-container-restricted.yaml" in checks["Pod Security"][2]
    _, checks = doctor_lines(capsys, str(write_spec(tmp_path, s3_bucket, train={"launcher": "indexed-job"})))
    assert checks["Pod Security"][0] == "PASS"
    _, checks = doctor_lines(capsys, str(write_spec(tmp_path, s3_bucket, train={"launcher": "indexed-job",
                                                                                  "hostNetwork": True})))
    assert checks["Pod Security"][0] == "FAIL" and "hostNetwork" in checks["Pod Security"][1]


def test_doctor_without_spec_and_unreachable(h: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    code, checks = doctor_lines(capsys)
    assert code == 1 and checks["GPU nodes"][0] == "FAIL"  # no nodes at all
    h.double.allow([*REQUIRED_PERMISSIONS])
    code, checks = doctor_lines(capsys)
    assert checks["GPU nodes"][0] == "WARN" and checks["RBAC"][0] == "PASS"
    h.double.stop()
    code, checks = doctor_lines(capsys)
    assert code == 1 and checks["Kubernetes API"][0] == "FAIL"
    assert (
        checks["Kubernetes API"][1]
        .split("FAIL", 1)[1]
        .strip()
        .startswith(f"Kubernetes API  cannot reach the Kubernetes API server at {h.double.url}")
    )
    assert checks["cluster checks"][0] == "SKIP"
