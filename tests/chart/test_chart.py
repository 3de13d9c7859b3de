"""The Helm chart, rendered by the real helm binary (.tools/bin/helm, fetched by scripts/setup.sh).

What is checked: lint; every rendered object against the official schemas and the restricted Pod
Security Standard; a run release renders the same ConfigMap and controller Job as `dynamics-submit`;
the Role grants exactly what the controller and dynamics-submit call; values.schema.json is current
and rejects bad runs naming the field; the PyTorchJob prerequisite check; labels match constants.
"""

from __future__ import annotations

import copy
import hashlib
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from k8s import assert_restricted, pod_templates, validate_any

import dynamics
from dynamics import constants as C
from dynamics.render import render_submission
from dynamics.render.logcmd import max_pods
from dynamics.spec.loader import load_spec, load_spec_text, validate
from dynamics.spec.model import Images, RunSpec
from dynamics.spec.schema import (
    CHART_DIR,
    SCHEMA_PATH,
    ChartValues,
    dump_values,
    helm_values,
    helm_values_yaml,
    schema_text,
)

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / ".tools" / "bin" / "helm"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
PYTORCHJOB_API = "kubeflow.org/v1/PyTorchJob"
# Labels Helm-made objects carry on top of what render() gives them.
HELM_LABELS = ("helm.sh/chart", "app.kubernetes.io/version")
OPERATOR_INSTALL = ('kubectl apply --server-side -k '
                    '"github.com/kubeflow/training-operator.git/manifests/overlays/standalone?ref=v1.9.0"')

if not HELM.exists():
    pytest.skip(f"helm not found at {HELM}: run scripts/setup.sh (it fetches helm into .tools/bin)",
                allow_module_level=True)


def run_helm(*args: str, values: dict[str, Any] | None = None, tmp_path: Path | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm; ``values`` go in through a file, as a user's would."""
    cmd = [str(HELM), *args]
    if values is not None:
        assert tmp_path is not None
        path = tmp_path / f"values-{len(list(tmp_path.iterdir()))}.yaml"
        path.write_text(dump_values(values), encoding="utf-8")
        cmd += ["-f", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stderr}"
    return proc


def template(tmp_path: Path, values: dict[str, Any] | None = None, *, namespace: str = "team",
             api_versions: tuple[str, ...] = (), release: str = "r1", extra: tuple[str, ...] = ()) -> list[dict]:
    """`helm template` output as objects (test hooks included)."""
    args = ["template", release, str(CHART_DIR), "-n", namespace, *extra]
    for api in api_versions:
        args += ["--api-versions", api]
    out = run_helm(*args, values=values, tmp_path=tmp_path).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    """Objects of one kind."""
    return [o for o in objs if o["kind"] == kind]


def example_spec(path: Path) -> RunSpec:
    """An example spec, validated."""
    return load_spec(path)


def run_values(spec: RunSpec) -> dict[str, Any]:
    """Values of a run release, as `dynamics-submit --helm-values` writes them."""
    return helm_values(spec)


def apis_for(spec: RunSpec) -> tuple[str, ...]:
    """--api-versions a cluster able to run ``spec`` would report."""
    return (PYTORCHJOB_API,) if spec.train.launcher == "pytorchjob" else ()


def strip_helm_labels(obj: dict) -> dict:
    """A copy of ``obj`` without the labels Helm adds on top of render()'s."""
    out = copy.deepcopy(obj)
    for key in HELM_LABELS:
        out["metadata"]["labels"].pop(key, None)
    return out


# --- lint and schema validation of every rendered object -------------------------------------------------


def test_lint_default_values() -> None:
    proc = run_helm("lint", "--strict", str(CHART_DIR))
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_lint_example_runs(example: Path, tmp_path: Path) -> None:
    spec = example_spec(example)
    # helm lint cannot simulate a CRD (no --api-versions): skip only the prerequisite check here.
    extra = ["--set", "checkPrerequisites=false"] if apis_for(spec) else []
    proc = run_helm("lint", "--strict", str(CHART_DIR), "-n", spec.namespace, *extra,
                    values=run_values(spec), tmp_path=tmp_path)
    assert "0 chart(s) failed" in proc.stdout


def check_objects(objs: list[dict]) -> None:
    """Official schemas, restricted PSS, and the standard labels on every object."""
    for obj in objs:
        validate_any(obj)
        labels = obj["metadata"]["labels"]
        assert labels[C.LABEL_NAME] == C.APP_NAME, obj["metadata"]["name"]
        for key in (C.LABEL_INSTANCE, C.LABEL_COMPONENT, C.LABEL_MANAGED_BY, *HELM_LABELS):
            assert labels.get(key), (obj["kind"], key)
        for tpl in pod_templates(obj):
            assert_restricted(tpl)


def test_namespace_install_objects(tmp_path: Path) -> None:
    objs = template(tmp_path)
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == ["ConfigMap", "Pod", "Role", "RoleBinding", "ServiceAccount", "ServiceAccount"]
    check_objects(objs)
    sa, workload = by_kind(objs, "ServiceAccount")
    assert sa["metadata"]["name"] == "dynamics"
    assert sa["metadata"]["labels"][C.LABEL_MANAGED_BY] == "Helm"
    # Stage pods run model code: their ServiceAccount gets no token and no Role (issue 12 item 5).
    assert workload["metadata"]["name"] == "dynamics-workload"
    assert workload["automountServiceAccountToken"] is False
    assert "automountServiceAccountToken" not in sa
    binding = by_kind(objs, "RoleBinding")[0]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "dynamics", "namespace": "team"}]
    assert binding["roleRef"]["name"] == by_kind(objs, "Role")[0]["metadata"]["name"]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_run_release_objects(example: Path, tmp_path: Path) -> None:
    spec = example_spec(example)
    objs = template(tmp_path, run_values(spec), namespace=spec.namespace, api_versions=apis_for(spec))
    # A run release uses the namespace install's ServiceAccount and RBAC: no conflicting copies.
    assert sorted(o["kind"] for o in objs) == ["ConfigMap", "Job", "Pod"]
    check_objects(objs)


