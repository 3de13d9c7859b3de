"""Rendered objects: valid against the official schemas and the PyTorchJob CRD, restricted, no secrets."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from dynamics import constants as C
from dynamics.constants import Stage
from dynamics.render import render, render_stage, render_submission, stages_of
from dynamics.spec.loader import load_spec, validate
from dynamics.spec.model import RunSpec
from dynamics.storage.layout import shard_slice
from tests.k8s import assert_restricted, pod_templates, validate_any

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
RECIPE = ROOT / "examples" / "datacomp-dfn-vitb16.yaml"


def _spec_dict(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.fixture(params=EXAMPLES, ids=lambda p: p.stem)
def example_objects(request: pytest.FixtureRequest) -> list[dict]:
    return render(load_spec(request.param))


def _variants() -> list[dict]:
    """The recipe with options switched on, so their rendering is validated too."""
    base = _spec_dict(RECIPE)
    indexed = json.loads(json.dumps(base))
    indexed["train"]["launcher"] = "indexed-job"
    extras = json.loads(json.dumps(base))
    extras["kubernetes"].update({
        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                               "labelSelector": {"matchLabels": {C.LABEL_STAGE: "train"}}}}]}},
        "priorityClassName": "research-high",
        "queueName": "team-queue",
        "imagePullSecrets": ["regcred"],
        "podAnnotations": {"sidecar.istio.io/inject": "false"},
        "podLabels": {"team": "vision"},
        "cpuPods": {"nodeSelector": {"pool": "cpu"}, "tolerations": [], "affinity": {}},
    })
    extras["kubernetes"]["networkPolicy"] = {"enabled": True, "apiServerCidrs": ["10.0.0.1/32"],
                                             "egressCidrs": [{"cidr": "52.216.0.0/15", "ports": [443]}]}
    extras["kubernetes"]["env"].append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf",
                                                                                          "key": "token"}}})
    extras["images"] = {"trainer": "registry.example/trainer-rdma:1"}  # rdma/ib needs rdma-core
    extras["train"].update({"extraResources": {"rdma/ib": 1}, "activeDeadlineSeconds": 86400,
                            "gangScheduler": "volcano"})
    extras["eval"] = {"datasets": [{"name": "imagenet", "shards": "s3://b/in1k/{000..063}.tar",
                                     "classnames": "imagenet"}]}
    single = json.loads(json.dumps(base))
    single["train"]["nodes"] = 1
    return [indexed, extras, single]


@functools.cache
def _all_objects() -> tuple[tuple[str, dict], ...]:
    """Every object of every example and variant, rendered once for the whole minor matrix."""
    specs = [(p.stem, load_spec(p)) for p in EXAMPLES]
    variants = zip(("indexed-job", "extras", "single-node"), _variants(), strict=True)
    specs += [(name, validate(v)) for name, v in variants]
    return tuple((f"{name}:{o['kind']}/{o['metadata']['name']}", o) for name, spec in specs for o in render(spec))


@pytest.mark.parametrize("minor", C.SUPPORTED_KUBERNETES)
def test_every_object_validates_on_each_minor(minor: str) -> None:
    """Every object of every stage, both launchers, validates strict on each supported minor."""
    objs = _all_objects()
    kinds = {(o["kind"], o["metadata"]["labels"][C.LABEL_STAGE]) for _, o in objs}
    assert {("PyTorchJob", "train"), ("Job", "train"), ("Service", "train")} <= kinds, "both launchers covered"
    assert {("PodDisruptionBudget", "train"), ("NetworkPolicy", "network")} <= kinds, "issue 20's kinds covered"
    for ref, obj in objs:
        try:
            validate_any(obj, minor)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as err:
            raise AssertionError(f"{ref} is invalid on Kubernetes {minor}: {err}") from err


@pytest.mark.parametrize("minor", ["1.29", "1.34"])
def test_pod_failure_policy_without_status_is_rejected_before_1_35(minor: str) -> None:
    """The matrix is not vacuous for issue 12 item 1: a rule without ``status`` fails before 1.35."""
    job = json.loads(json.dumps(next(o for _, o in _all_objects() if o["kind"] == "Job")))
    del job["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["status"]
    with pytest.raises(kubernetes_validate.ValidationError, match="status"):
        validate_any(job, minor)
    validate_any(job, "1.35")  # only 1.35 relaxes it


def test_variants_restricted() -> None:
    for _, obj in _all_objects():
        for template in pod_templates(obj):
            assert_restricted(template)


def test_schema_validation_catches_mistakes(example_objects: list[dict]) -> None:
    """The validators are not vacuous: a misspelled field in a Job or a PyTorchJob is rejected."""
    job = json.loads(json.dumps(next(o for o in example_objects if o["kind"] == "Job")))
    job["spec"]["template"]["spec"]["containers"][0]["comand"] = ["x"]
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_any(job)
    ptj = render(validate(_spec_dict(RECIPE)))[-1]
    assert ptj["kind"] == "PyTorchJob"
    ptj["spec"]["nprocPerNode"] = 4  # must be a string in the CRD
    with pytest.raises(jsonschema.ValidationError):
        validate_any(ptj)


def test_pod_security_restricted(example_objects: list[dict]) -> None:
    templates = [t for o in example_objects for t in pod_templates(o)]
    assert templates
    for template in templates:
        assert_restricted(template)


def test_labels_on_everything(example_objects: list[dict]) -> None:
    for obj in example_objects:
        labels = obj["metadata"]["labels"]
        assert labels[C.LABEL_NAME] == C.APP_NAME
        assert labels[C.LABEL_RUN] == labels[C.LABEL_INSTANCE]
        assert labels[C.LABEL_STAGE] == labels[C.LABEL_COMPONENT]
        for template in pod_templates(obj):
            assert template["metadata"]["labels"][C.LABEL_RUN] == labels[C.LABEL_RUN]


def test_no_credential_values_anywhere(tmp_path: Path) -> None:
    data = _spec_dict(RECIPE)
    data["kubernetes"]["env"].append({"name": "HARMLESS", "value": "x"})
    objs = render(validate(data))
    text = json.dumps(objs)
    for secret_like in ("AKIA", "aws_secret_access_key", "password"):
        assert secret_like not in text
    creds = [e for o in objs for t in pod_templates(o) for c in t["spec"]["containers"] for e in c["env"]
             if e["name"] in (C.ENV_AWS_KEY_ID, C.ENV_AWS_SECRET)]
    assert creds, "the credentials Secret must be referenced"
    for env in creds:
        assert "value" not in env
        assert env["valueFrom"]["secretKeyRef"]["name"] == "s3-credentials"
    config = next(o for o in objs if o["kind"] == "ConfigMap")
    assert C.ENV_AWS_SECRET not in config["data"][C.CONFIG_SPEC_KEY]


def test_recipe_shape() -> None:
    spec = load_spec(RECIPE)
    objs = render(spec)
    ptj = next(o for o in objs if o["kind"] == "PyTorchJob")
    replicas = ptj["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 1
    assert ptj["spec"]["nprocPerNode"] == "4"
    for replica in replicas.values():
        pod = replica["template"]["spec"]
        (ctr,) = pod["containers"]
        assert ctr["name"] == C.PYTORCH_CONTAINER
        assert ctr["resources"]["limits"]["nvidia.com/gpu"] == 4
        assert ctr["command"][0] == "torchrun"
        shm = next(v for v in pod["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory")
        assert any(m["mountPath"] == "/dev/shm" and m["name"] == shm["name"] for m in ctr["volumeMounts"])
    embed = next(o for o in objs if o["metadata"]["name"].endswith("-embed"))
    completions = embed["spec"]["completions"]
    covered = [i for part in range(completions) for i in shard_slice(20069, spec.embed.shards_per_part, part)]
    assert covered == list(range(20069))
    assert embed["spec"]["completionMode"] == "Indexed"
    assert embed["spec"]["backoffLimitPerIndex"] >= 1
    rules = embed["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "Ignore"
    assert {"type": "DisruptionTarget", "status": "True"} in rules[0]["onPodConditions"]


def test_stage_commands_read_spec_and_index() -> None:
    spec = load_spec(RECIPE)
    for stage in stages_of(spec):
        for obj in render_stage(spec, stage):
            for template in pod_templates(obj):
                ctr = template["spec"]["containers"][0]
                assert "dynamics" in ctr["command"] and stage.value in ctr["command"]
                env = {e["name"]: e.get("value") for e in ctr["env"]}
                assert env[C.ENV_SPEC] == C.SPEC_MOUNT_PATH
                mount = next(m for m in ctr["volumeMounts"] if m["mountPath"] == C.SPEC_MOUNT_DIR)
                vol = next(v for v in template["spec"]["volumes"] if v["name"] == mount["name"])
                assert vol["configMap"]["name"] == spec.name


def test_submission_is_config_map_and_controller_only() -> None:
    spec = load_spec(RECIPE)
    kinds = [(o["kind"], o["metadata"]["name"]) for o in render_submission(spec)]
    assert kinds == [("ConfigMap", spec.name), ("Job", f"{spec.name}-controller")]
    cm = render_submission(spec)[0]
    assert validate(yaml.safe_load(cm["data"][C.CONFIG_SPEC_KEY])) == spec


def test_indexed_job_launcher_rendezvous() -> None:
    data = _spec_dict(RECIPE)
    data["train"]["launcher"] = "indexed-job"
    svc, job = (o for o in render_stage(validate(data), Stage.TRAIN) if o["kind"] in ("Service", "Job"))
    assert svc["kind"] == "Service" and svc["spec"]["clusterIP"] == "None"
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == svc["metadata"]["name"]
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2
    cmd = pod["containers"][0]["command"]
    # Static rendezvous (issue 12 item 11): rank from the completion index, pod 0 is the master.
    assert f"--master-addr={job['metadata']['name']}-0.{svc['metadata']['name']}" in cmd
    assert "--node-rank=$(JOB_COMPLETION_INDEX)" in cmd and "--max-restarts=3" in cmd
    assert not any(a.startswith("--rdzv") for a in cmd)
    assert svc["spec"]["selector"].items() <= job["spec"]["template"]["metadata"]["labels"].items()


def test_queue_label_and_priority() -> None:
    data = _spec_dict(RECIPE)
    data["kubernetes"].update({"queueName": "q", "priorityClassName": "high"})
    objs = render(validate(data))
    assert objs[1]["metadata"]["name"].endswith("-controller")
    assert C.LABEL_KUEUE_QUEUE not in objs[1]["metadata"]["labels"]  # the controller uses no quota
    for obj in (o for o in objs[2:] if o["kind"] in ("Job", "PyTorchJob")):
        assert obj["metadata"]["labels"][C.LABEL_KUEUE_QUEUE] == "q"
        for template in pod_templates(obj):
            assert template["spec"]["priorityClassName"] == "high"


def test_pod_annotations_labels_and_max_failed_indexes() -> None:
    """Issue 12 items 3 and 10: Istio's opt-out reaches every stage pod; Indexed Jobs stop early."""
    data = _spec_dict(RECIPE)
    data["kubernetes"].update({"podAnnotations": {"sidecar.istio.io/inject": "false"}, "podLabels": {"team": "v"}})
    spec = validate(data)
    for stage in stages_of(spec):
        for obj in render_stage(spec, stage):
            for template in pod_templates(obj):
                protect = {C.ANNOTATION_DO_NOT_DISRUPT: "true", C.ANNOTATION_SAFE_TO_EVICT: "false"}
                want = {"sidecar.istio.io/inject": "false", **(protect if stage is Stage.TRAIN else {})}
                assert template["metadata"]["annotations"] == want
                assert template["metadata"]["labels"]["team"] == "v"
                assert template["metadata"]["labels"][C.LABEL_RUN] == spec.name
            if obj["kind"] == "Job" and obj["spec"].get("completionMode") == "Indexed" and stage is not Stage.TRAIN:
                assert obj["spec"]["maxFailedIndexes"] == min(5, obj["spec"]["completions"])
    data["kubernetes"]["podLabels"] = {C.LABEL_RUN: "other"}
    with pytest.raises(Exception, match="set by dynamics"):
        validate(data)
    data["kubernetes"]["podLabels"] = {}
    data["kubernetes"]["ttlSecondsAfterFinished"] = 0
    with pytest.raises(Exception, match="ttlSecondsAfterFinished"):
        validate(data)


