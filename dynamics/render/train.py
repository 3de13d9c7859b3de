"""The train stage: a Kubeflow PyTorchJob, or an Indexed Job + headless Service without the operator."""

from __future__ import annotations

from dynamics import constants as C
from dynamics.constants import Stage
from dynamics.render.pod import Obj, container, metadata, pin_fingerprint, pod_metadata, pod_spec, resources, volumes
from dynamics.spec import names
from dynamics.spec.model import Launcher, RunSpec

TRAIN_COMMAND_TAIL = ["--no-python", "dynamics", "stage", Stage.TRAIN.value]
# torchrun restarts its local workers this often before the pod fails (then the Job's backoffLimit).
TRAIN_MAX_RESTARTS = 3


def _train_container(spec: RunSpec, command: list[str], ports: list[Obj] | None = None) -> tuple[Obj, list[Obj]]:
    t = spec.train
    vols, mounts = volumes(spec, t.shm_size)
    ctr = container(spec, name=C.PYTORCH_CONTAINER, image=spec.images.trainer, command=command,
                    res=resources(t.resources, t.gpus_per_node, t.extra_resources,
                                  ephemeral=spec.kubernetes.ephemeral_storage), mounts=mounts, ports=ports)
    pin_fingerprint(spec, ctr, Stage.TRAIN)
    return ctr, vols


