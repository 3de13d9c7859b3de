"""The run spec: one YAML file describes a whole DynamiCS run.

Field names are camelCase in YAML (as in Kubernetes objects) and snake_case in Python. Every model
forbids unknown fields so that a typo is an error, never silently ignored.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from dynamics import constants as C
from dynamics.spec import registry
from dynamics.spec.checks import cross_check
from dynamics.spec.types import (
    DNS_LABEL,
    MAX_NAME,
    POD_SUFFIX,
    QUANTITY,
    EmbedBackend,
    Launcher,
    Model,
    Precision,
    Quantity,
    SampleMode,
    Whiten,
)
from dynamics.storage.pattern import count_pattern

__all__ = ["DNS_LABEL", "MAX_NAME", "POD_SUFFIX", "QUANTITY", "EmbedBackend", "Launcher", "Model", "Precision",
           "Quantity", "RunSpec", "SampleMode", "Whiten"]



class Resources(Model):
    """CPU/memory requests for a stage's pods (GPUs are set by the stage's own gpu fields)."""

    cpu: Quantity = Field("4", description="CPU request and limit, e.g. '8' or '500m'.")
    memory: Quantity = Field("16Gi", description="Memory request and limit, e.g. '64Gi'.")


class Storage(Model):
    """Where the run's artifacts go and how to reach S3."""

    workdir: str = Field(description="Work directory: 's3://bucket/prefix' or a local path (for --local).")
    endpoint: str | None = Field(None, description="S3 endpoint override (MinIO, Ceph, R2); default AWS.")
    region: str | None = Field(None, description="S3 region, e.g. 'us-east-1'.")
    credentials_secret: str | None = Field(
        None,
        description="Name of an existing Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY. "
        "Leave empty to use the service account's role (IRSA) or node credentials.",
    )
    retry_mode: Literal["standard", "adaptive"] = Field("standard", description="boto3 retry mode.")
    max_attempts: int = Field(8, ge=1, le=20, description="boto3 retry attempts per request.")

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, v: str) -> str:
        if v.startswith(("s3a://", "gs://", "http://", "https://")):
            raise ValueError("only 's3://bucket/prefix' or a local path is supported")
        if v.startswith("s3://") and len(v) <= len("s3://"):
            raise ValueError("name a bucket: 's3://bucket/prefix'")
        return v.rstrip("/")

    @field_validator("credentials_secret")
    @classmethod
    def _secret(cls, v: str | None) -> str | None:
        if v is not None and not DNS_LABEL.match(v) and not re.match(r"^[a-z0-9.-]+$", v):
            raise ValueError("must be the name of a Secret (lower-case letters, digits, '-', '.')")
        return v


class Data(Model):
    """The training data: webdataset shards."""

    shards: str = Field(
        description="Webdataset shard pattern with brace ranges, "
        "e.g. 's3://bucket/dfn/{00000000..00020068}.tar'."
    )
    approx_samples: int = Field(gt=0, description="Approximate number of image-text pairs (for planning).")
    max_corrupt_fraction: float | None = Field(
        default=None, ge=0, le=1,
        description="Fail the embed stage when more than this fraction of a part's samples (and "
        "unreadable shards) is corrupt or skipped; unset: never fail, only report.")

    @field_validator("shards")
    @classmethod
    def _shards(cls, v: str) -> str:
        count_pattern(v)  # raises ValueError with a readable message
        return v


class Images(Model):
    """Container images per stage (full references, pinned by tag)."""

    embedder: str = Field(f"{C.DEFAULT_IMAGE_REGISTRY}/dynamics-embedder:{C.DEFAULT_IMAGE_TAG}",
                          description="Image of the embed pods.")
    clusterer: str = Field(f"{C.DEFAULT_IMAGE_REGISTRY}/dynamics-clusterer:{C.DEFAULT_IMAGE_TAG}",
                           description="Image of the cluster-fit, assign and scale pods.")
    trainer: str = Field(f"{C.DEFAULT_IMAGE_REGISTRY}/dynamics-trainer:{C.DEFAULT_IMAGE_TAG}",
                         description="Image of the train and eval pods.")
    controller: str = Field(f"{C.DEFAULT_IMAGE_REGISTRY}/dynamics-controller:{C.DEFAULT_IMAGE_TAG}",
                            description="Image of the controller Job.")
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field("IfNotPresent", description="imagePullPolicy.")


