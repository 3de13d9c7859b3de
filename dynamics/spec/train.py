"""The ``train`` section of the run spec: model, phases, optimiser, augmentation, launch and reporting."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from dynamics.spec import registry
from dynamics.spec.types import Launcher, Model, Precision, Quantity, Resources


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

    name: Literal["adamw"] = Field("adamw", description="Optimiser (AdamW, as open_clip_train).")
    beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1.")
    beta2: float = Field(0.95, ge=0, lt=1, description="AdamW beta2 (0.95 in the recipe).")
    eps: float = Field(1e-6, gt=0, description="AdamW epsilon.")
    weight_decay: float = Field(0.2, ge=0, description="Decoupled weight decay (not on gains, biases, "
                                "logit scale).")


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
    context_length: int = Field(32, ge=4, le=77, description="Text tokens per caption (32 in the recipe).")
    pretrained: str | None = Field(None, description="Starting checkpoint (path or s3://); default random.")
    nodes: int = Field(2, ge=1, description="Trainer pods (one per node).")
    gpus_per_node: int = Field(4, ge=0, le=16, description="GPUs (= processes) per node; 0 = CPU.")
    procs_per_node: int | None = Field(None, ge=1, description="Processes per node when gpusPerNode is 0.")
    workers: int = Field(6, ge=0, description="Data-loader workers per process.")
    precision: Precision = Field(Precision.AMP_BF16, description="Numerical precision (open_clip's names).")
    launcher: Launcher = Field(Launcher.PYTORCHJOB, description="pytorchjob (Kubeflow training operator) or "
                                "indexed-job (no operator needed).")
    phases: list[Phase] = Field(min_length=1, description="Training phases in order (e.g. 112 px, then 224 "
                                "px from the first phase's weights).")
    optimizer: Optimizer = Field(Optimizer(), description="AdamW settings.")
    augmentation: Augmentation = Field(Augmentation(), description="RandomResizedCrop settings of training images.")
    grad_clip_norm: float | None = Field(None, gt=0, description="Clip gradients to this norm; null: no "
                                         "clipping (the recipe).")
    shuffle_buffer: int = Field(5000, ge=0, description="Samples each reader shuffles among.")
    local_loss: bool = Field(True, description="open_clip local loss (each rank's logits against all).")
    gather_with_grad: bool = Field(True, description="Gather features across ranks with gradients.")
    checkpoint_every: int = Field(1000, ge=1, description="Checkpoint interval in steps.")
    log_every: int = Field(50, ge=1, description="Log a progress line every N steps.")
    seed: int = Field(42, description="Seed of initialisation, shuffling and every RNG the trainer uses.")
    # open_clip_train parity (#16): every option is off / the recipe's behaviour by default.
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="ddp: replicate the model (recipe); fsdp: shard parameters, gradients and optimizer "
        "state with FSDP2 fully_shard (ViT-L/14 and larger); checkpoints are then sharded.")
    grad_checkpointing: bool = Field(False, description="Recompute activations in the backward pass.")
    accum_freq: int = Field(1, ge=1, description="Split each per-process batch into this many micro-batches "
                            "(open_clip's feature-cache accumulation: same gradients, less activation memory).")
    compile: bool = Field(False, description="torch.compile the model.")
    decode: Literal["loader", "device"] = Field(
        "loader", description="Where training JPEGs are decoded. loader: data-loader workers decode and crop on "
        "the CPU (the reference); device: workers only read tars and draw each crop box from the JPEG header, and "
        "the training device decodes, crops and resizes whole batches (nvJPEG on GPUs), for nodes short of CPU "
        "cores. Other image formats are always decoded by the workers.")
    loss: Literal["clip", "siglip"] = Field("clip", description="clip: InfoNCE (recipe); siglip: sigmoid loss.")
    keep_last: int = Field(2, ge=0, description="Mid-phase checkpoints kept besides each phase's final one.")
    resume_from: str | None = Field(
        None, description="'latest' (default): the run's newest checkpoint; or a checkpoint (path or s3://) "
        "to start from while the run has none of its own.")
    eval_every: int | None = Field(None, ge=1, description="Zero-shot eval on the spec's eval sets every N "
                                   "steps of each phase (needs an eval section); logged as eval/* metrics.")
    wandb: WandB | None = Field(None, description="Also report to Weights & Biases (needs the wandb extra).")
    resources: Resources = Field(Resources(cpu="48", memory="512Gi"), description="CPU/memory of each "
                                 "trainer pod (GPUs: gpusPerNode).")
    shm_size: Quantity = Field("64Gi", description="Size of the /dev/shm memory volume.")
    host_network: bool = Field(False, description="Host networking for NCCL over the host's interfaces; such "
                               "pods are refused in namespaces enforcing the baseline or restricted Pod Security "
                               "Standard.")
    extra_resources: dict[str, int] = Field(
        default_factory=dict, description="Extra per-pod resources of the trainer, e.g. {'rdma/ib': 1} for an RDMA "
        "device plugin's HCAs. InfiniBand/RoCE also needs a trainer image with rdma-core (the published one has "
        "none: refused with it) and a namespace allowing IPC_LOCK or unlimited memlock (not 'restricted')."
    )
    backoff_limit: int = Field(20, ge=0, description="Restarts of trainer pods (all pods counted together) before "
                               "the training workload fails; each restart resumes from the latest checkpoint. "
                               "Kubeflow's operator deletes every pod on reaching it, so keep it generous for "
                               "multi-day runs.")
    active_deadline_seconds: int | None = Field(None, ge=1, description="Fail training after this many seconds "
                                                "(a wall-clock budget); null: no limit.")
    spread_nodes: bool = Field(True, description="Prefer putting each trainer pod on its own node (pod "
                               "anti-affinity on the hostname) unless kubernetes.affinity sets podAntiAffinity.")
    gang_scheduler: str | None = Field(None, description="Gang scheduling: the scheduler that admits all trainer "
                                       "pods at once (e.g. 'volcano' or 'scheduler-plugins-scheduler'); sets the "
                                       "PyTorchJob's schedulingPolicy.minAvailable to train.nodes.")

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