def _spread(spec: RunSpec, pod: Obj) -> None:
    """One trainer pod per node when possible: two on one node would share its GPUs' PCIe and NICs."""
    affinity = dict(pod.get("affinity") or {})
    if not spec.train.spread_nodes or spec.train.nodes < 2 or "podAntiAffinity" in affinity:
        return
    term = {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": trainer_selector(spec)}}
    affinity["podAntiAffinity"] = {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": term}]}
    pod["affinity"] = affinity


def _template(spec: RunSpec, ctr: Obj, vols: list[Obj], restart_policy: str) -> Obj:
    pod = pod_spec(spec, [ctr], vols, restart_policy=restart_policy, host_network=spec.train.host_network)
    _spread(spec, pod)
    if spec.train.gang_scheduler:
        pod["schedulerName"] = spec.train.gang_scheduler
    return {"metadata": pod_metadata(spec, Stage.TRAIN.value, trainer_annotations(spec)), "spec": pod}


def trainer_annotations(spec: RunSpec) -> dict[str, str]:
    """Karpenter's and the cluster autoscaler's opt-outs: a multi-day training must not lose a node to
    consolidation or scale-down (each loss restarts every trainer from the last checkpoint)."""
    if not spec.kubernetes.protect_trainers:
        return {}
    return {C.ANNOTATION_DO_NOT_DISRUPT: "true", C.ANNOTATION_SAFE_TO_EVICT: "false"}


def trainer_selector(spec: RunSpec) -> dict[str, str]:
    """Labels every trainer pod of the run carries (both launchers)."""
    return {C.LABEL_RUN: spec.name, C.LABEL_STAGE: Stage.TRAIN.value}


def disruption_budget(spec: RunSpec) -> Obj:
    """policy/v1 PodDisruptionBudget: no voluntary eviction (node drain, Karpenter) of a running trainer.
    A pod that is not Ready may still be evicted (``AlwaysAllow``), so a broken trainer never blocks a drain."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(spec, names.stage_job(spec.name, Stage.TRAIN), Stage.TRAIN.value),
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": trainer_selector(spec)},
                 "unhealthyPodEvictionPolicy": "AlwaysAllow"},
    }


def pytorchjob(spec: RunSpec) -> Obj:
    """PyTorchJob: Master + (nodes-1) Workers; torchrun reads the PET_* variables the operator sets."""
    t = spec.train
    # torchrun takes --nnodes/--node-rank/--master-addr/--master-port from PET_* (set by the operator).
    ctr, vols = _train_container(spec, ["torchrun", *TRAIN_COMMAND_TAIL],
                                 ports=[{"name": "pytorchjob-port", "containerPort": C.TRAIN_PORT}])
    # OnFailure: a crashed process restarts in place and resumes from the latest checkpoint.
    replicas: Obj = {"Master": {"replicas": 1, "restartPolicy": "OnFailure",
                                "template": _template(spec, ctr, vols, "OnFailure")}}
    if t.nodes > 1:
        replicas["Worker"] = {"replicas": t.nodes - 1, "restartPolicy": "OnFailure",
                              "template": _template(spec, ctr, vols, "OnFailure")}
    run_policy: Obj = {"cleanPodPolicy": "None", "backoffLimit": t.backoff_limit}
    if spec.kubernetes.ttl_seconds_after_finished is not None:
        run_policy["ttlSecondsAfterFinished"] = spec.kubernetes.ttl_seconds_after_finished
    if t.active_deadline_seconds is not None:
        run_policy["activeDeadlineSeconds"] = t.active_deadline_seconds
    scheduling: Obj = {}
    if spec.kubernetes.priority_class_name:
        scheduling["priorityClass"] = spec.kubernetes.priority_class_name
    if t.gang_scheduler:
        scheduling["minAvailable"] = t.nodes  # all nodes or none: a partial job would hold GPUs idle
    if scheduling:
        run_policy["schedulingPolicy"] = scheduling
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": metadata(spec, names.stage_job(spec.name, Stage.TRAIN), Stage.TRAIN.value, workload=True),
        "spec": {"nprocPerNode": str(t.procs), "runPolicy": run_policy, "pytorchReplicaSpecs": replicas},
    }


def indexed_trainer(spec: RunSpec) -> list[Obj]:
    """Without the training operator: Indexed Job pods with static rendezvous. Node rank = completion
    index (Kubernetes expands ``$(JOB_COMPLETION_INDEX)``); pod 0 hosts the store, the others dial its
    DNS name (retrying until it resolves). c10d on pod 0's own name raced its DNS record."""
    t = spec.train
    job_name = names.stage_job(spec.name, Stage.TRAIN)
    service = names.train_service(spec.name)
    command = ["torchrun", f"--nnodes={t.nodes}", f"--nproc-per-node={t.procs}",
               f"--node-rank=$({C.ENV_JOB_INDEX})", f"--master-addr={job_name}-0.{service}",
               f"--master-port={C.TRAIN_PORT}", f"--max-restarts={TRAIN_MAX_RESTARTS}", *TRAIN_COMMAND_TAIL]
    ctr, vols = _train_container(spec, command, ports=[{"name": "c10d", "containerPort": C.TRAIN_PORT}])
    # Pods of an Indexed Job get the hostname <job>-<index>; with the subdomain they get DNS names.
    template = _template(spec, ctr, vols, "OnFailure")
    template["spec"]["subdomain"] = service
    job_spec: Obj = {
        "completionMode": "Indexed",
        "completions": t.nodes,
        "parallelism": t.nodes,
        "backoffLimit": t.backoff_limit,
        "template": template,
    }
    if t.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = t.active_deadline_seconds
    if spec.kubernetes.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.kubernetes.ttl_seconds_after_finished
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(spec, service, Stage.TRAIN.value),
        "spec": {
            "clusterIP": "None",
            # Rendezvous must resolve before pods are Ready.
            "publishNotReadyAddresses": True,
            "selector": trainer_selector(spec),
            "ports": [{"name": "c10d", "port": C.TRAIN_PORT, "targetPort": C.TRAIN_PORT}],
        },
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(spec, job_name, Stage.TRAIN.value, workload=True),
        "spec": job_spec,
    }
    return [svc, job]


def train_objects(spec: RunSpec) -> list[Obj]:
    """The train stage's objects for the configured launcher (after the PodDisruptionBudget, if any)."""
    pdb = [disruption_budget(spec)] if spec.kubernetes.protect_trainers else []
    if spec.train.launcher is Launcher.PYTORCHJOB:
        return [*pdb, pytorchjob(spec)]
    return [*pdb, *indexed_trainer(spec)]