@pytest.fixture(scope="module")
def chart_objects(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, dict]]:
    """The chart with default values and with each example's run values, rendered once."""
    tmp = tmp_path_factory.mktemp("chart-minors")
    out = [(f"defaults:{o['kind']}/{o['metadata']['name']}", o) for o in template(tmp)]
    for example in EXAMPLES:
        spec = example_spec(example)
        objs = template(tmp, run_values(spec), namespace=spec.namespace, api_versions=apis_for(spec))
        out += [(f"{example.stem}:{o['kind']}/{o['metadata']['name']}", o) for o in objs]
    return out


@pytest.mark.parametrize("minor", C.SUPPORTED_KUBERNETES)
def test_chart_objects_validate_on_each_minor(minor: str, chart_objects: list[tuple[str, dict]]) -> None:
    """Helm validates against the cluster's OpenAPI: every chart object must pass on every supported minor."""
    assert {o["kind"] for _, o in chart_objects} >= {"Job", "ConfigMap", "Role", "ServiceAccount"}
    for ref, obj in chart_objects:
        try:
            validate_any(obj, minor)
        except kubernetes_validate.ValidationError as err:
            raise AssertionError(f"{ref} is invalid on Kubernetes {minor}: {err}") from err


# --- a run release is what dynamics-submit creates ----------------------------------------------------------


