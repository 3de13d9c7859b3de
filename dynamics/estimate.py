"""``dynamics estimate``: what a run will cost, from the spec and a few stated rates (pure arithmetic).

Every number is a closed-form function of the spec and the :class:`Rates` (each one a CLI flag), so a
reader can redo it by hand:

* per phase: steps, epochs and samples as the trainer plans them (:func:`plan_phases`);
* expected samples per epoch under the sampling plan: ``T = budget x N`` (the scale stage's report gives
  the exact expectation once cluster sizes are known; in ``cap`` mode it is at most ``T``);
* GPU time per sample at phase resolution ``r``: ``t(r) = t0 x ((1 - s) + s x tokens(r) / tokens(r0))``
  with ``t0 = 1 / rate`` at ``r0 = rate_resolution``, ``tokens(r) = (r / patch)^2`` and ``s`` the image
  tower's share of ``t0``: only the image tower grows with resolution (the text tower, the contrastive
  loss and the optimizer step do not). ``s`` is calibrated on the reference recipe's published total
  (:func:`calibrate_image_share`); throughput ``= 1 / t(r)``, GPU-hours ``= samples x t(r) / 3600``;
* loader cores per GPU ``= throughput / loader_rate`` (samples/s one CPU core decodes, per benchmark);
* S3 bytes read ``= samples / budget x bytes_per_sample`` (the loader reads ~``1 / budget`` samples per
  sample it keeps);
* phases that read the reduced shard copies (``embed.reducedShards``: the leading phases below the
  short side) use ``reduced_bytes_per_sample`` and ``loader_rate x reduced_loader_speedup``;
* with ``train.decode: device`` the GPU decodes, and the loader rate is multiplied by ``device_decode_speedup``;
* checkpoints: every ``checkpointEvery`` steps plus each phase's final one, ``params x 12`` bytes each
  (fp32 weights + AdamW's two moments);
* embed: ``N`` images at ``embed_rate`` images/s per GPU; k-means and assignment as float32 GEMM
  multiply-adds (``2 n k d`` FLOPs per pass) at ``gemm_tflops``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the spec's models load when estimating, not for `dynamics estimate --help`
    from dynamics.spec.model import RunSpec

# The reference recipe (examples/datacomp-dfn-vitb16.yaml, the method's published setup): ViT-B/16 trained on
# 1.28B samples at 112 px then 128M at 224 px in 163 GPU-hours on H100s, at 2,600 samples/s/GPU at 112 px.
REFERENCE_GPU_HOURS = 163.0
REFERENCE_RATE = 2600.0
REFERENCE_PHASES = ((112, 1_280_000_000), (224, 128_000_000))


def calibrate_image_share(rate: float, phases: Sequence[tuple[int, int]], gpu_hours: float) -> float:
    """Image tower share ``s`` of the per-sample time at ``phases[0]``'s resolution that makes ``phases``
    (``(resolution, samples)`` at ``rate`` samples/s/GPU at the first resolution) take ``gpu_hours``.

    Total seconds ``= t0 x sum(n_i x ((1 - s) + s x q_i))`` with ``q_i = (r_i / r_0)^2``, linear in ``s``.
    """
    r0 = phases[0][0]
    t0 = 1.0 / rate
    fixed = sum(n for _, n in phases) * t0  # every sample at the first resolution's cost
    grown = sum(n * ((r / r0) ** 2 - 1.0) for r, n in phases) * t0  # extra per unit of s
    if grown == 0:
        raise ValueError("the phases need two resolutions to calibrate the image tower's share")
    return (gpu_hours * 3600.0 - fixed) / grown


REFERENCE_IMAGE_SHARE = calibrate_image_share(REFERENCE_RATE, REFERENCE_PHASES, REFERENCE_GPU_HOURS)


def patch_size(model: str) -> int | None:
    """Patch size of an open_clip ViT name (``ViT-B-16`` -> 16, ``ViT-B-32-quickgelu`` -> 32), else None."""
    m = re.match(r"^ViT-[A-Za-z0-9]+-(\d+)(?:-|$)", model)
    return int(m.group(1)) if m else None

CHECKPOINT_BYTES_PER_PARAM = 12  # fp32 weights (4) + AdamW exp_avg (4) + exp_avg_sq (4)
EMBED_STORED_BYTES = 2  # vectors are stored as float16
DINOV2_DIMS = {"small": 384, "base": 768, "large": 1024, "giant": 1536}


@dataclass(frozen=True)
class Rates:
    """The measured or assumed rates the estimate scales (all CLI flags; defaults stated in --help)."""

    gpu_samples_per_s: float = REFERENCE_RATE  # the reference recipe, ViT-B/16 at 112 px on one H100
    rate_resolution: int = 112
    image_share: float = REFERENCE_IMAGE_SHARE  # calibrated: the reference's 163 GPU-hours
    loader_samples_per_core_s: float = 737.0  # benchmarks/README.md, 112 px crops of 384-class (DataComp-like) JPEGs
    bytes_per_sample: float = 40_000.0  # one JPEG + caption of a DataComp-style shard
    embed_images_per_gpu_s: float = 2000.0
    gemm_tflops: float = 40.0
    # benchmarks/README.md: copies at the faithful 208 px short side of 384-class images, .bpe member included
    reduced_bytes_per_sample: float = 12_600.0
    reduced_loader_speedup: float = 1.93  # benchmarks/README.md: 1,422 vs 737 samples/s per core (384-class)
    device_decode_speedup: float = 5.0  # benchmarks/README.md: train.decode device, worker side, 7,066 vs 1,422/s

    def gpu_rate(self, resolution: int) -> float:
        """Training samples/s per GPU at ``resolution``: only the image tower scales, with its tokens."""
        grow = (resolution / self.rate_resolution) ** 2  # tokens(r) / tokens(r0), (r / patch)^2 each
        return self.gpu_samples_per_s / ((1.0 - self.image_share) + self.image_share * grow)


# Each rate: its flag and where its default comes from (printed beside the value).
RATE_SOURCES: dict[str, tuple[str, str]] = {
    "gpu_samples_per_s": ("--samples-per-gpu", "the reference recipe, ViT-B/16 bf16 on one H100"),
    "rate_resolution": ("--rate-resolution", "the reference recipe's phase 1"),
    "image_share": ("--image-share", f"calibrated so the reference recipe's phases (1.28B samples at 112 px, "
                    f"128M at 224 px) take its published {REFERENCE_GPU_HOURS:g} GPU-hours"),
    "loader_samples_per_core_s": ("--loader-rate", "benchmarks/README.md, 112 px crops of 384-class "
                                  "(DataComp-like) JPEGs, originals"),
    "bytes_per_sample": ("--bytes-per-sample", "one JPEG + caption of a DataComp-style shard, an assumption"),
    "embed_images_per_gpu_s": ("--embed-rate", "an assumption, not yet measured on a GPU"),
    "gemm_tflops": ("--gemm-tflops", "float32 GEMM on an H100, an assumption"),
    "reduced_bytes_per_sample": ("--reduced-bytes-per-sample",
                                 "benchmarks/README.md, faithful 208 px copies + their .bpe member"),
    "reduced_loader_speedup": ("--reduced-loader-speedup", "benchmarks/README.md, copies vs originals per core, "
                               "384-class images"),
    "device_decode_speedup": ("--device-decode-speedup", "benchmarks/README.md, worker side vs copies on the CPU"),
}


@dataclass(frozen=True)
class PhaseCost:
    """One phase's cost on the spec's hardware."""

    name: str
    resolution: int
    global_batch: int
    steps: int
    epochs: int
    samples: int
    samples_per_gpu_s: float
    gpu_hours: float
    wall_hours: float
    loader_cores_per_gpu: float
    s3_bytes: float
    checkpoints: int
    samples_per_epoch: int = 0  # one training epoch (train.phases[].samplesPerEpoch, rounded up to whole steps)
    reduced: bool = False


@dataclass(frozen=True)
class Estimate:
    """The whole run's estimate."""

    world_size: int
    expected_per_epoch: float
    phases: list[PhaseCost]
    params: int | None
    checkpoint_bytes: int | None
    embed_gpu_hours: float
    embed_wall_hours: float
    embed_bytes: int | None
    kmeans_flops: float
    assign_flops: float
    cluster_gpu_hours: float
    notes: list[str] = field(default_factory=list)

    @property
    def checkpoints(self) -> int:
        """Checkpoints written over the run."""
        return sum(p.checkpoints for p in self.phases)


