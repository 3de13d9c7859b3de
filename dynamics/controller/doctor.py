"""``dynamics doctor [spec.yaml]``: check every prerequisite of a run, each PASS/FAIL with a fix.

Cluster: API reachable; RBAC (one SelfSubjectAccessReview per permission the run needs); the
PyTorchJob CRD when the trainer is launched as a PyTorchJob; nodes with enough ``nvidia.com/gpu``,
and their NVIDIA drivers against the images' CUDA; the S3 credentials Secret; a default-deny
NetworkPolicy without the run's own policies. Storage (with a spec): the work directory in S3,
readable and writable, and the shard pattern resolving to existing S3 shards. The closing line
counts problems and warnings ("passed with 1 warning" is not "all checks passed").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TextIO

from dynamics import constants as C
from dynamics.controller.decide import needs_pytorchjob
from dynamics.controller.kube import CHART_INSTALL, REQUIRED_PERMISSIONS, Kube, KubeApiError, Obj, Permission
from dynamics.controller.resources import NAMESPACES, NETWORK_POLICIES, NODES, PYTORCHJOBS, SECRETS
from dynamics.errors import DynamicsError, KubeError
from dynamics.render.netpol import POLICIES
from dynamics.spec.model import RunSpec
from dynamics.stages.common import storage_config
from dynamics.storage import objects as storage
from dynamics.storage.shards import resolve_shards

GPU_RESOURCE = "nvidia.com/gpu"
PSS_ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
OPERATOR_TEMPLATE = "charts/operator/pytorch-init-container-restricted.yaml"


class Verdict(StrEnum):
    """Outcome of one check."""

    PASS = "PASS"
    FAIL = "FAIL"
    WARN = "WARN"
    SKIP = "SKIP"


@dataclass(frozen=True)
class Check:
    """One check's result: what was checked, the verdict, details, and how to fix a failure."""

    name: str
    verdict: Verdict
    detail: str
    fix: str | None = None


def check_api(kube: Kube) -> Check:
    """The API server answers ``/version``."""
    try:
        version = kube.version()
    except KubeError as err:
        return Check("Kubernetes API", Verdict.FAIL, err.message, err.hint)
    return Check(
        "Kubernetes API",
        Verdict.PASS,
        f"{version.get('gitVersion', '?')} at {kube.endpoint.describe()}, namespace {kube.namespace}",
    )


def _display(perm: Permission) -> str:
    verb, group, resource = perm
    return f"{verb} {resource}.{group}" if group else f"{verb} {resource}"


def needed_permissions(spec: RunSpec | None) -> list[Permission]:
    """The permissions a run needs (PyTorchJob ones only with the pytorchjob launcher)."""
    skip_kubeflow = spec is not None and not needs_pytorchjob(spec)
    return [p for p in REQUIRED_PERMISSIONS if not (skip_kubeflow and p[1] == PYTORCHJOBS.group)]


def check_rbac(kube: Kube, spec: RunSpec | None) -> Check:
    """Every needed permission, asked with a SelfSubjectAccessReview."""
    perms = needed_permissions(spec)
    missing = [p for p in perms if not kube.can_i(*p)]
    if missing:
        return Check(
            "RBAC",
            Verdict.FAIL,
            "missing: " + ", ".join(_display(p) for p in missing),
            f"`{CHART_INSTALL.format(ns=kube.namespace)}` creates the Role and RoleBinding; "
            "or ask an admin to grant these verbs",
        )
    return Check("RBAC", Verdict.PASS, f"all {len(perms)} permissions granted in namespace {kube.namespace}")


def check_crd(kube: Kube, spec: RunSpec | None) -> Check:
    """The PyTorchJob resource is served (the Kubeflow training operator's CRD is installed)."""
    served = kube.served(PYTORCHJOBS.api_version)
    present = served is not None and PYTORCHJOBS.plural in served
    if spec is not None and not needs_pytorchjob(spec):
        note = "installed" if present else "not installed"
        return Check("PyTorchJob CRD", Verdict.SKIP, f"{note}; not needed (train.launcher: indexed-job)")
    if present:
        return Check("PyTorchJob CRD", Verdict.PASS, f"{PYTORCHJOBS.api_version} pytorchjobs is served")
    return Check(
        "PyTorchJob CRD",
        Verdict.FAIL,
        f"{PYTORCHJOBS.api_version} pytorchjobs is not served",
        "ask an admin to install the Kubeflow training operator (v1.9), "
        "or set train.launcher: indexed-job (no operator needed)",
    )