class Embed(Model):
    """The embed stage: one Indexed-Job pod per group of shards."""

    backend: EmbedBackend = Field(EmbedBackend.DINOV2, description="dinov2 | open_clip | pixels (tests).")
    model: str = Field(
        "facebook/dinov2-base",
        description="Hugging Face id or directory (local or s3://) for dinov2; open_clip model name for "
        "open_clip; ignored for pixels.",
    )
    pixels_size: int = Field(16, ge=2, le=64, description="pixels backend: side of the downscaled image.")
    batch_size: int = Field(256, ge=1, description="Images per forward pass.")
    shards_per_part: int = Field(64, ge=1, description="Shards per Indexed-Job index (= one output part).")
    parallelism: int = Field(8, ge=1, description="Embed pods running at once.")
    gpus_per_pod: int = Field(1, ge=0, le=8, description="GPUs per embed pod (0 = CPU).")
    workers: int = Field(8, ge=0, description="DataLoader workers per pod.")
    reduced_shards: bool = Field(False, description="Also write a reduced-resolution copy of every shard (same "
                                 "keys and captions) that training phases below its short side read.")
    reduced_short_side: int | None = Field(None, ge=32, le=1024, description="Short side of the reduced copies; "
                                           "default the next multiple of 32 above phase 1's resolution.")
    resources: Resources = Resources(cpu="8", memory="32Gi")


class Cluster(Model):
    """Spherical k-means fit, refinement, and assignment."""

    k: int = Field(50_000, ge=2, description="Number of k-means centroids before refinement.")
    iterations: int = Field(10, ge=1, description="k-means iterations.")
    train_samples: int = Field(
        12_800_000, ge=2, description="Embeddings drawn (seeded) across all parts to fit k-means."
    )
    max_points_per_centroid: int = Field(256, ge=1, description="FAISS cap on training points per centroid.")
    threshold: float = Field(0.70, gt=0, le=1, description="Refinement: drop a centroid whose cosine "
                             "similarity to an already kept one is >= threshold.")
    seed: int = Field(42, description="Seed of the training subset and of k-means.")
    whiten: Whiten = Field(Whiten.NONE, description="none: cluster the embeddings as they are (the method's, "
                           "for DINOv2); pca: centre and PCA-whiten them first, fitted on the k-means sample "
                           "(for cheap embeddings such as pixels, whose raw cosine is high for any pair).")
    whiten_dim: int = Field(32, ge=1, le=4096, description="whiten=pca: principal axes kept.")
    gpus: int = Field(1, ge=0, le=8, description="GPUs for the cluster-fit pod (0 = CPU faiss).")
    assign_parallelism: int = Field(8, ge=1, description="Assign pods running at once.")
    resources: Resources = Resources(cpu="16", memory="128Gi")


class Sample(Model):
    """Per-cluster sampling probabilities: p_c = T_c / n_c, flattening large clusters (alpha < 1)."""

    alpha: float = Field(0.2, ge=0, le=1, description="1 = uniform random sampling, 0 = flat balancing.")
    budget: float = Field(0.5, gt=0, le=1, description="Fraction of the data used per epoch (T = budget * N).")
    mode: SampleMode = Field(SampleMode.CAP, description="cap: p>=1 is used once (reference); repeat: "
                             "floor(p) copies + Bernoulli(frac(p)).")
    unknown_prob: float = Field(0.5, ge=0, le=1, description="Probability for samples missing from the "
                                "tables (the reference uses 0.5 silently; we count them).")
    decimals: int = Field(6, ge=1, le=12, description="p_c is rounded to this many decimals (reference: 6).")
    seed: int = Field(42, description="Seed of the per-epoch sample draws (same subset on any machine).")
    class_report: bool = Field(False, description="When the shards carry .cls labels: read them once more in "
                               "the scale step and report each class's share of the data vs of an expected "
                               "epoch, head/tail thirds and cluster purity (one extra pass over the data).")