def embed_dim(spec: RunSpec) -> int | None:
    """Stored embedding width for the spec's embed backend, where it is known without loading it."""
    from dynamics.spec.types import EmbedBackend

    e = spec.embed
    if e.backend is EmbedBackend.PIXELS:
        return 3 * e.pixels_size**2
    if e.backend is EmbedBackend.DINOV2:
        return next((d for size, d in DINOV2_DIMS.items() if e.model.endswith(f"-{size}")), None)
    return None


def phase_checkpoints(steps: int, every: int) -> int:
    """Checkpoints one phase writes: one every ``every`` steps, plus its final one (never twice)."""
    return steps // every + (0 if steps % every == 0 else 1)


def estimate(spec: RunSpec, rates: Rates, params: Sequence[int] | None = None) -> Estimate:
    """Cost of ``spec``; ``params``: parameter count per phase (the model at that phase's resolution)."""
    from dynamics.spec.reduced import reads_copies
    from dynamics.stages.train.plan import plan_phases

    world = spec.train.nodes * spec.train.procs
    gpus = spec.train.nodes * spec.train.gpus_per_node
    n = spec.data.approx_samples
    budget = spec.sample.budget
    phases: list[PhaseCost] = []
    for plan in plan_phases(spec, world):
        per_gpu = rates.gpu_rate(plan.resolution)
        gpu_hours = plan.samples / per_gpu / 3600
        # Only the leading phases the copies serve without upsampling a crop read them (as the trainer does).
        reduced = reads_copies(spec, plan.resolution) and all(p.reduced for p in phases)
        loader_rate = rates.loader_samples_per_core_s * (rates.reduced_loader_speedup if reduced else 1.0)
        if spec.train.decode == "device":
            loader_rate *= rates.device_decode_speedup
        sample_bytes = rates.reduced_bytes_per_sample if reduced else rates.bytes_per_sample
        phases.append(PhaseCost(
            name=plan.name, resolution=plan.resolution, global_batch=plan.global_batch, steps=plan.steps,
            epochs=plan.epochs, samples=plan.samples, samples_per_gpu_s=per_gpu, gpu_hours=gpu_hours,
            wall_hours=gpu_hours / max(gpus, 1), loader_cores_per_gpu=per_gpu / loader_rate,
            s3_bytes=plan.samples / budget * sample_bytes,
            checkpoints=phase_checkpoints(plan.steps, spec.train.checkpoint_every), reduced=reduced,
            samples_per_epoch=plan.steps_per_epoch * plan.global_batch,
        ))
    largest = max(params) if params else None
    dim = embed_dim(spec)
    c = spec.cluster
    fit_n = min(c.train_samples, c.k * c.max_points_per_centroid, n)
    kmeans_flops = 2.0 * fit_n * c.k * (dim or 0) * c.iterations
    assign_flops = 2.0 * n * c.k * (dim or 0)
    embed_gpus = spec.embed.parallelism * max(spec.embed.gpus_per_pod, 1)
    notes = [f"the samples one pass keeps is the target T = budget x N = {budget} x {n:,}; the scale "
             "stage's report has the exact expectation once clusters are known"]
    if gpus == 0:
        notes.append("train.gpusPerNode is 0 (CPU): GPU-hours are what the same work takes on GPUs")
    if dim is None:
        notes.append("embedding width unknown for this backend without loading it: cluster costs left out")
    starved = loader_note(spec, phases) if gpus else None
    if starved:
        notes.append(starved)
    return Estimate(
        world_size=world, expected_per_epoch=budget * n, phases=phases, params=largest,
        checkpoint_bytes=None if largest is None else largest * CHECKPOINT_BYTES_PER_PARAM,
        embed_gpu_hours=n / rates.embed_images_per_gpu_s / 3600,
        embed_wall_hours=n / rates.embed_images_per_gpu_s / 3600 / embed_gpus,
        embed_bytes=None if dim is None else n * dim * EMBED_STORED_BYTES,
        kmeans_flops=kmeans_flops, assign_flops=assign_flops,
        cluster_gpu_hours=(kmeans_flops + assign_flops) / (rates.gemm_tflops * 1e12) / 3600, notes=notes,
    )