def test_stage_pods_use_the_tokenless_workload_service_account() -> None:
    """Issue 12 item 5: only the controller's pod has the ServiceAccount with RBAC and an API token."""
    spec = load_spec(RECIPE)
    controller = render_submission(spec)[1]["spec"]["template"]["spec"]
    assert controller["serviceAccountName"] == "dynamics" and controller["automountServiceAccountToken"] is True
    for stage in stages_of(spec):
        for obj in render_stage(spec, stage):
            for template in pod_templates(obj):
                assert template["spec"]["serviceAccountName"] == "dynamics-workload"
                assert template["spec"]["automountServiceAccountToken"] is False


def test_gpu_and_cpu_pods_take_their_own_placement() -> None:
    data = _spec_dict(RECIPE)
    h100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    data["kubernetes"].update({"nodeSelector": h100, "cpuPods": {"nodeSelector": {"pool": "cpu"}, "tolerations": []},
                               "gpuPods": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}})
    data["cluster"]["gpus"] = 0
    spec = validate(data)
    pods = {o["metadata"]["name"]: _pod(o) for o in render(spec) + render_submission(spec)
            if o["kind"] in ("Job", "PyTorchJob")}
    for name in (f"{spec.name}-controller", f"{spec.name}-scale", f"{spec.name}-cluster-fit"):
        assert pods[name]["nodeSelector"] == {"pool": "cpu"}, name  # not pinned to GPU nodes
        assert "tolerations" not in pods[name]
    for name in (f"{spec.name}-embed", f"{spec.name}-train"):
        assert pods[name]["nodeSelector"] == h100, name  # the run-wide value where the class sets none
        assert pods[name]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]


