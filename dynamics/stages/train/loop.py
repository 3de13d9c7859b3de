"""One training phase: open_clip's loss, schedule and precision helpers driven by DynamiCS batches."""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from open_clip import get_input_dtype
from open_clip_train.precision import get_autocast
from open_clip_train.scheduler import cosine_lr
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from dynamics.spec.model import Precision, RunSpec
from dynamics.stages.train import checkpoint as ckpt
from dynamics.stages.train import fsdp, ineval
from dynamics.stages.train.data import Batch, EpochDataset, EpochSpec, close_batches, epoch_loader
from dynamics.stages.train.decode import TrainImageTransform
from dynamics.stages.train.gpu_decode import device_crops, fill_bad_rows, normalise
from dynamics.stages.train.logs import KeyLog, Progress, TensorBoard
from dynamics.stages.train.model import (
    create_model,
    load_weights,
    model_name,
    model_precision,
    param_groups,
    tokenizer,
    train_transform,
)
from dynamics.stages.train.plan import PhasePlan
from dynamics.stages.train.step import Stepper, make_loss
from dynamics.stages.train.stream import Cursor, StreamSettings
from dynamics.storage.objects import StorageConfig
from dynamics.storage.shards import SkipReason

log = logging.getLogger("dynamics.train")
# open_clip's gather-with-grad calls torch.distributed.nn.all_gather, deprecated but correct.
warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_gather is deprecated",
                        category=FutureWarning)