def _cpus(quantity: str) -> float:
    """CPUs of a Kubernetes CPU quantity ('48', '500m', '2e1', '1k': every form the spec's pattern admits)."""
    from kubernetes.utils import parse_quantity  # the client's parser; imported only when estimating

    return float(parse_quantity(quantity))


def loader_note(spec: RunSpec, phases: Sequence[PhaseCost]) -> str | None:
    """A warning when a phase needs more loader cores per GPU than the spec gives each GPU's process."""
    t = spec.train
    worst = max(phases, key=lambda p: p.loader_cores_per_gpu)
    need = math.ceil(worst.loader_cores_per_gpu)
    cpus_per_gpu = _cpus(t.resources.cpu) / max(t.gpus_per_node, 1)
    have = min(t.workers, math.floor(cpus_per_gpu))
    if need <= have:
        return None
    fixes = [f"raise train.workers (now {t.workers}) and train.resources.cpu (now {t.resources.cpu} for "
             f"{t.gpus_per_node} GPUs)"]
    if not spec.embed.reduced_shards:
        fixes.append("turn on embed.reducedShards (phase 1 reads small copies)")
    if t.decode != "device":
        fixes.append("set train.decode: device (the GPU decodes JPEGs)")
    return (f"phase {worst.name} needs ~{need} loader cores per GPU at these rates but each GPU's process has "
            f"{have} (min of train.workers and CPUs per GPU): the GPUs would wait for data; "
            + "; or ".join(fixes))


