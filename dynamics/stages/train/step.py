"""One optimisation step: loss choice, gradient accumulation, clipping (open_clip_train's options).

Accumulation follows open_clip_train's feature cache: the per-process batch is split into
``accum_freq`` micro-batches; their features are first computed without gradients, then each
micro-batch is recomputed with gradients and its features replace the cached ones before the loss
over the whole batch. The summed gradients are those of the un-split batch (every negative is kept),
while activations are held for one micro-batch at a time. Unlike open_clip_train, the logit scale
(and bias) take their gradient from one micro-batch only (the last), so it is not counted
``accum_freq`` times.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from open_clip.loss import ClipLoss, SigLipLoss

MAX_LOGIT_SCALE = math.log(100)
FEATURES = ("image_features", "text_features")
LossName = Literal["clip", "siglip"]


def siglip_init() -> dict[str, float]:
    """Model kwargs open_clip_train uses for SigLIP (logit scale log 10, bias -10)."""
    return {"init_logit_scale": float(np.log(10)), "init_logit_bias": -10.0}


def make_loss(name: LossName, *, local_loss: bool, gather_with_grad: bool, rank: int,
              world_size: int) -> torch.nn.Module:
    """open_clip's CLIP (InfoNCE) or SigLIP loss for this process."""
    if name == "siglip":
        return SigLipLoss(cache_labels=True, rank=rank, world_size=world_size)
    return ClipLoss(local_loss=local_loss, gather_with_grad=gather_with_grad, cache_labels=True,
                    rank=rank, world_size=world_size)


@dataclass
class Stepper:
    """Forward, backward and optimizer step of one batch.

    ``model`` is the plain module (its parameters are clipped and clamped), ``wrapped`` what runs the
    forward pass (DDP, FSDP-sharded or the model itself).
    """

    model: torch.nn.Module
    wrapped: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loss: torch.nn.Module
    autocast: Callable[[], Any]
    scaler: torch.amp.GradScaler | None = None
    accum_freq: int = 1
    clip: float | None = None

    def __call__(self, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        """Train on one batch; returns the (detached) loss over the whole batch."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.accum_freq == 1:
            with self.autocast():
                loss = self._loss(self.wrapped(images, texts))
            self._backward(loss)
        else:
            loss = self._accumulate(images.chunk(self.accum_freq), texts.chunk(self.accum_freq))
        self._optimizer_step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        return loss.detach()

    def _loss(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        extra = [out["logit_bias"]] if out.get("logit_bias") is not None else []
        return self.loss(out["image_features"], out["text_features"], out["logit_scale"], *extra)

    def _accumulate(self, images: tuple[torch.Tensor, ...], texts: tuple[torch.Tensor, ...]) -> torch.Tensor:
        cached: dict[str, list[torch.Tensor]] = {k: [] for k in FEATURES}
        with torch.no_grad(), self.autocast():
            for img, txt in zip(images, texts, strict=True):
                out = self.wrapped(img, txt)
                for key in FEATURES:
                    cached[key].append(out[key])
        loss = torch.zeros(())
        for j, (img, txt) in enumerate(zip(images, texts, strict=True)):
            with self._sync(last=j == len(images) - 1), self.autocast():
                out = dict(self.wrapped(img, txt))
                for key in FEATURES:
                    out[key] = torch.cat([*cached[key][:j], out[key], *cached[key][j + 1:]])
                # The scale's (and bias's) gradient comes from one micro-batch: the last, whose backward
                # DDP synchronises and where it expects a gradient for every parameter.
                if j < len(images) - 1:
                    out = {k: (v.detach() if k in ("logit_scale", "logit_bias") and v is not None else v)
                           for k, v in out.items()}
                loss = self._loss(out)
                self._backward(loss)
        return loss

    @contextlib.contextmanager
    def _sync(self, *, last: bool) -> Iterator[None]:
        # DDP: all-reduce once, after the last micro-batch (FSDP reduce-scatters each one: same sum).
        no_sync = getattr(self.wrapped, "no_sync", None)
        if last or no_sync is None:
            yield
        else:
            with no_sync():
                yield

    def _backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def _optimizer_step(self) -> None:
        if self.scaler is not None:
            if self.clip is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            return
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