@dataclass(frozen=True)
class Dist:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Rank 0 logs, writes TensorBoard events, checkpoints and the marker."""
        return self.rank == 0


@dataclass
class RunState:
    """What all phases of one trainer process share."""

    spec: RunSpec
    paths: Any  # dynamics.storage.layout.RunPaths
    storage: StorageConfig | None
    dist: Dist
    plans: list[PhasePlan]
    stream: StreamSettings
    tensorboard: TensorBoard | None
    keylog: KeyLog
    wandb: Any = None  # dynamics.stages.train.wandb_report.WandbReport on rank 0 when train.wandb is set

    def scalars(self, tag: str, values: dict[str, float], global_step: int) -> None:
        """Report ``values`` to TensorBoard and W&B (rank 0)."""
        for sink in (self.tensorboard, self.wandb):
            if sink is not None:
                sink.scalars(tag, values, global_step)

    def sync(self) -> None:
        """Flush/upload the reports (at checkpoints)."""
        for sink in (self.tensorboard, self.wandb):
            if sink is not None:
                sink.sync()


def _wrap(model: torch.nn.Module, d: Dist, *, sharded: bool, static: bool) -> torch.nn.Module:
    if d.world_size == 1:
        return model
    if sharded:
        return fsdp.shard_model(model, d.world_size, d.device)
    device_ids = [d.device.index] if d.device.type == "cuda" else None
    # A static graph runs one forward/backward per step: not with accumulation's several.
    return DistributedDataParallel(model, device_ids=device_ids, static_graph=static)


def compiled(module: torch.nn.Module, *, distributed: bool, checkpointing: bool) -> torch.nn.Module:
    """``torch.compile(module)`` as open_clip_train compiles: around the DDP wrapper, after the model is built."""
    if distributed and checkpointing:
        # DDP's graph splitting ("DDP optimizer") fails on activation-checkpointed blocks; open_clip_train
        # turns it off in this combination too (compiled graphs then span bucket boundaries).
        torch._dynamo.config.optimize_ddp = False
    return torch.compile(module)


def _scalar(value: torch.Tensor) -> float:
    # Rank 0 only, so no collective: FSDP's dim-0 chunks put a 1-element parameter on rank 0.
    value = value.detach()
    return float(value.to_local() if isinstance(value, DTensor) else value)


class PhaseTrainer:
    """Trains ``model`` through one phase, from ``resume`` (a checkpoint of this phase) if given."""

    def __init__(self, run: RunState, plan: PhasePlan, model: torch.nn.Module,
                 resume: dict[str, Any] | None) -> None:
        t = run.spec.train
        self.run, self.plan, self.model = run, plan, model
        self.sharded = t.strategy == "fsdp" and run.dist.world_size > 1
        if t.grad_checkpointing:
            model.set_grad_checkpointing(True)
        self.ddp = _wrap(model, run.dist, sharded=self.sharded, static=t.accum_freq == 1)
        opt = t.optimizer
        self.optimizer = torch.optim.AdamW(param_groups(model, opt.weight_decay), lr=plan.lr,
                                           betas=(opt.beta1, opt.beta2), eps=opt.eps)
        self.scaler = torch.amp.GradScaler(run.dist.device.type) if t.precision is Precision.AMP else None
        self.scheduler = cosine_lr(self.optimizer, plan.lr, plan.warmup, plan.steps)
        loss = make_loss(t.loss, local_loss=t.local_loss, gather_with_grad=t.gather_with_grad,
                         rank=run.dist.rank, world_size=run.dist.world_size)
        autocast = get_autocast(t.precision.value, device_type=run.dist.device.type)
        forward = compiled(self.ddp, distributed=run.dist.world_size > 1,
                           checkpointing=t.grad_checkpointing) if t.compile else self.ddp
        self.stepper = Stepper(model, forward, self.optimizer, loss, autocast, self.scaler, t.accum_freq,
                               t.grad_clip_norm)
        self.input_dtype = get_input_dtype(model_precision(t.precision))
        self.transform = TrainImageTransform(train_transform(model, t.augmentation.scale))
        if t.decode == "device" and run.dist.main and plan.index == 0:
            log.info("train.decode=device: loader workers read tars and draw crop boxes; JPEGs are decoded "
                     "on %s in batches", run.dist.device)
        self.tokenize = tokenizer(t)
        self.start, self.cursors = 0, {}
        if resume is not None:
            self._restore(resume)
        later = run.plans[plan.index + 1:]
        self.progress = Progress(plan, later) if run.dist.main else None

    def _restore(self, payload: dict[str, Any]) -> None:
        if payload.get("sharded"):
            fsdp.load_sharded(payload["source_uri"], self.model, self.optimizer, self.run.storage)
        else:
            self.optimizer.load_state_dict(payload["optimizer"])
        if self.scaler is not None and payload.get("scaler"):
            self.scaler.load_state_dict(payload["scaler"])
        self.start = int(payload["step"])
        same_readers = (payload["world_size"] == self.run.dist.world_size
                        and payload["workers"] == self.run.spec.train.workers)
        if payload["data_epoch"] == self.plan.epoch_of(self.start) and same_readers:
            mine = payload["cursors"][self.run.dist.rank]
            self.cursors = {i: Cursor.from_list(c) for i, c in enumerate(mine) if c is not None}
        rng = payload.get("rng_state")
        if rng is not None and self.run.dist.rank < len(rng):
            torch.set_rng_state(rng[self.run.dist.rank])

    def train(self) -> None:
        """Run the phase's remaining steps, epoch by epoch."""
        plan = self.plan
        for epoch in range(plan.epoch_of(self.start), plan.epochs):
            steps = plan.epoch_steps(epoch)
            steps = range(max(steps.start, self.start), steps.stop)
            self._train_epoch(epoch, steps)
            self.cursors = {}

    def _epoch_spec(self, epoch: int, steps: range) -> EpochSpec:
        t, d = self.run.spec.train, self.run.dist
        return EpochSpec(
            stream=self.run.stream, sampler_epoch=self.plan.sampler_epoch(epoch), steps=steps,
            rank=d.rank, world_size=d.world_size, workers=t.workers,
            batch_size=self.plan.batch_per_rank, decode_on_device=t.decode == "device", cursors=dict(self.cursors),
        )

    def _train_epoch(self, epoch: int, steps: range) -> None:
        dataset = EpochDataset(self._epoch_spec(epoch, steps), self.transform, self.tokenize)
        batches = iter(epoch_loader(dataset, pin_memory=self.run.dist.device.type == "cuda"))
        self.ddp.train()
        for step in steps:
            waited = time.monotonic()
            batch = next(batches)
            waited = time.monotonic() - waited
            loss = self._step(step, batch)
            self.cursors[batch.reader] = Cursor.from_list(batch.cursor)
            self._after_step(step + 1, epoch, batch, loss, waited)
        close_batches(batches)

    def _step(self, step: int, batch: Batch) -> torch.Tensor:
        self.scheduler(step)
        images, texts = self._inputs(batch)
        return self.stepper(images, texts)

    def _inputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images and tokens on the device; uint8 crops travel, floats are made there."""
        device, tf = self.run.dist.device, self.transform
        texts = batch.texts
        if batch.encoded is not None:
            crops, bad = device_crops(batch.encoded, device, tf.crop.interpolation)
            if bad:
                log.warning("%d image(s) of this batch could not be decoded; their rows repeat other pairs",
                            len(bad))
                crops, texts = fill_bad_rows(crops, texts, bad)
                batch.skipped[SkipReason.CORRUPT_IMAGE.value] = batch.skipped.get(
                    SkipReason.CORRUPT_IMAGE.value, 0) + len(bad)
        else:
            assert batch.images is not None
            crops = batch.images.to(device=device, non_blocking=True)
        images = normalise(crops, tf.mean, tf.std).to(self.input_dtype)
        return images, texts.to(device=device, non_blocking=True)

    def full_weights(self) -> dict[str, torch.Tensor]:
        """The model's unsharded weights on the CPU (a collective under FSDP)."""
        if self.sharded:
            return fsdp.full_state_dict(self.model)
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    @property
    def global_step(self) -> int:
        """Steps of earlier phases (the x axis of every metric)."""
        return sum(p.steps for p in self.run.plans[: self.plan.index])

    def _after_step(self, done: int, epoch: int, batch: Batch, loss: torch.Tensor, waited: float) -> None:
        t, plan = self.run.spec.train, self.plan
        if self.run.keylog.enabled:
            self.run.keylog.write({"phase": plan.index, "step": done, "keys": batch.keys,
                                   "loss": float(loss)})
        if self.progress is not None:
            self.progress.add(waited, batch.skipped)
            if done % t.log_every == 0 or done == plan.steps:
                self._log(done, float(loss))
        if done % t.checkpoint_every == 0 or done == plan.steps:
            self._checkpoint(done, epoch)
        if ineval.is_due(t.eval_every, done, plan.steps):
            self._eval(done)

    def _eval(self, done: int) -> None:
        run, model = self.run, self.model
        if self.sharded:
            weights = self.full_weights()  # every rank takes part in the gather
            if not run.dist.main:
                return
            model = create_model(run.spec.train, self.plan.resolution, run.dist.device)
            load_weights(model, weights)
        elif not run.dist.main:
            return
        metrics = ineval.zero_shot(run.spec, model, self.tokenize, run.dist.device, run.storage)
        log.info("eval at phase %s step %d: %s", self.plan.name, done,
                 ", ".join(f"{k} {v:.3f}" for k, v in sorted(metrics.items())))
        run.scalars("eval", metrics, self.global_step + done)
        ineval.record(run.paths, run.storage, {"phase": self.plan.index, "phase_name": self.plan.name,
                                               "step": done, "global_step": self.global_step + done,
                                               "metrics": metrics})

    def _log(self, done: int, loss: float) -> None:
        assert self.progress is not None
        lr = self.optimizer.param_groups[0]["lr"]
        text, numbers = self.progress.line(done, loss, lr, math.exp(_scalar(self.model.logit_scale)))
        log.info(text)
        self.run.scalars("train", numbers, self.global_step + done)

    def _gather(self, local: dict[str, Any]) -> list[dict[str, Any]]:
        if self.run.dist.world_size == 1:
            return [local]
        out: list[Any] = [None] * self.run.dist.world_size
        dist.all_gather_object(out, local)
        return out

    def _checkpoint(self, done: int, epoch: int) -> None:
        workers = max(1, self.run.spec.train.workers)
        cursors = [self.cursors[i].to_list() if i in self.cursors else None for i in range(workers)]
        ranks = self._gather({"cursors": cursors, "rng": torch.get_rng_state()})
        uri = ckpt.checkpoint_uri(self.run.paths, self.plan, done)
        weights = None
        if self.sharded and done == self.plan.steps:
            weights = self.full_weights()  # a phase's final checkpoint is a plain open_clip one
        elif self.sharded:
            fsdp.save_sharded(uri, self.model, self.optimizer, self.run.storage)
            dist.barrier()  # every rank's shards are in place before the .pt names the checkpoint
        if not self.run.dist.main:
            return
        payload = self._payload(done, epoch, ranks, weights)
        ckpt.save(uri, payload, self.run.storage)
        ckpt.prune(self.run.paths, self.run.storage, self.run.plans, self.run.spec.train.keep_last)
        self.run.sync()
        log.info("checkpoint %s (phase %s step %d/%d)", uri, self.plan.name, done, self.plan.steps)

    def _payload(self, done: int, epoch: int, ranks: list[dict[str, Any]],
                 weights: dict[str, torch.Tensor] | None) -> dict[str, Any]:
        spec, plan = self.run.spec, self.plan
        sharded = self.sharded and weights is None
        if weights is None and not sharded:
            weights = self.model.state_dict()
        return {
            # open_clip's keys
            "epoch": done // plan.steps_per_epoch,
            "name": spec.name,
            "state_dict": weights if weights is not None else {},
            "optimizer": {} if self.sharded else self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            # ours
            "format": ckpt.FORMAT,
            "sharded": sharded,  # model and optimizer state in <checkpoint>.dcp/ (fsdp.py)
            "model": model_name(spec.train),
            "model_config": spec.train.model_config_,
            "resolution": plan.resolution,
            "context_length": spec.train.context_length,
            "phase": plan.index,
            "phase_name": plan.name,
            "step": done,
            "steps": plan.steps,
            "samples_seen": done * plan.global_batch,
            "data_epoch": epoch,
            "sampler_epoch": plan.sampler_epoch(epoch),
            "world_size": self.run.dist.world_size,
            "workers": spec.train.workers,
            "cursors": [r["cursors"] for r in ranks],
            "rng_state": [r["rng"] for r in ranks],
        }
