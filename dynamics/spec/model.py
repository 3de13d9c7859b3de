"""The run spec: one YAML file describes a whole DynamiCS run.

Field names are camelCase in YAML (as in Kubernetes objects) and snake_case in Python. Every model
forbids unknown fields so that a typo is an error, never silently ignored.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from dynamics import constants as C
from dynamics.spec.checks import cross_check
from dynamics.spec.kube import EnvVar, Kubernetes, Placement, Toleration
from dynamics.spec.train import Augmentation, Optimizer, Phase, Train, WandB
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
    Resources,
    SampleMode,
    Whiten,
)
from dynamics.storage.pattern import count_pattern

# The whole spec in one namespace: callers import every section from here.
__all__ = ["DNS_LABEL", "MAX_NAME", "POD_SUFFIX", "QUANTITY", "Augmentation", "EmbedBackend", "EnvVar", "Kubernetes",
           "Launcher", "Model", "Optimizer", "Phase", "Placement", "Precision", "Quantity", "Resources", "RunSpec",
           "SampleMode", "Toleration", "Train", "WandB", "Whiten"]



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
        description="Hugging Face id or directory (local or s3://) for dinov2; for open_clip any name "
        "open_clip takes (NAME, NAME:TAG or NAME:CHECKPOINT, hf-hub:ORG/REPO, local-dir:DIR with DIR local or "
        "s3://) or run:RUN, the final model of the finished run RUN in this work directory (pinned to its "
        "train fingerprint as run:RUN@FP); ignored for pixels.",
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
                                           "default the faithful size: phase 1's resolution / sqrt(scale min x 3/4), "
                                           "rounded up to 16 px (no crop upsampled; 208 for 112 px at scale 0.4).")
    resources: Resources = Field(Resources(cpu="8", memory="32Gi"), description="CPU/memory of each embed pod.")


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
    resources: Resources = Field(Resources(cpu="16", memory="128Gi"),
                                 description="CPU/memory of the cluster-fit pod.")
    assign_resources: Resources = Field(Resources(cpu="4", memory="32Gi"), description="CPU/memory of each "
                                        "assign pod (a nearest-centroid lookup of one embed part: its vectors "
                                        "and the kept centroids fit in a few GiB).")
    assign_gpus: int | None = Field(None, ge=0, le=8, description="GPUs per assign pod (0 = CPU); default "
                                    "cluster.gpus.")

    @property
    def assign_gpu_count(self) -> int:
        """GPUs of each assign pod: its own setting, else cluster-fit's."""
        return self.gpus if self.assign_gpus is None else self.assign_gpus


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


class EvalDataset(Model):
    """A zero-shot classification set in webdataset form (image + class index)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", description="Name in reports and metrics.")
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

    datasets: list[EvalDataset] = Field(min_length=1, description="Zero-shot classification sets "
                                        "(clip_benchmark webdataset layout).")
    batch_size: int = Field(256, ge=1, description="Images per forward pass.")
    gpus: int = Field(1, ge=0, le=8, description="GPUs for the eval pod (0 = CPU).")


class RunSpec(Model):
    """A DynamiCS run: data, storage, stages, training recipe, and Kubernetes settings."""

    api_version: Literal["dynamics.io/v1alpha1"] = Field("dynamics.io/v1alpha1", description="Spec format version.")
    kind: Literal["DynamicsRun"] = Field("DynamicsRun", description="Always DynamicsRun.")
    name: str = Field(description="Run name: a DNS-1123 label; prefixes every object of the run.")
    namespace: str = Field("default", pattern=DNS_LABEL.pattern, max_length=MAX_NAME,
                           description="Namespace of every object of the run.")
    storage: Storage = Field(description="The run's work directory and S3 connection settings.")
    data: Data = Field(description="The training shards.")
    images: Images = Field(Images(), description="Container images of the stages.")
    embed: Embed = Field(Embed(), description="Image embedding (stage embed).")
    cluster: Cluster = Field(Cluster(), description="Spherical k-means, refinement and assignment.")
    sample: Sample = Field(Sample(), description="Cluster sizes -> per-sample probabilities (DynamiCS).")
    train: Train = Field(description="OpenCLIP training with per-epoch sampling.")
    eval: Eval | None = Field(None, description="Zero-shot evaluation of the final model (optional).")
    kubernetes: Kubernetes = Field(Kubernetes(), description="Scheduling, pod and workload settings.")

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