def assert_same_submission(objs: list[dict], spec: RunSpec) -> None:
    """The chart's run ConfigMap and controller Job equal render_submission(spec) (modulo Helm labels)."""
    want_cm, *_, want_job = render_submission(spec)
    [got_cm] = [o for o in by_kind(objs, "ConfigMap") if o["metadata"]["name"] == want_cm["metadata"]["name"]]
    [got_job] = by_kind(objs, "Job")
    text = got_cm["data"][C.CONFIG_SPEC_KEY]
    # The spec text differs in key order from dump_spec; what it means must not.
    assert load_spec_text(text, "chart ConfigMap") == spec
    assert got_cm["metadata"]["annotations"] == {C.ANNOTATION_SPEC_HASH: hashlib.sha256(text.encode()).hexdigest()}
    for key, value in {k: v for k, v in want_cm.items() if k != "data"}.items():
        got = strip_helm_labels(got_cm)[key]
        if key == "metadata":
            got = {k: v for k, v in got.items() if k != "annotations"}
            value = {k: v for k, v in value.items() if k != "annotations"}
        assert got == value, key
    assert set(got_cm["data"]) == set(want_cm["data"])
    assert strip_helm_labels(got_job) == want_job
    want_policies = [o for o in render_submission(spec) if o["kind"] == "NetworkPolicy"]
    assert [strip_helm_labels(o) for o in by_kind(objs, "NetworkPolicy")] == want_policies


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_run_release_equals_render_submission(example: Path, tmp_path: Path) -> None:
    spec = example_spec(example)
    objs = template(tmp_path, run_values(spec), namespace=spec.namespace, api_versions=apis_for(spec))
    assert_same_submission(objs, spec)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_partial_run_values_use_the_spec_defaults(example: Path, tmp_path: Path) -> None:
    """A hand-written `run:` (defaults not resolved) still renders what dynamics-submit would."""
    raw = yaml.safe_load(example.read_text())
    spec = validate(raw)
    objs = template(tmp_path, {"run": raw}, namespace=spec.namespace, api_versions=apis_for(spec))
    assert_same_submission(objs, spec)


def test_every_pod_setting_reaches_the_controller_job(tmp_path: Path) -> None:
    """Optional fields (endpoint, tolerations, affinity, queue, pull secrets, no TTL) render the same."""
    raw = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    raw["namespace"] = "team"
    raw["storage"] = {"workdir": "s3://bucket/runs", "endpoint": "http://minio.minio:9000",
                      "region": "eu-west-1", "credentialsSecret": "s3-creds"}
    raw["images"] = {"controller": "registry.example/dyn/controller:9.9", "pullPolicy": "Always"}
    raw["kubernetes"] = {
        "serviceAccount": "runner", "runAsUser": 2000, "ttlSecondsAfterFinished": None,
        "nodeSelector": {"pool": "gpu"}, "priorityClassName": "high", "queueName": "team-queue",
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                        {"key": "spot", "operator": "Equal", "value": "yes", "tolerationSeconds": 30}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}]}}},
        "imagePullSecrets": ["regcred"], "env": [{"name": "NCCL_DEBUG", "value": "INFO"}, {"name": "WANDB_API_KEY",
                                                  "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "api-key"}}}],
        "podAnnotations": {"sidecar.istio.io/inject": "false"}, "podLabels": {"team": "vision"},
    }
    spec = validate(raw)
    for values in (run_values(spec), {"run": raw}):
        objs = template(tmp_path, values)
        assert_same_submission(objs, spec)
        check_objects(objs)
        job = by_kind(objs, "Job")[0]
        assert "ttlSecondsAfterFinished" not in job["spec"]
        # The queue label is for the stages' workloads; the controller must not wait for GPU quota.
        assert C.LABEL_KUEUE_QUEUE not in job["metadata"]["labels"]


# --- the chart's pods and the renderer's agree (issue 20 item 10) -----------------------------------------

PARITY_KUBERNETES = {
    "serviceAccount": "runner", "runAsUser": 2000, "queueName": "team-queue", "priorityClassName": "high",
    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "cpuPods": {"nodeSelector": {"pool": "cpu"},
                "tolerations": [{"key": "spot", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In",
                                                                 "values": ["a"]}]}]}}}},
    "imagePullSecrets": ["regcred"],
    "podAnnotations": {"sidecar.istio.io/inject": "false", "example.com/team": "vision"},
    "podLabels": {"team": "vision"},
}
# What a pod of the run must carry wherever it is rendered: placement, admission and identity.
POD_FIELDS = ("nodeSelector", "tolerations", "affinity", "priorityClassName", "imagePullSecrets",
              "securityContext", "serviceAccountName")


