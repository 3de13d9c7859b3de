"""The API double refuses what a real, locked-down cluster refuses (issue 12): strict schemas of each
supported minor, immutable fields, and the restricted Pod Security Standard on the pods that
controllers and the training operator create (including operator v1.9's init container)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubedouble import KubeDouble
from kubedouble.admission import ENFORCE_LABEL, RESTRICTED

from dynamics import constants as C
from dynamics.constants import Stage
from dynamics.controller.kube import Kube, KubeApiError, connect
from dynamics.controller.resources import CONFIG_MAPS, JOBS, NODES
from dynamics.render import render, render_stage
from dynamics.spec import names
from tests.kubedouble.harness import make_spec
from tests.kubedouble.resources import JOBS as JOBS_RT
from tests.kubedouble.resources import NAMESPACES
from tests.kubedouble.resources import PODS as PODS_RT

NS = "team"
ROOT = Path(__file__).resolve().parents[2]


def _restricted(double: KubeDouble) -> None:
    ns = double.store.get(NAMESPACES, None, NS)
    ns["metadata"].setdefault("labels", {})[ENFORCE_LABEL] = RESTRICTED
    double.store.replace(NAMESPACES, None, NS, ns)


@pytest.fixture(params=C.SUPPORTED_KUBERNETES)
def minor_kube(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Kube]]:
    with KubeDouble(namespaces=(NS,), kubernetes_version=request.param) as double:
        yield request.param, connect(kubeconfig=str(double.write_kubeconfig(tmp_path / "kc", namespace=NS)))


@pytest.fixture
def double(tmp_path: Path) -> Iterator[tuple[KubeDouble, Kube]]:
    with KubeDouble(namespaces=(NS,), kubernetes_version="1.29") as d:
        yield d, connect(kubeconfig=str(d.write_kubeconfig(tmp_path / "kc", namespace=NS)))


def test_every_rendered_object_is_accepted_on_each_minor(minor_kube: tuple[str, Kube]) -> None:
    minor, kube = minor_kube
    assert kube.version()["minor"] == minor.split(".")[1]
    for launcher in ("pytorchjob", "indexed-job"):
        spec = make_spec(name=f"r-{launcher}", train={"launcher": launcher})
        for obj in render(spec):
            kube.create(obj)


def test_missing_required_field_is_422_before_1_35(double: tuple[KubeDouble, Kube]) -> None:
    _, kube = double
    job = copy.deepcopy(render_stage(make_spec(), Stage.EMBED)[0])
    del job["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["status"]
    with pytest.raises(KubeApiError) as err:
        kube.create(job)
    assert err.value.status == 422
    assert "spec.podFailurePolicy.rules[0].onPodConditions[0].status: Required value" in err.value.message


def test_unknown_field_is_a_strict_decoding_error(double: tuple[KubeDouble, Kube]) -> None:
    _, kube = double
    job = copy.deepcopy(render_stage(make_spec(), Stage.EMBED)[0])
    job["spec"]["template"]["spec"]["containers"][0]["comand"] = ["x"]
    with pytest.raises(KubeApiError) as err:
        kube.create(job)
    assert err.value.status == 400
    assert 'unknown field "spec.template.spec.containers[0].comand"' in err.value.message


def test_immutable_job_template_and_configmap(double: tuple[KubeDouble, Kube]) -> None:
    _, kube = double
    spec = make_spec()
    job = render_stage(spec, Stage.EMBED)[0]
    kube.create(job)
    kube.patch(JOBS, job["metadata"]["name"], {"spec": {"parallelism": 1}})  # mutable
    with pytest.raises(KubeApiError) as err:
        kube.patch(JOBS, job["metadata"]["name"], {"spec": {"template": {"metadata": {"labels": {"x": "y"}}}}})
    assert err.value.status == 422
    assert "spec.template" in err.value.message and "field is immutable" in err.value.message
    kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "frozen"}, "immutable": True,
                 "data": {"a": "1"}})
    with pytest.raises(KubeApiError) as err:
        kube.patch(CONFIG_MAPS, "frozen", {"data": {"a": "2"}})
    assert err.value.status == 422 and "field is immutable when `immutable` is set" in err.value.message


def test_cluster_scoped_objects_validate_too(double: tuple[KubeDouble, Kube]) -> None:
    d, kube = double
    d.cluster.add_node("gpu-0", gpus=8)
    assert kube.in_namespace(NS).get(NODES, "gpu-0") is not None


def test_restricted_namespace_refuses_host_network_pods(double: tuple[KubeDouble, Kube]) -> None:
    d, _ = double
    _restricted(d)
    spec = make_spec(train={"launcher": "indexed-job", "hostNetwork": True})
    [job] = [o for o in render_stage(spec, Stage.TRAIN) if o["kind"] == "Job"]
    d.store.create(JOBS_RT, NS, job)
    assert d.cluster.start_job(NS, job["metadata"]["name"]) == []
    events = d.cluster.events(NS, job["metadata"]["name"])
    assert len(events) == spec.train.nodes
    event = events[0]
    assert event["reason"] == "FailedCreate" and event["type"] == "Warning"
    assert event["source"]["component"] == "job-controller" and event["count"] == 1
    assert 'violates PodSecurity "restricted:latest": host namespaces (hostNetwork=true)' in event["message"]


def test_operator_init_container_is_refused_in_restricted_namespace(double: tuple[KubeDouble, Kube]) -> None:
    """Issue 12 item 2: v1.9's init-pytorch has no securityContext, so Worker pods are refused."""
    d, kube = double
    _restricted(d)
    spec = make_spec()
    [ptj] = [o for o in render_stage(spec, Stage.TRAIN) if o["kind"] == "PyTorchJob"]
    kube.create(ptj)
    name = names.stage_job(spec.name, Stage.TRAIN)
    pods = d.cluster.start_pytorchjob(NS, name)
    assert [p["metadata"]["name"] for p in pods] == [f"{name}-master-0"]  # the master has no init container
    [event] = d.cluster.events(NS, name)
    # The operator's own reason and component (training-operator v1.9 pod_control.go), not the Job controller's.
    assert (event["reason"], event["source"]["component"]) == ("FailedCreatePod", "pytorchjob-controller")
    assert 'container "init-pytorch" must set securityContext.allowPrivilegeEscalation=false' in event["message"]
    # With the documented restricted template for the operator, every pod is admitted.
    d.cluster.pytorch_init_container = restricted_init_template()
    d.store.delete(PODS_RT, NS, f"{name}-master-0")
    pods = d.cluster.start_pytorchjob(NS, name)
    assert len(pods) == spec.train.nodes
    worker = next(p for p in pods if "worker" in p["metadata"]["name"])
    assert worker["spec"]["initContainers"][0]["name"] == "init-pytorch"


def restricted_init_template() -> str:
    """The init-container template the README tells operators to configure in restricted namespaces."""
    return (ROOT / "charts" / "operator" / "pytorch-init-container-restricted.yaml").read_text()


def test_finalizers_keep_a_deleted_object_until_removed(double: tuple[KubeDouble, Kube]) -> None:
    """Deleting an object with finalizers marks it (deletionTimestamp); removing them deletes it. The
    controller never counts an object being deleted as its own."""
    from dynamics.controller.runs import owned_by

    _, kube = double
    owner = kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "held", "finalizers": ["example.com/keep"], "ownerReferences": [ref]}})
    assert kube.delete(CONFIG_MAPS, "held")
    held = kube.get(CONFIG_MAPS, "held")
    assert held is not None and held["metadata"]["deletionTimestamp"]
    assert not owned_by(held, owner)
    kube.patch(CONFIG_MAPS, "held", {"metadata": {"finalizers": None}})
    assert kube.get(CONFIG_MAPS, "held") is None