class Phase(Model):
    """One training phase (e.g. 112 px then 224 px)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=20, description="Phase name (in checkpoint names).")
    resolution: int = Field(ge=16, le=1024, description="Image size (open_clip force_image_size).")
    samples: int = Field(gt=0, description="Samples seen in this phase.")
    samples_per_epoch: int | None = Field(
        None, gt=0, description="Samples per epoch; default budget * data.approxSamples."
    )
    batch_per_gpu: int = Field(ge=1, description="Batch size per process (GPU).")
    lr: float = Field(gt=0, description="Peak learning rate (cosine decay after warm-up).")
    warmup: int = Field(0, ge=0, description="Warm-up steps.")


class Optimizer(Model):
    """AdamW settings (recipe: betas (0.9, 0.95), eps 1e-6, weight decay 0.2)."""

    name: Literal["adamw"] = "adamw"
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    eps: float = Field(1e-6, gt=0)
    weight_decay: float = Field(0.2, ge=0)


class Augmentation(Model):
    """Training image augmentation."""

    scale: tuple[float, float] = Field((0.4, 1.0), description="RandomResizedCrop scale range.")

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1] <= 1:
            raise ValueError("need 0 < min <= max <= 1")
        return v


class WandB(Model):
    """Weights & Biases reporting beside TensorBoard (rank 0; ``WANDB_MODE=offline`` needs no network)."""

    project: str = Field(description="W&B project.")
    entity: str | None = Field(None, description="W&B entity (team or user); default the account's.")
    mode: Literal["online", "offline"] = Field(
        "offline", description="offline: write the run under <run>/train/wandb/ for a later 'wandb sync' (no "
        "network, no key); online: stream to W&B (the trainer pod needs WANDB_API_KEY).")


class Train(Model):
    """OpenCLIP DDP training with per-epoch DynamiCS sampling."""

    model: str = Field("ViT-B-16", description="open_clip model name (`ViT-L/14` is read as `ViT-L-14`).")
    model_config_: dict[str, Any] | None = Field(
        None, alias="modelConfig", description="Inline open_clip model config (overrides model)."
    )
    context_length: int = Field(32, ge=4, le=77)
    pretrained: str | None = Field(None, description="Starting checkpoint (path or s3://); default random.")
    nodes: int = Field(2, ge=1)
    gpus_per_node: int = Field(4, ge=0, le=16, description="GPUs (= processes) per node; 0 = CPU.")
    procs_per_node: int | None = Field(None, ge=1, description="Processes per node when gpusPerNode is 0.")
    workers: int = Field(6, ge=0, description="Data-loader workers per process.")
    precision: Precision = Precision.AMP_BF16
    launcher: Launcher = Launcher.PYTORCHJOB
    phases: list[Phase] = Field(min_length=1)
    optimizer: Optimizer = Optimizer()
    augmentation: Augmentation = Augmentation()
    grad_clip_norm: float | None = Field(None, gt=0)
    shuffle_buffer: int = Field(5000, ge=0)
    local_loss: bool = True
    gather_with_grad: bool = True
    checkpoint_every: int = Field(1000, ge=1, description="Checkpoint interval in steps.")
    log_every: int = Field(50, ge=1, description="Log a progress line every N steps.")
    seed: int = 42
    # open_clip_train parity (#16): every option is off / the recipe's behaviour by default.
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="ddp: replicate the model (recipe); fsdp: shard parameters, gradients and optimizer "
        "state with FSDP2 fully_shard (ViT-L/14 and larger); checkpoints are then sharded.")
    grad_checkpointing: bool = Field(False, description="Recompute activations in the backward pass.")
    accum_freq: int = Field(1, ge=1, description="Split each per-process batch into this many micro-batches "
                            "(open_clip's feature-cache accumulation: same gradients, less activation memory).")
    compile: bool = Field(False, description="torch.compile the model.")
    loss: Literal["clip", "siglip"] = Field("clip", description="clip: InfoNCE (recipe); siglip: sigmoid loss.")
    keep_last: int = Field(2, ge=0, description="Mid-phase checkpoints kept besides each phase's final one.")
    resume_from: str | None = Field(
        None, description="'latest' (default): the run's newest checkpoint; or a checkpoint (path or s3://) "
        "to start from while the run has none of its own.")
    eval_every: int | None = Field(None, ge=1, description="Zero-shot eval on the spec's eval sets every N "
                                   "steps of each phase (needs an eval section); logged as eval/* metrics.")
    wandb: WandB | None = Field(None, description="Also report to Weights & Biases (needs the wandb extra).")
    resources: Resources = Resources(cpu="48", memory="512Gi")
    shm_size: Quantity = Field("64Gi", description="Size of the /dev/shm memory volume.")
    host_network: bool = False
    extra_resources: dict[str, int] = Field(
        default_factory=dict, description="Extra per-pod resources, e.g. {'rdma/ib': 1}."
    )

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        return registry.normalise(v)

    @field_validator("model_config_")
    @classmethod
    def _model_config(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is None:
            return v
        for key in ("vision_cfg", "text_cfg"):
            if not isinstance(v.get(key), dict):
                raise ValueError(f"an open_clip model config needs a '{key}' mapping")
        if not isinstance(v.get("embed_dim"), int) or isinstance(v.get("embed_dim"), bool):
            raise ValueError("an open_clip model config needs an integer 'embed_dim'")
        return v

    @field_validator("phases")
    @classmethod
    def _unique_phase_names(cls, v: list[Phase]) -> list[Phase]:
        names = [p.name for p in v]
        if len(set(names)) != len(names):
            raise ValueError(f"phase names must be unique, got {names}")
        return v

    @property
    def procs(self) -> int:
        """Processes per node (GPUs, or procsPerNode on CPU)."""
        return self.gpus_per_node or self.procs_per_node or 1

    def patch_size(self) -> int | None:
        """The vision tower's patch size, from the inline config or the model name."""
        if self.model_config_ is not None:
            vision = self.model_config_.get("vision_cfg", {})
            size = vision.get("patch_size")
            return int(size) if isinstance(size, int) else None
        known = registry.model_config(self.model)
        if known is not None:  # the real config: names do not always spell the patch size
            size = known.get("vision_cfg", {}).get("patch_size")
            return int(size) if isinstance(size, int) else None
        if registry.model_names() is not None:
            return None  # an unknown model is reported by the cross checks, not as a patch-size problem
        match = re.match(r"^ViT-[A-Za-z]+-(\d+)", self.model)
        return int(match.group(1)) if match else None