def parity_spec() -> RunSpec:
    """A run with cpuPods placement, pod annotations and labels, and a Kueue queue."""
    raw = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    raw["kubernetes"] = copy.deepcopy(PARITY_KUBERNETES)
    return validate(raw)


@pytest.mark.parametrize("partial", [False, True], ids=["resolved", "partial"])
def test_chart_pods_match_the_renderer(partial: bool, tmp_path: Path) -> None:
    """The chart's controller Job and `helm test` Pod run where, and as, the renderer's controller pod does:
    cpuPods placement (not the run-wide H100 selector), the pod annotations (Istio's opt-out) and labels,
    the security context and the ServiceAccount; no Kueue label on either (neither uses GPU quota)."""
    from dynamics.render.jobs import controller_job

    spec = parity_spec()
    values = {"run": yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())} if partial else None
    if values is not None:
        values["run"]["kubernetes"] = copy.deepcopy(PARITY_KUBERNETES)
    objs = template(tmp_path, values or run_values(spec), namespace=spec.namespace)
    want = controller_job(spec)["spec"]["template"]
    assert want["spec"]["nodeSelector"] == {"pool": "cpu"}  # the renderer itself honours cpuPods
    [job] = by_kind(objs, "Job")
    [pod] = by_kind(objs, "Pod")
    job_pod = job["spec"]["template"]
    for name, got_meta, got_spec in (("controller Job", job_pod["metadata"], job_pod["spec"]),
                                     ("helm test Pod", pod["metadata"], pod["spec"])):
        for field in POD_FIELDS:
            assert got_spec.get(field) == want["spec"].get(field), (name, field)
        annotations = got_meta.get("annotations") or {}
        assert want["metadata"]["annotations"].items() <= annotations.items(), name
        # The spec's pod labels and the run label (NetworkPolicies and `kubectl -l` select by them).
        assert {**spec.kubernetes.pod_labels, C.LABEL_RUN: spec.name}.items() <= got_meta["labels"].items(), name
        assert C.LABEL_KUEUE_QUEUE not in got_meta["labels"], name
        got_ctr, want_ctr = got_spec["containers"][0], want["spec"]["containers"][0]
        assert got_ctr["securityContext"] == want_ctr["securityContext"], name
        assert got_ctr["resources"]["requests"].keys() == want_ctr["resources"]["requests"].keys(), name
        got_scratch = next(v for v in got_spec["volumes"] if v["name"] == "scratch")
        want_scratch = next(v for v in want["spec"]["volumes"] if v["name"] == "scratch")
        assert got_scratch == want_scratch, name
    assert strip_helm_labels(job) == controller_job(spec)
    check_objects(objs)


def test_numbers_survive_helm(tmp_path: Path) -> None:
    """Helm holds numbers as float64: big ints, tiny floats and free-form model configs keep their values."""
    raw = yaml.safe_load((ROOT / "examples" / "datacomp-dfn-vitb16.yaml").read_text())
    raw["train"]["launcher"] = "indexed-job"
    raw["train"]["optimizer"]["eps"] = 1e-7
    raw["train"]["phases"][0]["samples"] = 2_560_000_000
    raw["kubernetes"]["env"].append({"name": "LOOKS_LIKE_A_NUMBER", "value": "1e5"})
    raw["train"]["modelConfig"] = {"embed_dim": 512, "init_logit_bias": -10, "ls_init_value": 1e-7,
                                   "big": 1e20, "huge": 3e21, "text": "1e-07", "list": [1e-7, "2e-08"],
                                   "vision_cfg": {"patch_size": 16}, "text_cfg": {"context_length": 32}}
    spec = validate(raw)
    objs = template(tmp_path, run_values(spec))
    text = by_kind(objs, "ConfigMap")[0]["data"][C.CONFIG_SPEC_KEY]
    assert "ls_init_value: 1.0e-7\n" in text and 'text: "1e-07"\n' in text
    got = load_spec_text(text)
    assert got == spec
    assert got.train.model_config_ == spec.train.model_config_
    assert isinstance(got.train.model_config_["ls_init_value"], float)
    assert got.train.model_config_["text"] == "1e-07" and got.train.model_config_["list"] == [1e-7, "2e-08"]
    assert got.kubernetes.env[-1].value == "1e5"