def _trainer(spec: RunSpec) -> dict:
    workloads = (o for o in render(spec) if o["kind"] in ("Job", "PyTorchJob"))
    return next(o for o in workloads if o["metadata"]["name"].endswith("-train"))


def _pod(obj: dict) -> dict:
    if obj["kind"] == "PyTorchJob":
        return obj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


@pytest.mark.parametrize("launcher", ["pytorchjob", "indexed-job"])
def test_trainer_restarts_deadline_spread_and_gang(launcher: str) -> None:
    data = _spec_dict(RECIPE)
    data["train"].update({"launcher": launcher, "activeDeadlineSeconds": 86400, "gangScheduler": "volcano"})
    spec = validate(data)
    train = _trainer(spec)
    pod = _pod(train)
    assert pod["schedulerName"] == "volcano"
    [term] = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"][C.LABEL_STAGE] == "train"
    if launcher == "pytorchjob":
        policy = train["spec"]["runPolicy"]
        assert policy["backoffLimit"] == spec.train.backoff_limit == 20
        assert policy["activeDeadlineSeconds"] == 86400
        assert policy["schedulingPolicy"]["minAvailable"] == spec.train.nodes
    else:
        assert train["spec"]["backoffLimit"] == 20 and train["spec"]["activeDeadlineSeconds"] == 86400
    data["train"].update({"nodes": 1, "gangScheduler": None})
    single = _pod(_trainer(validate(data)))
    assert "affinity" not in single and "schedulerName" not in single
