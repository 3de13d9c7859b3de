"""The loopback kube-apiserver test double, driven by the real kubernetes client and real kubectl."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubedouble import KubeDouble
from kubedouble.kubectl import Kubectl
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

NS = "team"
RUN_LABEL = "dynamics.io/run"
STAGE_LABEL = "dynamics.io/stage"

needs_kubectl = pytest.mark.skipif(not Kubectl.available(), reason="run scripts/fetch_tools.py to fetch kubectl")


@pytest.fixture
def double() -> Iterator[KubeDouble]:
    with KubeDouble(gc_delay=0.05) as d:
        yield d


@pytest.fixture
def kubeconfig(double: KubeDouble, tmp_path: Path) -> Path:
    return double.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)


@pytest.fixture
def api(kubeconfig: Path) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kubeconfig))


@pytest.fixture
def kubectl(kubeconfig: Path, tmp_path: Path) -> Kubectl:
    return Kubectl(kubeconfig, tmp_path / "kube-cache")


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def configmap(name: str, labels: dict[str, str] | None = None, owner: dict[str, Any] | None = None) -> dict:
    meta: dict[str, Any] = {"name": name, "labels": labels or {}}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": "v"}}


def job(name: str, labels: dict[str, str], owner: dict[str, Any] | None = None, completions: int = 2) -> dict:
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    container = {"name": "main", "image": "busybox", "command": ["true"]}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "completions": completions,
            "parallelism": completions,
            "completionMode": "Indexed",
            "template": {"metadata": {"labels": labels}, "spec": {"restartPolicy": "Never", "containers": [container]}},
        },
    }


def pytorchjob(name: str, labels: dict[str, str], owner: dict[str, Any] | None = None) -> dict:
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    template = {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "pytorch", "image": "trainer"}]}}
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": meta,
        "spec": {
            "pytorchReplicaSpecs": {
                "Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": template},
                "Worker": {"replicas": 1, "restartPolicy": "OnFailure", "template": template},
            }
        },
    }


def owner_ref(obj: Any) -> dict[str, Any]:
    meta = obj["metadata"] if isinstance(obj, dict) else obj.metadata.to_dict()
    kind = obj["kind"] if isinstance(obj, dict) else obj.kind
    api_version = obj["apiVersion"] if isinstance(obj, dict) else obj.api_version
    return {"apiVersion": api_version, "kind": kind, "name": meta["name"], "uid": meta["uid"], "controller": True}


def status_body(err: ApiException) -> dict[str, Any]:
    return json.loads(err.body)


# --- the kubernetes Python client ---


def test_version_and_discovery(api: client.ApiClient, double: KubeDouble) -> None:
    assert client.VersionApi(api).get_code().git_version.startswith("v1.35")
    groups = {g.name for g in client.ApisApi(api).get_api_versions().groups}
    assert {"batch", "kubeflow.org", "authorization.k8s.io"} <= groups
    double.kubeflow = False
    groups = {g.name for g in client.ApisApi(api).get_api_versions().groups}
    assert "kubeflow.org" not in groups
    with pytest.raises(ApiException) as err:
        client.CustomObjectsApi(api).list_namespaced_custom_object("kubeflow.org", "v1", NS, "pytorchjobs")
    assert err.value.status == 404


def test_create_get_metadata_and_409_404(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    created = core.create_namespaced_config_map(NS, configmap("run-a"))
    assert created.metadata.uid and created.metadata.resource_version and created.metadata.creation_timestamp
    assert core.read_namespaced_config_map("run-a", NS).data == {"k": "v"}
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(NS, configmap("run-a"))
    body = status_body(err.value)
    assert (err.value.status, body["kind"], body["reason"]) == (409, "Status", "AlreadyExists")
    assert body["message"] == 'configmaps "run-a" already exists'
    with pytest.raises(ApiException) as err:
        client.BatchV1Api(api).read_namespaced_job("missing", NS)
    body = status_body(err.value)
    assert (err.value.status, body["reason"], body["message"]) == (404, "NotFound", 'jobs.batch "missing" not found')
    assert body["details"] == {"name": "missing", "group": "batch", "kind": "jobs"}


def test_replace_patch_conflict_and_generation(api: client.ApiClient) -> None:
    batch = client.BatchV1Api(api)
    created = batch.create_namespaced_job(NS, job("j", {RUN_LABEL: "r"}))
    assert created.metadata.generation == 1
    assert created.spec.template.metadata.labels["batch.kubernetes.io/job-name"] == "j"
    stale = created.to_dict()
    patched = batch.patch_namespaced_job("j", NS, {"spec": {"parallelism": 1}})
    assert patched.metadata.generation == 2
    assert int(patched.metadata.resource_version) > int(created.metadata.resource_version)
    with pytest.raises(ApiException) as err:
        batch.replace_namespaced_job("j", NS, stale)
    assert (err.value.status, status_body(err.value)["reason"]) == (409, "Conflict")
    # a status write changes neither the spec nor the generation; a spec write keeps the status
    status = {"status": {"active": 2, "startTime": "2026-01-01T00:00:00Z"}}
    written = batch.patch_namespaced_job_status("j", NS, status)
    assert written.status.active == 2 and written.metadata.generation == 2
    again = batch.patch_namespaced_job("j", NS, {"metadata": {"labels": {"x": "y"}}, "status": {"active": 9}})
    assert again.status.active == 2 and again.metadata.labels["x"] == "y"


def test_label_selectors(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    for name, labels in {
        "a": {RUN_LABEL: "r1", STAGE_LABEL: "embed"},
        "b": {RUN_LABEL: "r1", STAGE_LABEL: "assign"},
        "c": {RUN_LABEL: "r2", STAGE_LABEL: "embed"},
        "d": {},
    }.items():
        core.create_namespaced_config_map(NS, configmap(name, labels))

    def names(selector: str) -> list[str]:
        return [i.metadata.name for i in core.list_namespaced_config_map(NS, label_selector=selector).items]

    assert names(f"{RUN_LABEL}=r1") == ["a", "b"]
    assert names(f"{RUN_LABEL}==r1,{STAGE_LABEL}!=embed") == ["b"]
    assert names(f"{RUN_LABEL}!=r1") == ["c", "d"]
    assert names(f"{STAGE_LABEL} in (embed, assign),{RUN_LABEL} notin (r2)") == ["a", "b"]
    assert names(STAGE_LABEL) == ["a", "b", "c"]
    assert names(f"!{STAGE_LABEL}") == ["d"]
    assert names("") == ["a", "b", "c", "d"]
    field = core.list_namespaced_config_map(NS, field_selector="metadata.name=c").items
    assert [i.metadata.name for i in field] == ["c"]
    with pytest.raises(ApiException) as err:
        names("a in (b")
    assert err.value.status == 400


def test_custom_resources_and_status(api: client.ApiClient, double: KubeDouble) -> None:
    custom = client.CustomObjectsApi(api)
    args = ("kubeflow.org", "v1", NS, "pytorchjobs")
    created = custom.create_namespaced_custom_object(*args, pytorchjob("t", {RUN_LABEL: "r"}))
    assert created["metadata"]["generation"] == 1 and "status" not in created
    listed = custom.list_namespaced_custom_object(*args, label_selector=f"{RUN_LABEL}=r")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["t"]
    double.cluster.start_pytorchjob(NS, "t", log="epoch 1\n")
    double.cluster.finish_pytorchjob(NS, "t", succeeded=False, message="Worker 0 OOMKilled")
    got = custom.get_namespaced_custom_object_status(*args, "t")
    failed = [c for c in got["status"]["conditions"] if c["type"] == "Failed"]
    assert failed[0]["status"] == "True" and failed[0]["message"] == "Worker 0 OOMKilled"
    pods = client.CoreV1Api(api).list_namespaced_pod(NS, label_selector="training.kubeflow.org/job-name=t")
    assert sorted(p.metadata.name for p in pods.items) == ["t-master-0", "t-worker-0"]
    assert {p.status.phase for p in pods.items} == {"Failed"}


def test_cascade_delete_follows_owner_references(api: client.ApiClient, double: KubeDouble) -> None:
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    run = core.create_namespaced_config_map(NS, configmap("run", {RUN_LABEL: "r"}))
    ref = owner_ref({"apiVersion": "v1", "kind": "ConfigMap", "metadata": run.metadata.to_dict()})
    batch.create_namespaced_job(NS, job("r-embed", {RUN_LABEL: "r"}, owner=ref))
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object("kubeflow.org", "v1", NS, "pytorchjobs", pytorchjob("r-train", {}, ref))
    pods = double.cluster.start_job(NS, "r-embed", log="hello\n")
    core.create_namespaced_config_map(NS, configmap("unrelated"))
    core.delete_namespaced_config_map("run", NS)
    # background GC: dependents disappear shortly after the owner, transitively (job -> pods)
    wait_until(lambda: not batch.list_namespaced_job(NS).items and not core.list_namespaced_pod(NS).items)
    assert not custom.list_namespaced_custom_object("kubeflow.org", "v1", NS, "pytorchjobs")["items"]
    assert [c.metadata.name for c in core.list_namespaced_config_map(NS).items] == ["unrelated"]
    assert pods


def test_job_delete_orphans_pods_unless_asked(api: client.ApiClient, double: KubeDouble) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    batch.create_namespaced_job(NS, job("j1", {}))
    batch.create_namespaced_job(NS, job("j2", {}))
    double.cluster.start_job(NS, "j1")
    double.cluster.start_job(NS, "j2")
    batch.delete_namespaced_job("j1", NS)  # batch/v1 default: orphan the pods
    batch.delete_namespaced_job("j2", NS, propagation_policy="Background")
    wait_until(lambda: len(core.list_namespaced_pod(NS).items) == 2)
    time.sleep(0.2)
    pods = core.list_namespaced_pod(NS).items
    assert {p.metadata.labels["batch.kubernetes.io/job-name"] for p in pods} == {"j1"}
    assert all(not p.metadata.owner_references for p in pods)


def test_watch_streams_changes(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(NS, configmap("before", {RUN_LABEL: "r"}))
    rv = core.list_namespaced_config_map(NS).metadata.resource_version
    core.patch_namespaced_config_map("before", NS, {"data": {"k": "2"}})
    core.create_namespaced_config_map(NS, configmap("other", {RUN_LABEL: "x"}))
    core.delete_namespaced_config_map("before", NS)
    stream = watch.Watch().stream(
        core.list_namespaced_config_map, NS, label_selector=f"{RUN_LABEL}=r", resource_version=rv, timeout_seconds=1
    )
    seen = [(ev["type"], ev["object"].metadata.name) for ev in stream]
    assert seen == [("MODIFIED", "before"), ("DELETED", "before")]


def test_pod_logs_plain_and_follow(api: client.ApiClient, double: KubeDouble) -> None:
    core = client.CoreV1Api(api)
    double.cluster.create_pod(NS, "p", log="one\ntwo\nthree\n")
    assert core.read_namespaced_pod_log("p", NS) == "one\ntwo\nthree\n"
    assert core.read_namespaced_pod_log("p", NS, tail_lines=1) == "three\n"
    resp = core.read_namespaced_pod_log("p", NS, follow=True, _preload_content=False)
    double.cluster.set_log(NS, "p", "four\n", append=True)
    time.sleep(0.3)
    double.cluster.set_pod_phase(NS, "p", "Succeeded")
    assert resp.read().decode() == "one\ntwo\nthree\nfour\n"
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log("nope", NS)
    assert err.value.status == 404


def test_rbac_allow_list_and_access_reviews(api: client.ApiClient, double: KubeDouble) -> None:
    double.allow([("get", "", "configmaps"), ("list", "batch", "jobs")])
    double.policy.user = "system:serviceaccount:team:dynamics"
    core = client.CoreV1Api(api)
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(NS, configmap("x"))
    body = status_body(err.value)
    assert (err.value.status, body["reason"]) == (403, "Forbidden")
    assert body["message"] == (
        'configmaps is forbidden: User "system:serviceaccount:team:dynamics" cannot create resource '
        '"configmaps" in API group "" in the namespace "team"'
    )
    assert client.BatchV1Api(api).list_namespaced_job(NS).items == []

    def can(verb: str, group: str, resource: str) -> bool:
        attrs = {"namespace": NS, "verb": verb, "group": group, "resource": resource}
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attrs},
        }
        return client.AuthorizationV1Api(api).create_self_subject_access_review(review).status.allowed

    assert can("list", "batch", "jobs") and not can("create", "batch", "jobs")
    double.allow(None)
    assert can("create", "batch", "jobs")


def test_bearer_token(double: KubeDouble, tmp_path: Path) -> None:
    double.policy.token = "s3cret"
    good = config.new_client_from_config(config_file=str(double.write_kubeconfig(tmp_path / "kc", namespace=NS)))
    assert client.CoreV1Api(good).list_namespaced_config_map(NS).items == []
    double.policy.token = "other"
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(good).list_namespaced_config_map(NS)
    assert err.value.status == 401


def test_nodes_and_job_play(api: client.ApiClient, double: KubeDouble) -> None:
    double.cluster.add_node("gpu-1", gpus=4)
    double.cluster.add_node("cpu-1")
    nodes = client.CoreV1Api(api).list_node().items
    assert {n.metadata.name: n.status.capacity.get("nvidia.com/gpu") for n in nodes} == {"gpu-1": "4", "cpu-1": None}
    batch = client.BatchV1Api(api)
    batch.create_namespaced_job(NS, job("ok", {}, completions=3))
    batch.create_namespaced_job(NS, job("bad", {}, completions=4))
    double.cluster.start_job(NS, "ok")
    double.cluster.progress_job(NS, "ok", [0, 2])
    assert batch.read_namespaced_job_status("ok", NS).status.completed_indexes == "0,2"
    done = double.cluster.succeed_job(NS, "ok")["status"]
    assert done["completedIndexes"] == "0-2" and done["succeeded"] == 3
    assert [c["type"] for c in done["conditions"]] == ["SuccessCriteriaMet", "Complete"]
    double.cluster.start_job(NS, "bad")
    failed = double.cluster.fail_job(NS, "bad", failed_indexes=[1, 3])["status"]
    assert failed["failedIndexes"] == "1,3" and failed["completedIndexes"] == "0,2"
    assert failed["conditions"][-1]["reason"] == "FailedIndexes"


def test_failed_pods_carry_exit_codes(api: client.ApiClient, double: KubeDouble) -> None:
    batch = client.BatchV1Api(api)
    batch.create_namespaced_job(NS, job("oom", {}, completions=2))
    double.cluster.start_job(NS, "oom")
    double.cluster.fail_job(NS, "oom", failed_indexes=[1], exit_code=137, reason="OOMKilled")
    pods = client.CoreV1Api(api).list_namespaced_pod(NS, label_selector="batch.kubernetes.io/job-name=oom").items
    ended = {p.metadata.labels["batch.kubernetes.io/job-completion-index"]: p for p in pods}
    oom = ended["1"].status.container_statuses[0].state.terminated
    assert (ended["1"].status.phase, oom.exit_code, oom.reason) == ("Failed", 137, "OOMKilled")
    assert ended["0"].status.phase == "Succeeded"


def event(name: str, involved_ns: str, reason: str = "StageStarted") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "involvedObject": {"apiVersion": "v1", "kind": "ConfigMap", "name": "demo", "namespace": involved_ns},
        "reason": reason,
        "message": f"{reason} happened",
        "type": "Normal",
        "lastTimestamp": "2026-01-01T00:00:00Z",
    }


def test_events_are_validated_and_listed(api: client.ApiClient, double: KubeDouble) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_event(NS, event("demo.1", NS))
    with pytest.raises(ApiException) as err:
        core.create_namespaced_event(NS, event("demo.2", "elsewhere"))
    assert err.value.status == 422
    assert "involvedObject.namespace" in status_body(err.value)["message"]
    assert [e["reason"] for e in double.cluster.events(NS, "demo")] == ["StageStarted"]


# --- the real kubectl ---


@needs_kubectl
def test_kubectl_get_by_label_json_and_delete(kubectl: Kubectl, api: client.ApiClient, tmp_path: Path) -> None:
    core = client.CoreV1Api(api)
    run = core.create_namespaced_config_map(NS, configmap("demo-run", {RUN_LABEL: "demo"}))
    ref = owner_ref({"apiVersion": "v1", "kind": "ConfigMap", "metadata": run.metadata.to_dict()})
    client.BatchV1Api(api).create_namespaced_job(NS, job("demo-embed", {RUN_LABEL: "demo", STAGE_LABEL: "embed"}, ref))
    client.BatchV1Api(api).create_namespaced_job(NS, job("other-embed", {RUN_LABEL: "other"}))
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        "kubeflow.org", "v1", NS, "pytorchjobs", pytorchjob("demo-train", {RUN_LABEL: "demo"}, ref)
    )
    out = kubectl.run("get", "jobs,pytorchjobs", "-l", f"{RUN_LABEL}=demo", "-o", "name").stdout.split()
    assert out == ["job.batch/demo-embed", "pytorchjob.kubeflow.org/demo-train"]
    table = kubectl.run("get", "jobs", "-l", f"{STAGE_LABEL} in (embed,assign)").stdout
    assert table.split()[:3] == ["NAME", "AGE", "demo-embed"]
    got = json.loads(kubectl.run("get", "configmap", "demo-run", "-o", "json").stdout)
    assert got["metadata"]["labels"] == {RUN_LABEL: "demo"} and got["data"] == {"k": "v"}
    missing = kubectl.run("get", "configmap", "nope", check=False)
    assert missing.returncode == 1 and 'configmaps "nope" not found' in missing.stderr
    (tmp_path / "cm.json").write_text(json.dumps(configmap("demo-run")))
    exists = kubectl.run("create", "--validate=false", "-f", str(tmp_path / "cm.json"), check=False)
    assert exists.returncode == 1 and 'configmaps "demo-run" already exists' in exists.stderr
    assert "deleted" in kubectl.run("delete", "configmap", "demo-run").stdout
    wait_until(lambda: kubectl.run("get", "jobs,pytorchjobs", "-l", f"{RUN_LABEL}=demo", "-o", "name").stdout == "")
    assert kubectl.run("get", "jobs", "-o", "name").stdout.split() == ["job.batch/other-embed"]


@needs_kubectl
def test_kubectl_logs_and_auth(kubectl: Kubectl, double: KubeDouble) -> None:
    labels = {RUN_LABEL: "demo"}
    double.cluster.create_pod(NS, "demo-embed-0", labels=labels, log="embedded 10 shards\n")
    double.cluster.create_pod(NS, "demo-embed-1", labels=labels, log="embedded 12 shards\n")
    assert kubectl.run("logs", "demo-embed-0").stdout == "embedded 10 shards\n"
    out = kubectl.run("logs", "-l", f"{RUN_LABEL}=demo", "--prefix").stdout.splitlines()
    assert sorted(out) == [
        "[pod/demo-embed-0/main] embedded 10 shards",
        "[pod/demo-embed-1/main] embedded 12 shards",
    ]
    double.allow([("get", "", "pods"), ("list", "", "pods")])
    assert kubectl.run("get", "pods", "-o", "name").stdout.split() == ["pod/demo-embed-0", "pod/demo-embed-1"]
    denied = kubectl.run("get", "jobs", check=False)
    assert denied.returncode == 1
    assert 'cannot list resource "jobs" in API group "batch" in the namespace "team"' in denied.stderr
    denied = kubectl.run("logs", "demo-embed-0", check=False)
    assert denied.returncode == 1
    assert 'cannot get resource "pods/log" in API group "" in the namespace "team"' in denied.stderr


@needs_kubectl
def test_kubectl_get_and_describe_events(kubectl: Kubectl, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    run = core.create_namespaced_config_map(NS, configmap("demo"))
    for i, reason in enumerate(("StageStarted", "StageFailed")):
        body = event(f"demo.{i}", NS, reason)
        body["involvedObject"]["uid"] = run.metadata.uid
        core.create_namespaced_event(NS, body)
    table = kubectl.run("get", "events").stdout.splitlines()
    assert table[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert table[2].split()[1:] == ["Normal", "StageFailed", "configmap/demo", "StageFailed", "happened"]
    described = kubectl.run("describe", "configmap", "demo").stdout
    assert "StageStarted happened" in described.split("Events:")[1]


@needs_kubectl
def test_kubectl_without_training_operator(kubectl: Kubectl, double: KubeDouble) -> None:
    double.kubeflow = False
    proc = kubectl.run("get", "pytorchjobs", check=False)
    assert proc.returncode == 1 and 'the server doesn\'t have a resource type "pytorchjobs"' in proc.stderr
    assert kubectl.run("get", "jobs", "-o", "name").stdout == ""
