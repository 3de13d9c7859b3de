"""The ``kubernetes`` section of the run spec: scheduling, pod metadata, env, deadlines and TTLs."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from dynamics.spec.network import NetworkPolicy
from dynamics.spec.types import Model, Quantity


class Toleration(Model):
    """A pod toleration (Kubernetes fields)."""

    key: str | None = Field(None, description="Taint key to tolerate; empty with Exists: every taint.")
    operator: Literal["Exists", "Equal"] | None = Field(None, description="Equal (default): key and value "
                                                        "match; Exists: any value.")
    value: str | None = Field(None, description="Taint value (operator Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to tolerate; empty: all effects.")
    toleration_seconds: int | None = Field(None, description="NoExecute: how long the pod stays bound after "
                                           "the taint appears.")


class SecretKeyRef(Model):
    """One key of an existing Secret in the run's namespace."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253, description="Secret name.")
    key: str = Field(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253, description="Key in the Secret.")


class EnvSource(Model):
    """Where an environment variable's value comes from (Kubernetes' ``valueFrom``; only Secrets)."""

    secret_key_ref: SecretKeyRef = Field(description="A key of an existing Secret, e.g. {name: wandb, key: "
                                         "api-key} for WANDB_API_KEY.")


class EnvVar(Model):
    """An environment variable: a literal ``value`` (never a credential), or ``valueFrom.secretKeyRef``."""

    name: str = Field(pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", description="Environment variable name.")
    value: str | None = Field(None, description="A literal value (never a credential: those come from a "
                              "Secret through valueFrom).")
    value_from: EnvSource | None = Field(None, description="The value from a Secret key (WANDB_API_KEY, "
                                         "HF_TOKEN, ...): `kubectl create secret generic wandb "
                                         "--from-literal=api-key=...`.")

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if (self.value is None) == (self.value_from is None):
            raise ValueError(f"env {self.name}: give either value (a literal) or valueFrom.secretKeyRef, not "
                             f"{'both' if self.value is not None else 'neither'}")
        return self


MIN_TTL_SECONDS = 300


class OnFailure(StrEnum):
    """What the controller does with a failed run's workloads that still run or wait for resources."""

    STOP = "stop"  # delete them: a failed run gives back its GPUs and queue quota
    KEEP = "keep"  # leave them for debugging (someone must `dynamics cancel` the run)


class Placement(Model):
    """Where one class of pods may run; each field set here replaces the run-wide one for that class."""

    node_selector: dict[str, str] | None = Field(None, description="Replaces kubernetes.nodeSelector.")
    tolerations: list[Toleration] | None = Field(None, description="Replaces kubernetes.tolerations.")
    affinity: dict[str, Any] | None = Field(None, description="Replaces kubernetes.affinity.")


class Kubernetes(Model):
    """Scheduling and pod settings applied to every pod of the run."""

    @field_validator("pod_labels")
    @classmethod
    def _own_labels(cls, v: dict[str, str]) -> dict[str, str]:
        reserved = [k for k in v if k.startswith(("app.kubernetes.io/", "dynamics.io/", "batch.kubernetes.io/"))]
        if reserved:
            raise ValueError(f"labels {', '.join(sorted(reserved))} are set by dynamics; choose other keys")
        return v

    service_account: str = Field(
        "dynamics", description="ServiceAccount of the controller (the Helm chart creates 'dynamics' with the "
        "Role the controller needs).")
    workload_service_account: str = Field(
        "dynamics-workload", description="ServiceAccount of the stage pods, which run model code: no RBAC, and "
        "no API token is mounted (the chart creates it; give it the IRSA role).")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Every pod's nodeSelector, unless "
                                          "gpuPods/cpuPods sets its own.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Every pod's tolerations, unless "
                                          "gpuPods/cpuPods sets its own.")
    affinity: dict[str, Any] | None = Field(None, description="Every pod's affinity (Kubernetes syntax), unless "
                                             "gpuPods/cpuPods sets its own.")
    gpu_pods: Placement = Field(default_factory=Placement, description="Placement of pods that request GPUs "
                                "(embed, train, and cluster/eval when they use GPUs).")
    cpu_pods: Placement = Field(default_factory=Placement, description="Placement of pods without GPUs (the "
                                "controller, scale, CPU clustering): keeps them off GPU nodes.")
    priority_class_name: str | None = Field(None, description="PriorityClass of every pod (and the "
                                            "PyTorchJob's scheduling policy).")
    queue_name: str | None = Field(None, description="Kueue LocalQueue name (adds the queue-name label).")
    image_pull_secrets: list[str] = Field(default_factory=list, description="Secrets to pull the images with.")
    env: list[EnvVar] = Field(default_factory=list, description="Extra env for every pod, e.g. NCCL_*.")
    ttl_seconds_after_finished: int | None = Field(
        86400, ge=MIN_TTL_SECONDS,
        description=f"Finished stage workloads are deleted after this many seconds (at least {MIN_TTL_SECONDS}, "
        "so that the controller records each result first); null keeps them.")
    backoff_limit_per_index: int = Field(3, ge=0, description="Retries per Indexed-Job index.")
    max_failed_indexes: int = Field(
        5, ge=0, description="An Indexed Job fails once this many indexes failed (a systematic failure does not "
        "burn every index's retries).")
    pod_annotations: dict[str, str] = Field(
        default_factory=dict, description="Annotations on every stage pod, e.g. sidecar.istio.io/inject: 'false'.")
    pod_labels: dict[str, str] = Field(
        default_factory=dict, description="Extra labels on every stage pod (not the app.kubernetes.io/ or dynamics.io/ "
        "ones).")
    stuck_after_seconds: int = Field(
        900, ge=60, description="A stage whose pods cannot start this long (image pull, missing Secret, "
        "unschedulable, refused by admission) fails with the pod's waiting reason and last event.")
    on_failure: OnFailure = Field(
        OnFailure.STOP, description="When the run fails, 'stop' deletes its stage workloads that still run "
        "or wait (a failing trainer keeps no GPUs, pending pods no Kueue quota); 'keep' leaves them for "
        "debugging. The failure reason, the failing pod's last log lines and the Events are kept either way.")
    backoff_limit: int = Field(3, ge=0, description="Retries for single-pod Jobs and the trainer.")
    run_as_user: int = Field(1000, ge=1, description="Non-root UID (and GID) of every container (the "
                             "images' user is 1000).")
    # --- issue 20: ephemeral storage, network policies, trainer disruption (kept apart for merging) ---
    ephemeral_storage: Quantity = Field(
        "20Gi", description="ephemeral-storage request and limit of every stage pod, and the sizeLimit of its "
        "/tmp emptyDir (model downloads, checkpoint staging): a namespace ResourceQuota on ephemeral-storage "
        "refuses pods without it. The kubelet evicts a pod that writes more.")
    network_policy: NetworkPolicy = Field(
        default_factory=NetworkPolicy, description="NetworkPolicies for a default-deny namespace "
        "(off by default).")
    protect_trainers: bool = Field(
        True, description="Keep voluntary disruptions off the trainer pods: a PodDisruptionBudget "
        "(maxUnavailable 0) and the karpenter.sh/do-not-disrupt and cluster-autoscaler safe-to-evict=false "
        "annotations, so node drains, consolidation and scale-down wait for the training to end.")