def test_helm_values_yaml_reads_back_as_written() -> None:
    spec = example_spec(ROOT / "examples" / "datacomp-dfn-vitb16.yaml")
    text = helm_values_yaml(spec)
    assert yaml.safe_load(text) == helm_values(spec)
    assert validate(yaml.safe_load(text)["run"]) == spec
    text = dump_values({"a": "1e-07", "b": "0x1F", "c": "eth0", "d": 1e-07})
    assert text == 'a: "1e-07"\nb: "0x1F"\nc: eth0\nd: 1.0e-07\n'


def test_integers_beyond_float64_precision_are_rejected(tmp_path: Path) -> None:
    spec = example_spec(ROOT / "examples" / "quickstart.yaml")
    values = run_values(spec)
    values["run"]["sample"]["seed"] = 2**60
    proc = run_helm("template", "r1", str(CHART_DIR), values=values, tmp_path=tmp_path, check=False)
    assert proc.returncode != 0
    assert "/run/sample/seed" in proc.stderr


# --- RBAC ---------------------------------------------------------------------------------------------------


def role_permissions(role: dict) -> set[tuple[str, str, str]]:
    """The (verb, API group, resource) triples a Role grants."""
    out = set()
    for rule in role["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), rule
                    out.add((verb, group, resource))
    return out


def test_role_grants_exactly_the_required_permissions(tmp_path: Path) -> None:
    from dynamics.controller.kube import REQUIRED_PERMISSIONS

    objs = template(tmp_path)
    assert not by_kind(objs, "ClusterRole") and not by_kind(objs, "ClusterRoleBinding")
    [role] = by_kind(objs, "Role")
    assert role["metadata"]["namespace"] == "team"
    granted = role_permissions(role)
    required = set(REQUIRED_PERMISSIONS)
    assert granted == required, (
        f"missing: {sorted(required - granted)}; not needed: {sorted(granted - required)} "
        "(edit charts/dynamics/templates/rbac.yaml)"
    )


def test_service_account_role_arn_and_toggles(tmp_path: Path) -> None:
    arn = "arn:aws:iam::123456789012:role/dynamics-s3"
    objs = template(tmp_path, {"s3": {"roleArn": arn}, "serviceAccount": {"annotations": {"team": "ml"}}})
    sa = by_kind(objs, "ServiceAccount")[0]
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": arn, "team": "ml"}
    objs = template(tmp_path, {"serviceAccount": {"create": False}})
    assert not by_kind(objs, "ServiceAccount") and not by_kind(objs, "Role")
    objs = template(tmp_path, {"serviceAccount": {"create": False}, "rbac": {"create": True}})
    assert not by_kind(objs, "ServiceAccount") and by_kind(objs, "Role")
    spec = example_spec(ROOT / "examples" / "quickstart.yaml")
    objs = template(tmp_path, {**run_values(spec), "serviceAccount": {"create": True}}, namespace="default")
    assert by_kind(objs, "ServiceAccount") and by_kind(objs, "Role")


def test_no_secret_values_in_the_chart(tmp_path: Path) -> None:
    proc = run_helm("template", "r1", str(CHART_DIR), "--set", "s3.secretAccessKey=abc", check=False)
    assert proc.returncode != 0
    assert "secretAccessKey" in proc.stderr
    objs = template(tmp_path, {"s3": {"credentialsSecret": "s3-creds", "endpoint": "http://minio:9000"}})
    pod = by_kind(objs, "Pod")[0]
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env[C.ENV_AWS_SECRET]["valueFrom"] == {"secretKeyRef": {"name": "s3-creds", "key": C.SECRET_ACCESS_KEY}}
    assert env[C.ENV_AWS_ENDPOINT]["value"] == "http://minio:9000"


# --- values.schema.json -----------------------------------------------------------------------------------


def test_values_schema_is_current() -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == schema_text(), (
        f"{SCHEMA_PATH} is stale: run `python -m dynamics.spec.schema --update` (or `make chart-schema`)"
    )


BAD_RUNS = [
    ("alpha", {"sample": {"alpha": 5}}, "/run/sample/alpha"),
    ("unknown-field", {"train": {"learningRate": 1}}, "learningRate"),
    ("launcher", {"train": {"launcher": "mpi"}}, "/run/train/launcher"),
    ("name", {"name": "Bad_Name"}, "/run/name"),
    ("missing-storage", {"storage": None}, "storage"),
]


@pytest.mark.parametrize(("change", "field"), [(c, f) for _, c, f in BAD_RUNS], ids=[i for i, _, _ in BAD_RUNS])
def test_invalid_run_is_rejected_naming_the_field(change: dict, field: str, tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    for key, value in change.items():
        if value is None:
            raw.pop(key)
        elif isinstance(value, dict):
            raw[key] = {**raw.get(key, {}), **value}
        else:
            raw[key] = value
    for command in (["template", "r1"], ["lint", "--strict"]):
        proc = run_helm(*command, str(CHART_DIR), values={"run": raw}, tmp_path=tmp_path, check=False)
        assert proc.returncode != 0, command
        assert field in proc.stdout + proc.stderr, (command, proc.stdout + proc.stderr)


def test_values_yaml_matches_the_model_and_documents_every_value() -> None:
    text = (CHART_DIR / "values.yaml").read_text(encoding="utf-8")
    assert ChartValues.model_validate(yaml.safe_load(text)) == ChartValues()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z][\w-]*):\s*(\S.*)?$", line)
        if not m or m.group(3) is None:
            continue  # a section header: its children carry the comments
        above = []
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#"):
            above.append(lines[j].strip())
            j -= 1
        assert any(c.startswith("# -- ") for c in above), f"values.yaml:{i + 1}: `{m.group(2)}` lacks a `# --` comment"


