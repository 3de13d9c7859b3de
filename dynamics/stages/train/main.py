"""``dynamics stage train``: all phases of the run, resumable, under torchrun.

In the cluster the PyTorchJob's ``pytorch`` container runs::

    torchrun --no-python dynamics stage train --spec /etc/dynamics/spec.yaml

(torchrun reads ``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR`` and
``PET_MASTER_PORT`` from the training operator) and locally ``torchrun --nproc-per-node N
--no-python dynamics stage train --spec spec.yaml`` on CPU (gloo). Without torchrun it runs as a
single process. A finished run (its ``train.done`` marker exists) is a no-op; an interrupted one
resumes from its newest checkpoint.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from dynamics.constants import Stage
from dynamics.errors import DynamicsError
from dynamics.local.lifecycle import die_with_parent
from dynamics.spec import reduced
from dynamics.stages.common import context_from_args, setup_logging, stage_parser
from dynamics.stages.gpu import stage_device
from dynamics.stages.inputs import already_done, marker
from dynamics.stages.train import checkpoint as ckpt
from dynamics.stages.train.logs import ENV_KEYLOG, KeyLog, TensorBoard
from dynamics.stages.train.loop import Dist, PhaseTrainer, RunState
from dynamics.stages.train.model import create_model, load_pretrained, load_weights, open_clip_config
from dynamics.stages.train.plan import PhasePlan, plan_phases
from dynamics.stages.train.startup import start_process
from dynamics.stages.train.stream import StreamSettings
from dynamics.stages.train.wandb_report import open_report
from dynamics.storage import objects as storage
from dynamics.storage.shards import resolve_shards

log = logging.getLogger("dynamics.train")

PG_TIMEOUT = timedelta(minutes=30)  # rank 0 uploads checkpoints while the others wait


def init_distributed(gpus_per_node: int) -> Dist:
    """Join the torchrun job (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``); nccl on GPUs, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    # GPUs asked for and CUDA unusable: one error naming torch's CUDA, the driver and the fix.
    use_cuda = stage_device("train.gpusPerNode", gpus_per_node).type == "cuda"
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    elif "OMP_NUM_THREADS" not in os.environ:
        # Oversubscribed intra-op threads make CPU training many times slower; share the cores.
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if world > 1:
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=PG_TIMEOUT,
                                device_id=device if use_cuda else None)
    return Dist(rank=rank, world_size=world, local_rank=local_rank, device=device)


def _broadcast(d: Dist, value: Any) -> Any:
    if d.world_size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _explicit_start(run: RunState) -> str | None:
    """``train.resumeFrom`` when it names a checkpoint (checked on every rank, so all fail alike)."""
    source = run.spec.train.resume_from
    if source in (None, "latest"):
        return None
    if not storage.exists(source, run.storage):
        raise DynamicsError(f"train.resumeFrom {source} does not exist",
                            hint="give a checkpoint file of a run with the same phases, or 'latest'")
    return source


def _load_start(uri: str, run: RunState) -> dict[str, Any]:
    payload = ckpt.load(uri, run.storage)
    if payload.get("format") != ckpt.FORMAT:
        raise DynamicsError(f"{uri} is not a dynamics training checkpoint",
                            hint="train.resumeFrom takes a checkpoint written by the train stage")
    return payload


def _resume_point(run: RunState) -> tuple[int, dict[str, Any] | None]:
    """(first phase to run, checkpoint to continue from), the same on every rank.

    The run's own newest checkpoint wins; ``train.resumeFrom`` is where a run without any starts.
    """
    explicit = _explicit_start(run)
    latest = ckpt.load_latest(run.paths, run.storage) if run.dist.main else None
    uri = _broadcast(run.dist, latest[0].uri if latest is not None else explicit)
    if uri is None:
        return 0, None
    payload = latest[1] if latest is not None else _load_start(uri, run)
    payload["source_uri"] = uri
    index = int(payload["phase"])
    if index >= len(run.plans) or run.plans[index].name != payload["phase_name"]:
        raise DynamicsError(f"checkpoint {uri} is for phase {payload['phase_name']!r}, which the "
                            "spec no longer has at that position",
                            hint="restore the spec's train.phases, or delete the run's train/ directory")
    plan = run.plans[index]
    if payload["step"] < plan.steps and payload["steps"] != plan.steps:
        raise DynamicsError(
            f"checkpoint {uri} was taken with {payload['world_size']} processes and "
            f"{payload['steps']} steps in phase {plan.name}; this job has {run.dist.world_size} "
            f"({plan.steps} steps)",
            hint="resume with the same train.nodes / gpusPerNode / procsPerNode and batch sizes")
    if run.dist.main:
        log.info("resuming from %s (phase %s, step %d/%d)", uri, plan.name, payload["step"], plan.steps)
    return index, payload


def _phase_model(run: RunState, plan: PhasePlan, weights: dict[str, torch.Tensor] | None) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(run.spec.train.seed)  # identical init on every rank (DDP also broadcasts)
        model = create_model(run.spec.train, plan.resolution, run.dist.device)
    if weights is not None:
        load_weights(model, weights)
    elif plan.index == 0 and run.spec.train.pretrained:
        load_pretrained(model, run.spec.train.pretrained, run.storage)
    return model


