"""The run's batch/v1 Jobs: controller, embed, cluster-fit, assign, scale, eval."""

from __future__ import annotations

from dynamics import constants as C
from dynamics.constants import Stage
from dynamics.render.pod import Obj, container, metadata, pin_fingerprint, pod_metadata, pod_spec, resources, volumes
from dynamics.spec import names
from dynamics.spec.checks import embed_parts
from dynamics.spec.model import Resources, RunSpec

# Exit code 2 means "bad spec or bad input": retrying cannot help, so the Job fails at once.
USER_ERROR_EXIT_CODE = 2
CONTROLLER_RESOURCES = Resources(cpu="250m", memory="256Mi")
# The controller (and the chart's helm test Pod) write only small files under /tmp.
CONTROLLER_EPHEMERAL_STORAGE = "1Gi"
SCALE_RESOURCES = Resources(cpu="4", memory="32Gi")


def stage_command(stage: Stage) -> list[str]:
    """The CLI invocation a stage container runs (index and spec come from the environment)."""
    return ["dynamics", "stage", stage.value]


def _pod_failure_policy(container_name: str, indexed: bool) -> Obj:
    rules: list[Obj] = [
        # Node drains and preemptions are not the stage's fault: don't count them as failures.
        # `status` is required by the schemas of Kubernetes 1.29-1.34 (kubernetes/kubernetes#131512).
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {"action": "FailIndex" if indexed else "FailJob",
         "onExitCodes": {"containerName": container_name, "operator": "In",
                         "values": [USER_ERROR_EXIT_CODE]}},
    ]
    return {"rules": rules}


def _job(spec: RunSpec, *, name: str, component: str, image: str, command: list[str], res: Obj,
         completions: int = 1, parallelism: int = 1, indexed: bool = False,
         service_account: str | None = None, shm: str | None = None, scratch: str | None = None) -> Obj:
    vols, mounts = volumes(spec, shm, scratch=scratch)
    ctr = container(spec, name=component, image=image, command=command, res=res, mounts=mounts)
    if component in C.PIPELINE:
        pin_fingerprint(spec, ctr, Stage(component))
    template = {
        "metadata": pod_metadata(spec, component),
        "spec": pod_spec(spec, [ctr], vols, restart_policy="Never", service_account=service_account),
    }
    job_spec: Obj = {
        "completions": completions,
        "parallelism": min(parallelism, completions),
        "podFailurePolicy": _pod_failure_policy(component, indexed),
        "template": template,
    }
    if indexed:
        job_spec["completionMode"] = "Indexed"
        job_spec["backoffLimitPerIndex"] = spec.kubernetes.backoff_limit_per_index
        job_spec["maxFailedIndexes"] = min(spec.kubernetes.max_failed_indexes, completions)
    else:
        job_spec["backoffLimit"] = spec.kubernetes.backoff_limit
    if spec.kubernetes.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.kubernetes.ttl_seconds_after_finished
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(spec, name, component, workload=True),
        "spec": job_spec,
    }


def _scratch(spec: RunSpec) -> str:
    return spec.kubernetes.ephemeral_storage


def controller_job(spec: RunSpec) -> Obj:
    """The controller Job: drives the stages; retried by the Job controller if its pod dies."""
    command = ["dynamics", "controller", "--run", spec.name]
    job = _job(spec, name=names.controller_job(spec.name), component=C.COMPONENT_CONTROLLER,
               image=spec.images.controller, command=command,
               res=resources(CONTROLLER_RESOURCES, ephemeral=CONTROLLER_EPHEMERAL_STORAGE),
               service_account=spec.kubernetes.service_account, scratch=CONTROLLER_EPHEMERAL_STORAGE)
    # The controller waits for the whole run; it must not be garbage-collected by a TTL mid-run,
    # and a restarted controller continues where the previous one stopped (level-triggered).
    job["spec"]["backoffLimit"] = 10
    # The controller is not a batch workload: Kueue's queue label would make it wait for (and use)
    # the team's GPU quota.
    job["metadata"]["labels"].pop(C.LABEL_KUEUE_QUEUE, None)
    return job


def embed_job(spec: RunSpec) -> Obj:
    """Indexed Job: index i embeds shards [i*shardsPerPart, (i+1)*shardsPerPart)."""
    e = spec.embed
    return _job(spec, name=names.stage_job(spec.name, Stage.EMBED), component=Stage.EMBED.value,
                image=spec.images.embedder, command=stage_command(Stage.EMBED),
                res=resources(e.resources, e.gpus_per_pod, ephemeral=_scratch(spec)), completions=embed_parts(spec),
                parallelism=e.parallelism, indexed=True, shm="8Gi" if e.workers else None)


def cluster_fit_job(spec: RunSpec) -> Obj:
    """Single-pod Job: spherical k-means on a seeded subset, then refinement."""
    c = spec.cluster
    return _job(spec, name=names.stage_job(spec.name, Stage.CLUSTER_FIT), component=Stage.CLUSTER_FIT.value,
                image=spec.images.clusterer, command=stage_command(Stage.CLUSTER_FIT),
                res=resources(c.resources, c.gpus, ephemeral=_scratch(spec)))


def assign_job(spec: RunSpec) -> Obj:
    """Indexed Job: index i assigns embed part i to its nearest kept centroid (its own, small resources:
    one part's vectors and the kept centroids, not cluster-fit's k-means sample)."""
    c = spec.cluster
    return _job(spec, name=names.stage_job(spec.name, Stage.ASSIGN), component=Stage.ASSIGN.value,
                image=spec.images.clusterer, command=stage_command(Stage.ASSIGN),
                res=resources(c.assign_resources, c.assign_gpu_count, ephemeral=_scratch(spec)),
                completions=embed_parts(spec), parallelism=c.assign_parallelism, indexed=True)


def scale_job(spec: RunSpec) -> Obj:
    """Single-pod Job: cluster sizes -> probabilities, per-shard tables, report and plot."""
    return _job(spec, name=names.stage_job(spec.name, Stage.SCALE), component=Stage.SCALE.value,
                image=spec.images.clusterer, command=stage_command(Stage.SCALE),
                res=resources(SCALE_RESOURCES, ephemeral=_scratch(spec)))


def eval_job(spec: RunSpec) -> Obj:
    """Single-pod Job: zero-shot evaluation of the final checkpoint."""
    assert spec.eval is not None
    return _job(spec, name=names.stage_job(spec.name, Stage.EVAL), component=Stage.EVAL.value,
                image=spec.images.trainer, command=stage_command(Stage.EVAL),
                res=resources(Resources(cpu="8", memory="32Gi"), spec.eval.gpus, ephemeral=_scratch(spec)), shm="8Gi")