def test_chart_defaults_match_the_package() -> None:
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == dynamics.__version__ == chart["version"]
    images = ChartValues().images
    for field, ref in Images().model_dump(exclude={"pull_policy"}).items():
        assert f"{getattr(images, field).repository}:{getattr(images, field).tag}" == ref
    assert images.pull_policy == Images().pull_policy
    assert ChartValues().service_account.name == RunSpec.model_fields["kubernetes"].default.service_account
    for example in EXAMPLES:  # examples use the published images
        assert example_spec(example).images == Images()


def test_helpers_use_the_package_label_keys() -> None:
    helpers = (CHART_DIR / "templates" / "_helpers.tpl").read_text(encoding="utf-8")
    known = {C.LABEL_NAME, C.LABEL_INSTANCE, C.LABEL_COMPONENT, C.LABEL_MANAGED_BY, C.LABEL_PART_OF,
             C.LABEL_RUN, C.LABEL_STAGE, C.LABEL_KUEUE_QUEUE, "helm.sh/chart", "app.kubernetes.io/version"}
    used = set(re.findall(r"^([a-z0-9.-]+\.[a-z]+/[a-z-]+):", helpers, flags=re.MULTILINE))
    assert used <= known, used - known
    assert {C.LABEL_NAME, C.LABEL_INSTANCE, C.LABEL_COMPONENT, C.LABEL_MANAGED_BY, C.LABEL_RUN, C.LABEL_STAGE,
            C.LABEL_KUEUE_QUEUE} <= used
    assert f"{C.LABEL_NAME}: {C.APP_NAME}\n" in helpers
    assert f"{C.LABEL_MANAGED_BY}: {C.MANAGED_BY}\n" in helpers