def _log_plan(plan: PhasePlan) -> None:
    log.info("phase %d/%s: %d px, %d steps x %d samples (%d per process) = %d samples, %d epochs of %d "
             "steps, lr %.3g, warmup %d", plan.index + 1, plan.name, plan.resolution, plan.steps,
             plan.global_batch, plan.batch_per_rank, plan.samples, plan.epochs, plan.steps_per_epoch,
             plan.lr, plan.warmup)
    if plan.samples != plan.requested_samples:
        log.info("phase %s: %d samples requested, rounded up to whole global batches",
                 plan.name, plan.requested_samples)


def train_all(run: RunState) -> str:
    """Train every remaining phase; returns the URI of the final checkpoint."""
    first, payload = _resume_point(run)
    resume = payload if payload is not None and payload["step"] < run.plans[first].steps else None
    weights = payload["state_dict"] if payload is not None and not payload.get("sharded") else None
    if payload is not None and resume is None:
        first += 1  # the checkpoint closed its phase: the next one starts from its weights
    for plan in run.plans[first:]:
        if run.dist.main:
            _log_plan(plan)
        model = _phase_model(run, plan, weights)
        trainer = PhaseTrainer(run, plan, model, resume)
        trainer.train()
        weights, resume = trainer.full_weights(), None
        del trainer
    last = run.plans[-1]
    return ckpt.checkpoint_uri(run.paths, last, last.steps)


def _preflight(ctx: Any, d: Dist) -> None:
    spec = ctx.spec
    first_table = ctx.paths.shard_table(0)
    if not storage.exists(first_table, ctx.storage):
        raise DynamicsError(f"no sampling tables: {first_table} does not exist",
                            hint="run the scale stage first (dynamics stage scale)")
    if reduced.short_side(spec) is not None and not storage.exists(ctx.paths.reduced_shard(0), ctx.storage):
        raise DynamicsError(f"embed.reducedShards is on but {ctx.paths.reduced_shard(0)} does not exist",
                            hint="re-run the embed stage with this spec, or set embed.reducedShards: false")
    planned = spec.train.nodes * spec.train.procs
    if d.main and d.world_size != planned:
        log.warning("running %d processes, the spec plans %d (train.nodes x processes per node): the "
                    "global batch is %d x batchPerGpu instead", d.world_size, planned, d.world_size)


def _run_state(ctx: Any, d: Dist) -> RunState:
    spec, cfg = ctx.spec, ctx.storage
    _preflight(ctx, d)
    shards = tuple(resolve_shards(spec.data.shards, cfg))
    plans = plan_phases(spec, d.world_size)
    reduced_epochs = reduced.reduced_epochs(spec, [p.epochs for p in plans])
    stream = StreamSettings(
        shards=shards, paths=ctx.paths, storage=cfg, seed=spec.train.seed, sample_seed=spec.sample.seed,
        mode=spec.sample.mode.value, unknown_prob=spec.sample.unknown_prob,
        window=spec.train.shuffle_buffer,
        reduced=tuple(ctx.paths.reduced_shard(i) for i in range(len(shards))) if reduced_epochs else (),
        reduced_epochs=reduced_epochs,
    )
    tb = TensorBoard(ctx.paths.tensorboard_dir(), cfg) if d.main else None
    report = open_report(spec, ctx.paths, cfg) if d.main else None
    return RunState(spec=spec, paths=ctx.paths, storage=cfg, dist=d, plans=plans,
                    stream=stream, tensorboard=tb, keylog=KeyLog(os.environ.get(ENV_KEYLOG), d.rank),
                    wandb=report)


def main(argv: list[str]) -> int:
    """Entry point of ``dynamics stage train``."""
    die_with_parent()  # torchrun puts workers in their own sessions: end with it, not as orphans
    setup_logging()
    parser = stage_parser("train")
    ctx = context_from_args(parser.parse_args(argv))
    if already_done(ctx.paths.train_marker, ctx.spec, Stage.TRAIN, ctx.storage):
        log.info("training already finished (%s exists); nothing to do", ctx.paths.train_marker)
        return 0
    d = init_distributed(ctx.spec.train.gpus_per_node)
    start_process(ctx.spec.train.seed, d, ctx.paths, ctx.storage)
    run = _run_state(ctx, d)
    if d.main:  # the checkpoints are loadable without the spec: the final architecture beside them
        storage.write_json(ctx.paths.model_config, open_clip_config(ctx.spec.train), ctx.storage)
    try:
        final = train_all(run)
        if d.world_size > 1:
            dist.barrier()
        if d.main:
            if run.tensorboard is not None:
                run.tensorboard.close()
            if run.wandb is not None:
                run.wandb.close()
            storage.write_marker(ctx.paths.train_marker, marker(
                ctx.spec, Stage.TRAIN, final_checkpoint=final, phases=[p.name for p in run.plans],
                steps=[p.steps for p in run.plans], samples=[p.samples for p in run.plans],
                world_size=d.world_size,
            ), ctx.storage)
            log.info("training finished; final checkpoint %s", final)
    finally:
        run.keylog.close()
        if d.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return 0
