"""Issue 20 items 13 and 14: what a locked-down cluster needs from the rendered objects.

NetworkPolicies that select the right pods, ephemeral-storage on every pod, credentials from Secrets,
right-sized assign pods, trainers protected from voluntary disruption, and RDMA refused where it
cannot work. Pure renders of the reference recipe: fast.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from dynamics import constants as C
from dynamics.constants import Stage
from dynamics.errors import DynamicsError
from dynamics.render import render, render_stage, render_submission
from dynamics.render.pod import EPHEMERAL_STORAGE
from dynamics.spec.loader import validate
from tests.k8s import pod_templates

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "examples" / "datacomp-dfn-vitb16.yaml"
PROTECT = {C.ANNOTATION_DO_NOT_DISRUPT: "true", C.ANNOTATION_SAFE_TO_EVICT: "false"}


def recipe(**kubernetes: object) -> dict:
    data = yaml.safe_load(RECIPE.read_text())
    data["kubernetes"].update(copy.deepcopy(kubernetes))
    return data


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels, matchExpressions with In) selects ``labels``."""
    if not selector["matchLabels"].items() <= labels.items():
        return False
    return all(labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", []))


def _pods(objs: list[dict]) -> list[tuple[str, dict]]:
    """(workload name, pod template) of every pod the objects create."""
    return [(o["metadata"]["name"], t) for o in objs for t in pod_templates(o)]


# --- item 13: NetworkPolicy --------------------------------------------------------------------------------


@pytest.mark.parametrize("launcher", ["pytorchjob", "indexed-job"])
def test_network_policies_select_the_pods_they_are_for(launcher: str) -> None:
    """Every pod may resolve DNS and reach S3; only trainers talk to trainers (all ports, both ways); only
    the controller reaches the API server. Submission objects: they exist before the controller starts."""
    data = recipe(networkPolicy={"enabled": True})
    data["train"]["launcher"] = launcher
    spec = validate(data)
    submission = render_submission(spec)
    assert [o["kind"] for o in submission] == ["ConfigMap", "NetworkPolicy", "NetworkPolicy", "NetworkPolicy", "Job"]
    policies = {o["metadata"]["name"].removeprefix(f"{spec.name}-"): o["spec"] for o in submission[1:4]}
    pods = _pods(render(spec))
    assert {n for n, _ in pods} >= {f"{spec.name}-{s}" for s in ("controller", "embed", "train", "scale")}
    for name, tpl in pods:
        labels = tpl["metadata"]["labels"]
        assert _selects(policies["egress"]["podSelector"], labels), name
        is_trainer = labels[C.LABEL_STAGE] == Stage.TRAIN.value
        assert _selects(policies["trainers"]["podSelector"], labels) == is_trainer, name
        assert _selects(policies["api"]["podSelector"], labels) == (name == f"{spec.name}-controller"), name
    dns, external = policies["egress"]["egress"]
    assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
    assert dns["to"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
    assert "to" not in external and {p["port"] for p in external["ports"]} == {443, 80}
    trainers = policies["trainers"]
    assert trainers["policyTypes"] == ["Ingress", "Egress"]
    peer = {"podSelector": trainers["podSelector"]}
    # No `ports`: every port (NCCL uses ephemeral ones).
    assert trainers["ingress"] == [{"from": [peer]}] and trainers["egress"] == [{"to": [peer]}]
    assert {p["port"] for p in policies["api"]["egress"][0]["ports"]} == {443, 6443}


def test_network_policies_are_off_by_default_and_take_cidrs() -> None:
    assert not [o for o in render(validate(recipe())) if o["kind"] == "NetworkPolicy"]
    spec = validate(recipe(networkPolicy={"enabled": True, "apiServerCidrs": ["172.20.0.10/32"],
                                          "egressCidrs": [{"cidr": "10.1.0.0/16", "ports": [9000]}]}))
    policies = {o["metadata"]["name"]: o["spec"] for o in render_submission(spec) if o["kind"] == "NetworkPolicy"}
    assert policies[f"{spec.name}-egress"]["egress"][1] == {
        "to": [{"ipBlock": {"cidr": "10.1.0.0/16"}}], "ports": [{"protocol": "TCP", "port": 9000}]}
    assert policies[f"{spec.name}-api"]["egress"][0]["to"] == [{"ipBlock": {"cidr": "172.20.0.10/32"}}]
    with pytest.raises(DynamicsError, match="egressPorts"):
        validate(recipe(networkPolicy={"enabled": True, "egressPorts": [0]}))


# --- item 14: ephemeral storage ----------------------------------------------------------------------------


def test_every_pod_requests_ephemeral_storage_and_bounds_its_scratch() -> None:
    """A ResourceQuota on ephemeral-storage refuses every pod without a request (and limit)."""
    spec = validate(recipe(ephemeralStorage="50Gi"))
    pods = _pods(render(spec))
    assert len(pods) >= 7
    for name, tpl in pods:
        want = "1Gi" if name.endswith("-controller") else "50Gi"
        for ctr in tpl["spec"]["containers"]:
            res = ctr["resources"]
            assert res["requests"][EPHEMERAL_STORAGE] == res["limits"][EPHEMERAL_STORAGE] == want, name
        scratch = next(v for v in tpl["spec"]["volumes"] if v["name"] == "scratch")
        assert scratch["emptyDir"] == {"sizeLimit": want}, name


# --- item 14: env from Secrets -----------------------------------------------------------------------------


def test_env_takes_secret_references_and_refuses_literal_credentials() -> None:
    ref = {"secretKeyRef": {"name": "wandb", "key": "api-key"}}
    data = recipe()
    data["kubernetes"]["env"] = [{"name": "WANDB_API_KEY", "valueFrom": ref}, {"name": "NCCL_DEBUG", "value": "WARN"}]
    spec = validate(data)
    for name, tpl in _pods(render(spec)):
        env = {e["name"]: e for e in tpl["spec"]["containers"][0]["env"]}
        assert env["WANDB_API_KEY"] == {"name": "WANDB_API_KEY", "valueFrom": ref}, name
        assert env["NCCL_DEBUG"] == {"name": "NCCL_DEBUG", "value": "WARN"}, name
    data["kubernetes"]["env"] = [{"name": "HF_TOKEN", "value": "hf_abc"}]
    with pytest.raises(DynamicsError) as err:
        validate(data)
    assert "valueFrom" in str(err.value) + str(getattr(err.value, "hint", ""))
    data["kubernetes"]["env"] = [{"name": "HF_TOKEN", "value": "x", "valueFrom": {"secretKeyRef": {"name": "h",
                                                                                                   "key": "t"}}}]
    with pytest.raises(DynamicsError, match="not both"):
        validate(data)


# --- item 14: assign's own resources -----------------------------------------------------------------------


def _resources(spec_data: dict, stage: Stage) -> dict:
    [job] = render_stage(validate(spec_data), stage)
    return job["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]


def test_assign_pods_are_not_sized_like_cluster_fit() -> None:
    data = recipe()
    fit, assign = _resources(data, Stage.CLUSTER_FIT), _resources(data, Stage.ASSIGN)
    assert fit["memory"] == "128Gi" and assign["memory"] == "32Gi" and assign["cpu"] == "4"
    assert assign["nvidia.com/gpu"] == fit["nvidia.com/gpu"] == 1  # default: cluster.gpus
    data["cluster"].update({"assignResources": {"cpu": "2", "memory": "8Gi"}, "assignGpus": 0})
    assign = _resources(data, Stage.ASSIGN)
    assert (assign["cpu"], assign["memory"]) == ("2", "8Gi") and "nvidia.com/gpu" not in assign
    assert validate(data).cluster.assign_gpu_count == 0


# --- item 14: trainers and voluntary disruption ------------------------------------------------------------


@pytest.mark.parametrize("launcher", ["pytorchjob", "indexed-job"])
def test_trainers_are_protected_from_voluntary_disruption(launcher: str) -> None:
    data = recipe()
    data["train"]["launcher"] = launcher
    objs = render_stage(validate(data), Stage.TRAIN)
    [pdb] = [o for o in objs if o["kind"] == "PodDisruptionBudget"]
    assert objs[0] is pdb  # created before the trainer pods exist
    assert pdb["apiVersion"] == "policy/v1" and pdb["spec"]["maxUnavailable"] == 0
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"  # a broken trainer never blocks a drain
    trainers = _pods(objs)
    assert trainers
    for _, tpl in trainers:
        assert pdb["spec"]["selector"]["matchLabels"].items() <= tpl["metadata"]["labels"].items()
        assert PROTECT.items() <= tpl["metadata"]["annotations"].items()
    others = [t for s in (Stage.EMBED, Stage.SCALE) for _, t in _pods(render_stage(validate(data), s))]
    assert not any(_selects(pdb["spec"]["selector"], t["metadata"]["labels"]) for t in others)
    data["kubernetes"]["protectTrainers"] = False
    objs = render_stage(validate(data), Stage.TRAIN)
    assert not [o for o in objs if o["kind"] == "PodDisruptionBudget"]
    assert all("annotations" not in t["metadata"] for _, t in _pods(objs))


# --- item 14: RDMA ----------------------------------------------------------------------------------------


def test_rdma_on_the_published_trainer_image_is_refused() -> None:
    """The published trainer image has no rdma-core: an HCA requested for it trains over TCP, silently."""
    data = recipe()
    data["train"]["extraResources"] = {"rdma/ib": 1}
    with pytest.raises(DynamicsError) as err:
        validate(data)
    text = str(err.value) + str(getattr(err.value, "hint", ""))
    assert "rdma-core" in text and "IPC_LOCK" in text
    data["images"] = {"trainer": "registry.example/trainer-rdma:1"}
    [pod] = [t for _, t in _pods(render_stage(validate(data), Stage.TRAIN))][:1]
    assert pod["spec"]["containers"][0]["resources"]["limits"]["rdma/ib"] == 1