# --- prerequisites, namespace, NOTES, helm test -----------------------------------------------------------


def test_pytorchjob_launcher_needs_the_training_operator(tmp_path: Path) -> None:
    spec = example_spec(ROOT / "examples" / "datacomp-dfn-vitb16.yaml")
    assert spec.train.launcher == "pytorchjob"
    values = run_values(spec)
    proc = run_helm("template", "r1", str(CHART_DIR), "-n", spec.namespace, values=values, tmp_path=tmp_path,
                    check=False)
    assert proc.returncode != 0
    assert OPERATOR_INSTALL in proc.stderr
    assert "launcher: indexed-job" in proc.stderr
    assert f"--api-versions {PYTORCHJOB_API}" in proc.stderr  # helm template offline knows no cluster's APIs
    assert template(tmp_path, values, namespace=spec.namespace, api_versions=(PYTORCHJOB_API,))
    values["run"]["train"]["launcher"] = "indexed-job"
    assert template(tmp_path, values, namespace=spec.namespace)


def test_release_namespace_must_be_the_runs(tmp_path: Path) -> None:
    spec = example_spec(ROOT / "examples" / "quickstart.yaml")
    proc = run_helm("template", "r1", str(CHART_DIR), "-n", "other", values=run_values(spec), tmp_path=tmp_path,
                    check=False)
    assert proc.returncode != 0
    assert "-n default" in proc.stderr


def install_notes(tmp_path: Path, values: dict[str, Any] | None, namespace: str) -> str:
    """NOTES.txt as `helm install` prints it (client-side dry run: no cluster needed)."""
    out = run_helm("install", "r1", str(CHART_DIR), "-n", namespace, "--dry-run=client", values=values,
                   tmp_path=tmp_path).stdout
    return out.split("NOTES:", 1)[1]


def test_notes_tell_how_to_follow_the_run(tmp_path: Path) -> None:
    spec = example_spec(ROOT / "examples" / "quickstart.yaml")
    notes = install_notes(tmp_path, run_values(spec), spec.namespace)
    follow = f"kubectl logs -n {spec.namespace} -l {C.LABEL_RUN}={spec.name} -f --prefix --max-log-requests="
    assert follow in notes
    cap = int(notes.split(follow, 1)[1].split()[0])
    # The cap must hold every pod a run can create, for the largest example (the reference recipe) too.
    recipe = example_spec(ROOT / "examples" / "datacomp-dfn-vitb16.yaml")
    assert cap >= max(max_pods(spec), max_pods(recipe)) > 5
    assert f"dynamics status {spec.name}" in notes and f"dynamics logs {spec.name}" in notes
    notes = install_notes(tmp_path, None, "team")
    assert f"kubectl logs -n team -l {C.LABEL_RUN}=NAME -f --prefix --max-log-requests={cap}" in notes
    assert OPERATOR_INSTALL in notes


def test_helm_test_pod_runs_doctor(tmp_path: Path) -> None:
    spec = example_spec(ROOT / "examples" / "quickstart.yaml")
    for values, namespace in ((None, "team"), (run_values(spec), spec.namespace)):
        objs = template(tmp_path, values, namespace=namespace)
        [pod] = by_kind(objs, "Pod")
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        command = pod["spec"]["containers"][0]["command"]
        assert command[:4] == ["dynamics", "doctor", "--namespace", namespace]
        assert command[4:] == ([C.SPEC_MOUNT_PATH] if values else [])
        assert pod["spec"]["serviceAccountName"] == "dynamics"
        check_objects([pod])
    assert not by_kind(template(tmp_path, {"test": {"enabled": False}}), "Pod")


