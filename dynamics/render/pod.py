"""Pod-level building blocks shared by every rendered object: labels, security, env, volumes.

Everything here is a pure function of the spec returning plain dicts (no Kubernetes client types),
so the same output serves --dry-run, the golden manifests, the controller and --local.
"""

from __future__ import annotations

from typing import Any

from dynamics import constants as C
from dynamics.constants import Stage
from dynamics.spec import names
from dynamics.spec.fingerprint import fingerprints
from dynamics.spec.model import EnvVar, Resources, RunSpec

Obj = dict[str, Any]

SPEC_VOLUME = "spec"
SCRATCH_VOLUME = "scratch"
SHM_VOLUME = "dshm"
GPU_RESOURCE = "nvidia.com/gpu"
EPHEMERAL_STORAGE = "ephemeral-storage"
SCRATCH_DIR = "/tmp"


def labels(spec: RunSpec, component: str) -> dict[str, str]:
    """Standard labels; `kubectl -l dynamics.io/run=NAME` selects the whole run."""
    out = {
        C.LABEL_NAME: C.APP_NAME,
        C.LABEL_INSTANCE: spec.name,
        C.LABEL_COMPONENT: component,
        C.LABEL_MANAGED_BY: C.MANAGED_BY,
        C.LABEL_RUN: spec.name,
        C.LABEL_STAGE: component,
    }
    return out


def workload_labels(spec: RunSpec, component: str) -> dict[str, str]:
    """Labels for Jobs/PyTorchJobs: the standard ones plus Kueue's queue label when configured."""
    out = labels(spec, component)
    if spec.kubernetes.queue_name:
        out[C.LABEL_KUEUE_QUEUE] = spec.kubernetes.queue_name
    return out


def metadata(spec: RunSpec, name: str, component: str, *, workload: bool = False) -> Obj:
    """Object metadata in the run's namespace."""
    return {
        "name": name,
        "namespace": spec.namespace,
        "labels": workload_labels(spec, component) if workload else labels(spec, component),
    }


def pod_metadata(spec: RunSpec, component: str, annotations: dict[str, str] | None = None) -> Obj:
    """A pod template's metadata: the run's labels plus the spec's extra pod labels and annotations
    (``annotations``: the renderer's own, which the spec's may override)."""
    k = spec.kubernetes
    out: Obj = {"labels": {**k.pod_labels, **labels(spec, component)}}
    merged = {**(annotations or {}), **k.pod_annotations}
    if merged:
        out["annotations"] = merged
    return out