def _pss_problems(spec: RunSpec | None, level: str) -> list[str]:
    """What Pod Security admission at ``level`` will refuse among the run's pods."""
    problems = []
    if spec is not None and spec.train.host_network and level in ("baseline", "restricted"):
        problems.append("train.hostNetwork: true (host namespaces): every trainer pod is refused")
    if level == "restricted" and (spec is None or (needs_pytorchjob(spec) and spec.train.nodes > 1)):
        problems.append("PyTorchJob Worker pods: training operator v1.9 adds an init-pytorch container with no "
                        "securityContext, so they are refused (FailedCreate) unless the operator uses a "
                        "restricted init-container template")
    return problems


def check_pod_security(kube: Kube, spec: RunSpec | None) -> Check:
    """The namespace's ``pod-security.kubernetes.io/enforce`` level admits every pod of the run."""
    try:
        ns = kube.get(NAMESPACES, kube.namespace)
    except KubeApiError as err:
        if err.status != 403:
            raise
        return Check("Pod Security", Verdict.WARN, f"cannot read namespace {kube.namespace}; its "
                     f"{PSS_ENFORCE_LABEL} label is not checked",
                     f"`kubectl get ns {kube.namespace} --show-labels`: with 'restricted', see the README's "
                     "restricted-namespace recipe")
    level = (((ns or {}).get("metadata") or {}).get("labels") or {}).get(PSS_ENFORCE_LABEL, "privileged")
    problems = _pss_problems(spec, level)
    if not problems:
        return Check("Pod Security", Verdict.PASS, f"namespace enforces '{level}': every pod of the run is admitted")
    return Check(
        "Pod Security", Verdict.FAIL, f"namespace {kube.namespace} enforces '{level}': " + "; ".join(problems),
        f"install {OPERATOR_TEMPLATE} as the operator's --pytorch-init-container-template-file (README: "
        "restricted namespaces), or set train.launcher: indexed-job; drop train.hostNetwork",
    )


def _gpu_need(spec: RunSpec | None) -> tuple[int, int]:
    """(GPUs per node, nodes) the largest pod group of the run needs."""
    if spec is None:
        return 1, 1
    per_pod = max(spec.train.gpus_per_node, spec.embed.gpus_per_pod, spec.cluster.gpus)
    nodes = spec.train.nodes if spec.train.gpus_per_node == per_pod else 1
    return per_pod, nodes


def check_gpus(kube: Kube, spec: RunSpec | None) -> Check:
    """Enough nodes with ``nvidia.com/gpu`` capacity for the run's largest GPU pods."""
    per_node, nodes_needed = _gpu_need(spec)
    if per_node == 0:
        return Check("GPU nodes", Verdict.SKIP, "the run uses no GPUs")
    try:
        nodes = kube.list(NODES)
    except KubeApiError as err:
        if err.status != 403:
            raise
        return Check(
            "GPU nodes",
            Verdict.WARN,
            "cannot list nodes (namespace-scoped access); not checked",
            "pods stay Pending with 'Insufficient nvidia.com/gpu' if the cluster lacks GPUs",
        )
    capacities = [int((n.get("status") or {}).get("capacity", {}).get(GPU_RESOURCE, 0)) for n in nodes]
    fitting = sum(c >= per_node for c in capacities)
    detail = f"{fitting} of {len(nodes)} nodes have >= {per_node} {GPU_RESOURCE} (need {nodes_needed})"
    if fitting >= nodes_needed:
        return Check("GPU nodes", Verdict.PASS, detail)
    return Check(
        "GPU nodes",
        Verdict.FAIL,
        detail,
        "add GPU nodes (with the NVIDIA device plugin), or lower train.nodes / gpusPerNode",
    )