class EvalDataset(Model):
    """A zero-shot classification set in webdataset form (image + class index)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    shards: str = Field(description="Shard pattern of the eval set (image + '.cls').")
    classnames: str | list[str] = Field(
        description="'imagenet' (open_clip's), a file (local or s3://, one name per line), or a list."
    )
    templates: str | list[str] = Field(
        "openai", description="'openai' / 'simple' (open_clip's ImageNet templates) or a list with '{c}'."
    )
    class_counts: str | None = Field(
        None, description="JSON file (local or s3://) with the training-set count of each class: a list, or "
        "an object with 'class_counts' (or 'train.class_counts', as demo-data writes). Enables head/tail accuracy.",
    )

    @field_validator("templates")
    @classmethod
    def _templates(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, str) and v not in ("openai", "simple"):
            raise ValueError("use 'openai', 'simple', or a list of templates containing '{c}'")
        if isinstance(v, list) and (not v or any("{c}" not in t for t in v)):
            raise ValueError("every template must contain '{c}' where the class name goes")
        return v

    @field_validator("shards")
    @classmethod
    def _shards(cls, v: str) -> str:
        count_pattern(v)
        return v


class Eval(Model):
    """Zero-shot evaluation after training."""

    datasets: list[EvalDataset] = Field(min_length=1)
    batch_size: int = Field(256, ge=1, description="Images per forward pass.")
    gpus: int = Field(1, ge=0, le=8, description="GPUs for the eval pod (0 = CPU).")


class Toleration(Model):
    """A pod toleration (Kubernetes fields)."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class EnvVar(Model):
    """A literal environment variable (never put secrets here: use storage.credentialsSecret)."""

    name: str = Field(pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    value: str


MIN_TTL_SECONDS = 300


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
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    affinity: dict[str, Any] | None = None
    priority_class_name: str | None = None
    queue_name: str | None = Field(None, description="Kueue LocalQueue name (adds the queue-name label).")
    image_pull_secrets: list[str] = Field(default_factory=list)
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
    backoff_limit: int = Field(3, ge=0, description="Retries for single-pod Jobs and the trainer.")
    run_as_user: int = Field(1000, ge=1)


class RunSpec(Model):
    """A DynamiCS run: data, storage, stages, training recipe, and Kubernetes settings."""

    api_version: Literal["dynamics.io/v1alpha1"] = "dynamics.io/v1alpha1"
    kind: Literal["DynamicsRun"] = "DynamicsRun"
    name: str = Field(description="Run name: a DNS-1123 label; prefixes every object of the run.")
    namespace: str = Field("default", pattern=DNS_LABEL.pattern, max_length=MAX_NAME,
                           description="Namespace of every object of the run.")
    storage: Storage
    data: Data
    images: Images = Images()
    embed: Embed = Embed()
    cluster: Cluster = Cluster()
    sample: Sample = Sample()
    train: Train
    eval: Eval | None = None
    kubernetes: Kubernetes = Kubernetes()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not DNS_LABEL.match(v):
            raise ValueError(
                "must be a DNS-1123 label: lower-case letters, digits and '-', starting and ending "
                "with a letter or digit"
            )
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> RunSpec:
        cross_check(self)
        return self

    @property
    def n_shards(self) -> int:
        """Number of shards the data pattern expands to."""
        return count_pattern(self.data.shards)

    def samples_per_epoch(self, phase: Phase) -> int:
        """Samples in one epoch of ``phase``: explicit, or budget x approximate dataset size."""
        if phase.samples_per_epoch is not None:
            return phase.samples_per_epoch
        return max(1, round(self.sample.budget * self.data.approx_samples))