def container_security() -> Obj:
    """Container fields required by the 'restricted' Pod Security Standard."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security(spec: RunSpec) -> Obj:
    """Pod-level security context ('restricted' Pod Security Standard)."""
    uid = spec.kubernetes.run_as_user
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def env(spec: RunSpec) -> list[Obj]:
    """Environment of every stage container; S3 credentials only by Secret reference."""
    out: list[Obj] = [
        {"name": C.ENV_SPEC, "value": C.SPEC_MOUNT_PATH},
        {"name": C.ENV_RUN, "value": spec.name},
        {"name": C.ENV_NAMESPACE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "HOME", "value": SCRATCH_DIR},
        {"name": "HF_HOME", "value": f"{SCRATCH_DIR}/hf"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    storage = spec.storage
    if storage.endpoint:
        out.append({"name": C.ENV_AWS_ENDPOINT, "value": storage.endpoint})
    if storage.region:
        out.append({"name": C.ENV_AWS_REGION, "value": storage.region})
    if storage.credentials_secret:
        for env_name, key in ((C.ENV_AWS_KEY_ID, C.SECRET_KEY_ID), (C.ENV_AWS_SECRET, C.SECRET_ACCESS_KEY)):
            out.append({"name": env_name,
                        "valueFrom": {"secretKeyRef": {"name": storage.credentials_secret, "key": key}}})
    out += [env_var(e) for e in spec.kubernetes.env]
    return out


def env_var(var: EnvVar) -> Obj:
    """One ``kubernetes.env`` entry as a container env entry: a literal, or a Secret key reference."""
    if var.value_from is not None:
        ref = var.value_from.secret_key_ref
        return {"name": var.name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
    return {"name": var.name, "value": var.value}


def resources(res: Resources, gpus: int = 0, extra: dict[str, int] | None = None, *, ephemeral: str) -> Obj:
    """Requests = limits (Guaranteed QoS for the heavy stages); GPUs as nvidia.com/gpu; ephemeral-storage
    too (a ResourceQuota on it refuses pods without it, and the kubelet evicts a pod beyond its limit)."""
    limits: Obj = {"cpu": res.cpu, "memory": res.memory, EPHEMERAL_STORAGE: ephemeral}
    requests: Obj = {"cpu": res.cpu, "memory": res.memory, EPHEMERAL_STORAGE: ephemeral}
    if gpus:
        limits[GPU_RESOURCE] = gpus
        requests[GPU_RESOURCE] = gpus
    for key, count in (extra or {}).items():
        limits[key] = count
        requests[key] = count
    return {"requests": requests, "limits": limits}


def volumes(spec: RunSpec, shm_size: str | None = None, *, scratch: str | None = None) -> tuple[list[Obj], list[Obj]]:
    """(volumes, mounts): the resolved spec, a scratch dir of at most ``scratch`` (default
    kubernetes.ephemeralStorage), and optionally /dev/shm in memory."""
    vols: list[Obj] = [
        {"name": SPEC_VOLUME, "configMap": {"name": names.config_map(spec.name),
                                            "items": [{"key": C.CONFIG_SPEC_KEY, "path": C.CONFIG_SPEC_KEY}]}},
        {"name": SCRATCH_VOLUME, "emptyDir": {"sizeLimit": scratch or spec.kubernetes.ephemeral_storage}},
    ]
    mounts: list[Obj] = [
        {"name": SPEC_VOLUME, "mountPath": C.SPEC_MOUNT_DIR, "readOnly": True},
        {"name": SCRATCH_VOLUME, "mountPath": SCRATCH_DIR},
    ]
    if shm_size:
        vols.append({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}})
        mounts.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})
    return vols, mounts


def container(spec: RunSpec, *, name: str, image: str, command: list[str], res: Obj,
              mounts: list[Obj], ports: list[Obj] | None = None) -> Obj:
    """A stage container."""
    out: Obj = {
        "name": name,
        "image": image,
        "imagePullPolicy": spec.images.pull_policy,
        "command": command,
        "env": env(spec),
        "resources": res,
        "volumeMounts": mounts,
        "securityContext": container_security(),
    }
    if ports:
        out["ports"] = ports
    return out


def pin_fingerprint(spec: RunSpec, ctr: Obj, stage: Stage) -> None:
    """Tell a stage's container the fingerprint it was created for: stage pods mount the run ConfigMap live,
    so a spec edited after the stage started must not silently change what a later pod computes."""
    ctr["env"] = [*ctr["env"], {"name": C.ENV_STAGE_FINGERPRINT, "value": fingerprints(spec)[stage]}]


def uses_gpus(containers: list[Obj]) -> bool:
    """Whether any of ``containers`` requests a GPU."""
    return any(int(c["resources"].get("limits", {}).get(GPU_RESOURCE, 0)) > 0 for c in containers)


def placement(spec: RunSpec, gpus: bool) -> Obj:
    """nodeSelector/tolerations/affinity of a GPU or a CPU pod: its class's own, else the run-wide ones.

    Without classes, an H100 nodeSelector would also pin the controller and the scale pod to GPU nodes.
    """
    k = spec.kubernetes
    cls = k.gpu_pods if gpus else k.cpu_pods
    selector = k.node_selector if cls.node_selector is None else cls.node_selector
    tolerations = k.tolerations if cls.tolerations is None else cls.tolerations
    affinity = k.affinity if cls.affinity is None else cls.affinity
    out: Obj = {}
    if selector:
        out["nodeSelector"] = dict(selector)
    if tolerations:
        out["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in tolerations]
    if affinity:
        out["affinity"] = affinity
    return out


def pod_spec(spec: RunSpec, containers: list[Obj], vols: list[Obj], *, restart_policy: str,
             service_account: str | None = None, host_network: bool = False) -> Obj:
    """Pod spec with the run's scheduling settings applied."""
    k = spec.kubernetes
    out: Obj = {
        "restartPolicy": restart_policy,
        # Stage pods run model code: their ServiceAccount has no RBAC and they get no API token.
        "serviceAccountName": service_account or k.workload_service_account,
        "automountServiceAccountToken": service_account is not None,
        "securityContext": pod_security(spec),
        "containers": containers,
        "volumes": vols,
    }
    out.update(placement(spec, uses_gpus(containers)))
    if k.priority_class_name:
        out["priorityClassName"] = k.priority_class_name
    if k.image_pull_secrets:
        out["imagePullSecrets"] = [{"name": n} for n in k.image_pull_secrets]
    if host_network:
        out["hostNetwork"] = True
        out["dnsPolicy"] = "ClusterFirstWithHostNet"
    return out
