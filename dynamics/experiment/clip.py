"""A tiny OpenCLIP model trained contrastively on digit images and captions, and its zero-shot score.

The model is a real open_clip ViT + text transformer (random init, an inline config registered
like ``train.modelConfig``), small enough that 25,600 samples train in one to two minutes on one CPU core.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import open_clip
import torch
from open_clip.loss import ClipLoss

from dynamics.experiment.digits import CLASS_NAMES, TEMPLATES
from dynamics.stages.train.model import register_config

SIDE = 16  # digits are upscaled 2x: a 4-px patch then covers a 2x2 block of the original 8x8 image
CONTEXT = 12
MODEL_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": SIDE, "layers": 2, "width": 64, "patch_size": 4, "head_width": 32,
                   "pool_type": "avg"},
    "text_cfg": {"context_length": CONTEXT, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}
PAD = 2  # random-translation augmentation of up to 2 px (of 16) each way


def image_tensor(images: np.ndarray) -> torch.Tensor:
    """(n, 3, 16, 16) float tensor in [-1, 1] from 8x8 digits in [0, 16]."""
    x = torch.from_numpy(images.astype(np.float32) / 8.0 - 1.0)
    x = x.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    return x[:, None].expand(-1, 3, -1, -1).contiguous()


def _augment(batch: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    padded = torch.nn.functional.pad(batch, (PAD, PAD, PAD, PAD), value=-1.0)
    offsets = torch.from_numpy(rng.integers(0, 2 * PAD + 1, size=(batch.shape[0], 2)))
    # One gather instead of a Python loop over the batch (same crops: row dy.., column dx.. of each image).
    rows = (offsets[:, 0, None] + torch.arange(SIDE))[:, None, :, None]
    cols = (offsets[:, 1, None] + torch.arange(SIDE))[:, None, None, :]
    return padded[torch.arange(batch.shape[0])[:, None, None, None], torch.arange(batch.shape[1])[None, :, None, None],
                  rows, cols]


def _lr(step: int, steps: int, base: float) -> float:
    warmup = max(1, steps // 20)
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def new_model(seed: int) -> torch.nn.Module:
    """A fresh model, initialised from ``seed``."""
    torch.manual_seed(seed)
    return open_clip.create_model(register_config(MODEL_CONFIG), pretrained=None, output_dict=True)


def train_clip(images: torch.Tensor, classes: np.ndarray, stream: Iterator[int], *, samples: int,
               batch_size: int, seed: int, lr: float = 2e-3, model: torch.nn.Module | None = None,
               key_log: list[np.ndarray] | None = None) -> torch.nn.Module:
    """Train ``model`` (default a fresh one from ``seed``) on ``samples`` draws of ``stream``, with a
    warmup + cosine schedule over those samples. ``key_log`` receives each step's sample indices (the
    trainer's key log: what the model actually saw)."""
    model = new_model(seed) if model is None else model
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    name = register_config(MODEL_CONFIG)
    tokenize = open_clip.get_tokenizer(name, context_length=CONTEXT)
    # Only 40 distinct captions exist: encode each once per step and index, which gives the same
    # loss and gradients as encoding one caption per image, at a fraction of the cost.
    captions = tokenize([t.format(c) for c in CLASS_NAMES for t in TEMPLATES])
    # The captions use a few dozen of the tokenizer's 49,408 tokens: training the whole token table
    # (95% of the parameters) would only cost time; its random rows already tell the words apart.
    model.token_embedding.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.1)
    loss_fn = ClipLoss()
    steps = samples // batch_size
    model.train()
    for step in range(steps):
        idx = np.fromiter(stream, np.int64, count=batch_size)
        if key_log is not None:
            key_log.append(idx)
        for group in opt.param_groups:
            group["lr"] = _lr(step, steps, lr)
        caption = classes[idx] * len(TEMPLATES) + rng.integers(0, len(TEMPLATES), size=batch_size)
        image_features = model.encode_image(_augment(images[idx], rng), normalize=True)
        text_features = model.encode_text(captions, normalize=True)[torch.from_numpy(caption)]
        loss = loss_fn(image_features, text_features, model.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model


@torch.inference_mode()
def zero_shot(model: torch.nn.Module, images: torch.Tensor, classes: np.ndarray) -> np.ndarray:
    """Per-class zero-shot top-1 accuracy (prompt ensemble over the caption templates)."""
    model.eval()
    name = register_config(MODEL_CONFIG)
    tokenize = open_clip.get_tokenizer(name, context_length=CONTEXT)
    text = model.encode_text(tokenize([t.format(c) for c in CLASS_NAMES for t in TEMPLATES]), normalize=True)
    weights = torch.nn.functional.normalize(text.view(len(CLASS_NAMES), len(TEMPLATES), -1).mean(1), dim=-1)
    pred = (model.encode_image(images, normalize=True) @ weights.T).argmax(1).numpy()
    hits = np.bincount(classes, weights=(pred == classes).astype(np.float64), minlength=len(CLASS_NAMES))
    return hits / np.maximum(np.bincount(classes, minlength=len(CLASS_NAMES)), 1)


@torch.inference_mode()
def image_tower(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """L2-normalised image-tower embeddings (what ``embed.model: run:RUN`` gives the embed stage)."""
    model.eval()
    out = [model.encode_image(images[i:i + batch_size], normalize=True) for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy().astype(np.float32)