def node_driver(node: Obj) -> str | None:
    """The NVIDIA driver version GPU feature discovery labelled ``node`` with (None: not labelled). Pure."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    if labels.get(C.LABEL_DRIVER_FULL):
        return labels[C.LABEL_DRIVER_FULL]
    major = labels.get(C.LABEL_DRIVER_MAJOR) or labels.get(C.LABEL_DRIVER_MAJOR_OLD)
    parts = [major, labels.get(C.LABEL_DRIVER_MINOR_OLD), labels.get(C.LABEL_DRIVER_REV_OLD)]
    return ".".join(p for p in parts if p) if major else None


def _branch(driver: str) -> int | None:
    head = driver.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def driver_check(nodes: list[Obj]) -> Check:
    """GPU nodes' drivers against the images' CUDA (driver >= MIN_NVIDIA_DRIVER), naming old nodes. Pure."""
    name, need = "GPU driver", C.MIN_NVIDIA_DRIVER
    gpu_nodes = [n for n in nodes if int((n.get("status") or {}).get("capacity", {}).get(GPU_RESOURCE, 0))]
    if not gpu_nodes:
        return Check(name, Verdict.SKIP, "no GPU nodes")
    drivers = {n["metadata"]["name"]: node_driver(n) for n in gpu_nodes}
    known = {node: d for node, d in drivers.items() if d}
    old = {node: d for node, d in known.items() if (_branch(d) or 0) < need}
    unlabelled = sorted(set(drivers) - set(known))
    if not known:
        return Check(name, Verdict.SKIP, f"no GPU node carries {C.LABEL_DRIVER_MAJOR} (NVIDIA GPU feature "
                     "discovery is not deployed); not checked: the GPU stages check it when they start")
    unknown = f"; {len(unlabelled)} without driver labels: {', '.join(unlabelled)}" if unlabelled else ""
    if not old:
        listed = ", ".join(f"{node} {d}" for node, d in sorted(known.items()))
        return Check(name, Verdict.PASS, f"driver >= {need} (CUDA {C.IMAGE_CUDA}) on {listed}{unknown}")
    listed = ", ".join(f"{node} ({d})" for node, d in sorted(old.items()))
    detail = (f"the images' CUDA {C.IMAGE_CUDA} needs NVIDIA driver >= {need}; older on {listed}: GPU stages "
              f"scheduled there fail at start{unknown}")
    keep_off = (f"or keep GPU pods off them: kubernetes.gpuPods.affinity with nodeAffinity matchExpressions "
                f"[{{key: {C.LABEL_DRIVER_MAJOR}, operator: Gt, values: ['{need - 1}']}}]")
    fix = f"upgrade the NVIDIA driver on those nodes to {need} or newer (GPU operator: driver.version), {keep_off}"
    return Check(name, Verdict.FAIL if len(old) == len(known) and not unlabelled else Verdict.WARN, detail, fix)


def check_driver(kube: Kube, spec: RunSpec | None) -> Check:
    """The GPU nodes' NVIDIA drivers (GPU feature discovery's labels) against what the images need."""
    if _gpu_need(spec)[0] == 0:
        return Check("GPU driver", Verdict.SKIP, "the run uses no GPUs")
    try:
        nodes = kube.list(NODES)
    except KubeApiError as err:
        if err.status != 403:
            raise
        return Check("GPU driver", Verdict.SKIP, "cannot list nodes; not checked (see GPU nodes)")
    return driver_check(nodes)


def check_secret(kube: Kube, spec: RunSpec | None) -> Check:
    """The S3 credentials Secret named in the spec exists (its contents are never read)."""
    name = spec.storage.credentials_secret if spec else None
    if not name:
        return Check("S3 credentials", Verdict.SKIP, "no storage.credentialsSecret (IRSA or node credentials)")
    try:
        found = kube.get(SECRETS, name) is not None
    except KubeApiError as err:
        if err.status != 403:
            raise
        return Check("S3 credentials", Verdict.WARN, f"cannot read Secret {name} to check it exists")
    if found:
        return Check("S3 credentials", Verdict.PASS, f"Secret {name} exists")
    return Check(
        "S3 credentials",
        Verdict.FAIL,
        f"Secret {name} not found in namespace {kube.namespace}",
        f"kubectl create secret generic {name} -n {kube.namespace} "
        "--from-literal=AWS_ACCESS_KEY_ID=... --from-literal=AWS_SECRET_ACCESS_KEY=...",
    )


def check_workdir(spec: RunSpec) -> Check:
    """The work directory can be listed and written (a probe object is written and deleted)."""
    workdir = spec.storage.workdir
    if not storage.is_s3(workdir):
        # dynamics-submit refuses it too: each stage pod would write into its own ephemeral filesystem.
        return Check(
            "work directory",
            Verdict.FAIL,
            f"{workdir} is a local path: a cluster run's pods cannot share it (fine for --local only)",
            "use storage.workdir: s3://bucket/prefix for cluster runs",
        )
    try:
        storage.check_access(workdir, storage_config(spec), write=True)
    except DynamicsError as err:
        return Check("work directory", Verdict.FAIL, err.message, err.hint)
    return Check("work directory", Verdict.PASS, f"{workdir} is readable and writable")


def check_shards(spec: RunSpec) -> Check:
    """Every shard of the data pattern exists (in S3: a cluster run's pods cannot read local shards)."""
    if not storage.is_s3(spec.data.shards):
        return Check("shards", Verdict.FAIL, f"{spec.data.shards} is a local path: a cluster run's pods "
                     "cannot read it (fine for --local only)", "upload the shards and use data.shards: s3://...")
    try:
        urls = resolve_shards(spec.data.shards, storage_config(spec))
    except DynamicsError as err:
        return Check("shards", Verdict.FAIL, err.message, err.hint)
    return Check("shards", Verdict.PASS, f"all {len(urls)} shards of {spec.data.shards} exist")


def _policy_types(policy: dict) -> set[str]:
    """The directions a NetworkPolicy applies to (an unset policyTypes: Ingress, plus Egress with egress rules)."""
    spec = policy.get("spec") or {}
    return set(spec.get("policyTypes") or ["Ingress", *(["Egress"] if spec.get("egress") else [])])


def default_denied(policies: list[dict]) -> dict[str, list[str]]:
    """Direction -> names of the policies that deny it to every pod (empty podSelector, the direction in
    policyTypes and no rules for it). Pure."""
    out: dict[str, list[str]] = {}
    for policy in policies:
        spec = policy.get("spec") or {}
        selector = spec.get("podSelector") or {}
        if selector.get("matchLabels") or selector.get("matchExpressions"):
            continue  # selects some pods only
        for direction in sorted(_policy_types(policy)):
            if not spec.get(direction.lower()):
                out.setdefault(direction, []).append(policy["metadata"]["name"])
    return out


def network_policy_check(policies: list[dict], spec: RunSpec | None, namespace: str) -> Check:
    """Whether a default-deny namespace lets the run's traffic through. Pure."""
    denied = default_denied(policies)
    if not denied:
        return Check("NetworkPolicy", Verdict.PASS, f"no default-deny NetworkPolicy in namespace {namespace}")
    which = "; ".join(f"{d} by {', '.join(names)}" for d, names in sorted(denied.items()))
    fix = "set kubernetes.networkPolicy.enabled: true in the run spec (README: NetworkPolicy)"
    if spec is None:
        return Check("NetworkPolicy", Verdict.WARN, f"namespace {namespace} denies {which}: runs need their "
                     "NetworkPolicies", fix)
    needed = [f"{spec.name}-{suffix} ({why})" for suffix, (directions, why) in POLICIES.items()
              if directions & denied.keys() and (suffix != "trainers" or spec.train.nodes > 1)]
    if spec.kubernetes.network_policy.enabled:
        return Check("NetworkPolicy", Verdict.PASS, f"namespace {namespace} denies {which}; the run brings "
                     f"its own NetworkPolicies ({', '.join(n.split(' ')[0] for n in needed)})")
    return Check("NetworkPolicy", Verdict.FAIL, f"namespace {namespace} denies {which}, and the run has no "
                 f"NetworkPolicies: missing {'; '.join(needed)}", fix)


def check_network_policy(kube: Kube, spec: RunSpec | None) -> Check:
    """A default-deny namespace (a NetworkPolicy selecting every pod with no rules) and the run's policies."""
    try:
        policies = kube.list(NETWORK_POLICIES)
    except KubeApiError as err:
        if err.status != 403:
            raise
        return Check("NetworkPolicy", Verdict.WARN, f"cannot list NetworkPolicies in {kube.namespace}; a "
                     "default-deny namespace is not checked",
                     "with default-deny policies set kubernetes.networkPolicy.enabled: true")
    return network_policy_check(policies, spec, kube.namespace)


def cluster_checks(kube: Kube, spec: RunSpec | None) -> list[Check]:
    """The cluster checks; later ones are skipped when the API cannot be reached."""
    api = check_api(kube)
    if api.verdict is Verdict.FAIL:
        return [api, Check("cluster checks", Verdict.SKIP, "the API server is not reachable")]
    checks: list[Callable[[Kube, RunSpec | None], Check]] = [
        check_rbac, check_crd, check_pod_security, check_gpus, check_driver, check_secret, check_network_policy,
    ]
    return [api, *(check(kube, spec) for check in checks)]


def print_checks(checks: list[Check], out: TextIO) -> None:
    """One line per check (``PASS  name  detail``) and an indented ``fix:`` line for failures."""
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"{c.verdict.value:<4}  {c.name:<{width}}  {c.detail}", file=out)
        if c.fix and c.verdict in (Verdict.FAIL, Verdict.WARN):
            print(f"{'':<4}  {'':<{width}}  fix: {c.fix}", file=out)


def run_doctor(kube: Kube, spec: RunSpec | None, out: TextIO) -> int:
    """Run every check and print them; exit code 1 if any FAILed."""
    checks = cluster_checks(kube, spec)
    if spec is not None:
        checks += [check_workdir(spec), check_shards(spec)]
    print_checks(checks, out)
    print(f"\n{summary(checks)}", file=out)
    return 1 if any(c.verdict is Verdict.FAIL for c in checks) else 0


def summary(checks: list[Check]) -> str:
    """The closing line: problems first, then warnings; 'all checks passed' only when nothing warned. Pure."""
    failed = sum(c.verdict is Verdict.FAIL for c in checks)
    warned = sum(c.verdict is Verdict.WARN for c in checks)
    warnings = f"{warned} warning{'s' if warned != 1 else ''}"
    if failed:
        return f"{failed} problem{'s' if failed != 1 else ''} found" + (f", {warnings}" if warned else "")
    return f"passed with {warnings}" if warned else "all checks passed"