def _bytes(n: float | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{n:,.0f} B"
        n /= 1000
    raise AssertionError("unreachable")


def format_rates(rates: Rates) -> list[str]:
    """One line per rate: its value, its flag, and where it comes from (or that it was given)."""
    d = Rates()
    units = {"gpu_samples_per_s": "samples/s per GPU", "rate_resolution": "px", "image_share": "of t0 in the "
             "image tower", "loader_samples_per_core_s": "samples/s per loader core", "bytes_per_sample": "",
             "embed_images_per_gpu_s": "images/s per GPU (embed)", "gemm_tflops": "TFLOPS",
             "reduced_bytes_per_sample": "per sample of the reduced copies",
             "reduced_loader_speedup": "x loader rate on reduced copies",
             "device_decode_speedup": "x loader rate with train.decode: device"}
    lines = ["rates (each a flag of `dynamics estimate`):"]
    for name, (flag, source) in RATE_SOURCES.items():
        value = getattr(rates, name)
        shown = _bytes(value) if "bytes" in name else f"{value:,.3f}" if name == "image_share" else f"{value:,.4g}"
        origin = source if value == getattr(d, name) else "given"
        lines.append(f"  {flag} {shown} {units[name]}".rstrip() + f" ({origin})")
    return lines


def format_estimate(spec: RunSpec, est: Estimate, rates: Rates) -> str:
    """The estimate as the text ``dynamics estimate`` prints."""
    t = spec.train
    patch = patch_size(t.model)
    lines = [f"run {spec.name}: {t.nodes} node(s) x {t.procs} process(es) = world size {est.world_size}; "
             f"N = {spec.data.approx_samples:,} samples",
             f"sampler: one pass over the data keeps ~{est.expected_per_epoch:,.0f} samples "
             f"(T = budget {spec.sample.budget} x N); every training epoch is a fresh DynamiCS draw",
             *format_rates(rates)]
    for p in est.phases:
        tokens = "" if patch is None else f", {(p.resolution // patch) ** 2} image tokens"
        lines.append(
            f"phase {p.name} ({p.resolution} px{tokens}): {p.steps:,} steps x {p.global_batch:,} = "
            f"{p.samples:,} samples; {p.samples_per_gpu_s:,.0f} samples/s/GPU -> {p.gpu_hours:,.1f} GPU-hours "
            f"({p.wall_hours:,.1f} h wall); {'reduced shard copies; ' if p.reduced else ''}"
            f"loader cores per GPU {math.ceil(p.loader_cores_per_gpu)} "
            f"({p.loader_cores_per_gpu:.1f}); S3 read {_bytes(p.s3_bytes)}; {p.checkpoints} checkpoint(s)")
        lines.append(f"  phase {p.name} training epochs: {p.epochs} of {p.samples_per_epoch:,} samples "
                     "(train.phases[].samplesPerEpoch, whole steps; the last may be shorter)")
    total = sum(p.gpu_hours for p in est.phases)
    params = "unknown" if est.params is None else f"{est.params:,}"
    all_kept = None if est.checkpoint_bytes is None else est.checkpoint_bytes * est.checkpoints
    lines += [
        f"train total: {total:,.1f} GPU-hours, {sum(p.wall_hours for p in est.phases):,.1f} h wall, "
        f"S3 read {_bytes(sum(p.s3_bytes for p in est.phases))}",
        f"checkpoints: {est.checkpoints} x {_bytes(est.checkpoint_bytes)} ({params} parameters x "
        f"{CHECKPOINT_BYTES_PER_PARAM} B) = {_bytes(all_kept)} if all are kept",
        f"embed: {est.embed_gpu_hours:,.1f} GPU-hours ({est.embed_wall_hours:,.1f} h wall on "
        f"{spec.embed.parallelism} pod(s)), embeddings {_bytes(est.embed_bytes)}",
        f"cluster: k-means {est.kmeans_flops:.3g} FLOPs + assignment {est.assign_flops:.3g} FLOPs = "
        f"{est.cluster_gpu_hours:,.2f} GPU-hours",
    ]
    return "\n".join(lines + [f"note: {n}" for n in est.notes])