def test_defaults_configmap_is_a_partial_spec(tmp_path: Path) -> None:
    values = {
        "s3": {"endpoint": "http://minio:9000", "region": "eu-west-1", "credentialsSecret": "s3-creds"},
        "images": {"trainer": {"repository": "registry.example/trainer", "tag": "1.0"}},
        "resources": {"train": {"cpu": "32", "memory": "256Gi"}},
        "nodeSelector": {"pool": "gpu"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
        "imagePullSecrets": ["regcred"],
        "networkPolicy": {"enabled": True, "egressPorts": [443, 9000]},
    }
    [cm] = [o for o in template(tmp_path, values) if o["metadata"]["name"] == "dynamics-defaults"]
    defaults = yaml.safe_load(cm["data"]["defaults.yaml"])
    raw = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    for section, fields in defaults.items():
        raw[section] = {**fields, **raw.get(section, {})}
    spec = validate(raw)
    assert spec.storage.endpoint == "http://minio:9000" and spec.storage.credentials_secret == "s3-creds"
    assert spec.images.trainer == "registry.example/trainer:1.0"
    assert spec.kubernetes.tolerations[0].key == "nvidia.com/gpu"
    assert spec.kubernetes.image_pull_secrets == ["regcred"]
    # Issue 20 item 13: the namespace's NetworkPolicy setting reaches every run submitted there.
    assert spec.kubernetes.network_policy.enabled and spec.kubernetes.network_policy.egress_ports == [443, 9000]


# --- NetworkPolicy (issue 20 item 13) ----------------------------------------------------------------------


@pytest.mark.parametrize("policy", [
    {"enabled": True},
    {"enabled": True,
     "egressCidrs": [{"cidr": "52.216.0.0/15", "ports": [443]}, {"cidr": "10.0.0.0/8", "ports": [9000]}],
     "apiServerCidrs": ["172.20.0.10/32"], "apiServerPorts": [443], "dnsNamespace": "dns",
     "dnsPodLabels": {"app": "coredns"}},
], ids=["defaults", "cidrs"])
def test_network_policies_match_the_renderer(policy: dict, tmp_path: Path) -> None:
    """A run release with kubernetes.networkPolicy renders the NetworkPolicies dynamics-submit creates, valid on
    every supported minor; the helm test Pod is one of the API clients they let through."""
    raw = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    raw.setdefault("kubernetes", {})["networkPolicy"] = policy
    spec = validate(raw)
    for values in (run_values(spec), {"run": raw}):
        objs = template(tmp_path, values, namespace=spec.namespace)
        assert len(by_kind(objs, "NetworkPolicy")) == 3
        assert_same_submission(objs, spec)
        check_objects(objs)
        for minor in C.SUPPORTED_KUBERNETES:
            for obj in by_kind(objs, "NetworkPolicy"):
                validate_any(obj, minor)
    [api] = [o for o in objs if o["metadata"]["name"].endswith("-api")]
    [pod] = by_kind(objs, "Pod")
    selector = api["spec"]["podSelector"]
    assert selector["matchLabels"].items() <= pod["metadata"]["labels"].items()
    [expr] = selector["matchExpressions"]
    assert pod["metadata"]["labels"][expr["key"]] in expr["values"]
    raw["kubernetes"]["networkPolicy"] = {"enabled": False}
    assert not by_kind(template(tmp_path, {"run": raw}, namespace=spec.namespace), "NetworkPolicy")


def test_namespace_install_lets_the_helm_test_pod_through(tmp_path: Path) -> None:
    """networkPolicy.enabled at the namespace install: the `helm test` Pod (no run policies select it) gets
    DNS and the API server, as a hook created before it."""
    assert not by_kind(template(tmp_path), "NetworkPolicy")
    objs = template(tmp_path, {"networkPolicy": {"enabled": True, "apiServerCidrs": ["10.0.0.1/32"]}})
    [policy] = by_kind(objs, "NetworkPolicy")
    [pod] = by_kind(objs, "Pod")
    check_objects(objs)
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert int(policy["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        pod["metadata"]["annotations"].get("helm.sh/hook-weight", "0"))
    dns, api = policy["spec"]["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert api["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}] and {p["port"] for p in api["ports"]} == {443, 6443}

