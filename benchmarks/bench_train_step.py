"""Trainer samples/s per GPU: open_clip ViT-B/16, bf16 autocast, synthetic batches already on the device.

The model is wrapped in DDP with a world of one (so the gradient all-reduce hooks run, as in a real
run), with the spec's optimizer (AdamW) and open_clip's ClipLoss. Images and tokens are generated on
the device once, so the number is the GPU's ceiling, not the loader's. It also times ``train.decode:
device`` (batched JPEG decode + crop + resize + normalise on the device, ``device_crops``) on photo-like
JPEGs at the reduced copies' size (short side 128) and at web size (640x480), in images/s: what that
path costs the GPU per step. Prints one line per run:

    python benchmarks/bench_train_step.py [--resolutions 112 224] [--batch 256] [--steps 20]
    python benchmarks/bench_train_step.py --device cpu --model-config tiny --batch 4 --steps 2 --decode-images 8
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time

import numpy as np
import open_clip
import torch
import torch.distributed as dist
from open_clip.loss import ClipLoss
from PIL import Image
from torch.nn.parallel import DistributedDataParallel as DDP
from torchvision.transforms import InterpolationMode

from dynamics.stages.train.gpu_decode import EncodedImages, device_crops, jpeg_size, normalise, random_crop
from dynamics.stages.train.model import register_config

TINY = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
CONTEXT = 32


def step_rate(model_name: str, resolution: int, batch: int, steps: int, warmup: int, device: torch.device) -> float:
    """Samples/s of forward + backward + AdamW steps after ``warmup`` untimed steps."""
    model = open_clip.create_model(model_name, force_image_size=resolution, force_context_length=CONTEXT,
                                   device=device, output_dict=True)
    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-6, weight_decay=0.2)
    loss_fn = ClipLoss()
    gen = torch.Generator(device=device).manual_seed(0)
    images = torch.randn((batch, 3, resolution, resolution), generator=gen, device=device)
    tokens = torch.randint(0, 49408, (batch, CONTEXT), generator=gen, device=device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16)

    def one() -> None:
        with amp:
            out = ddp(images, tokens)
            loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        one()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        one()
    _sync(device)
    return steps * batch / (time.perf_counter() - start)


def photo_jpegs(n: int, size: tuple[int, int], seed: int = 0) -> list[bytes]:
    """``n`` photo-like JPEGs (gradient + noise, quality 90) of ``size`` (width, height)."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    out = []
    for _ in range(n):
        a, b = rng.uniform(0.2, 1.0, 2)
        img = np.stack([x / width * 255 * a, y / height * 255 * b, (x + y) / (width + height) * 255], -1)
        img = img + rng.normal(0, 6, img.shape)
        buf = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def decode_rate(jpegs: list[bytes], resolution: int, batch: int, device: torch.device, repeats: int = 3) -> float:
    """Images/s of ``device_crops`` + ``normalise`` on ``device`` (batches of ``batch``; median of ``repeats``)."""
    gen = torch.Generator().manual_seed(0)
    crops = [random_crop(jpeg_size(j), (0.4, 1.0), gen) for j in jpegs]
    batches = [EncodedImages(list(jpegs[i:i + batch]), list(crops[i:i + batch]), resolution)
               for i in range(0, len(jpegs), batch)]
    rates = []
    for _ in range(repeats + 1):  # the first pass warms nvJPEG / the allocator up
        _sync(device)
        start = time.perf_counter()
        for enc in batches:
            images, _ = device_crops(enc, device, InterpolationMode.BICUBIC)
            normalise(images).to(torch.bfloat16)
        _sync(device)
        rates.append(len(jpegs) / (time.perf_counter() - start))
    return statistics.median(rates[1:])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolutions", type=int, nargs="+", default=[112, 224])
    ap.add_argument("--batch", type=int, default=256, help="per-GPU batch")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default="ViT-B-16")
    ap.add_argument("--model-config", choices=["tiny"], help="use a tiny inline config instead (smoke test)")
    ap.add_argument("--decode-images", type=int, default=1024,
                    help="JPEGs per size for the train.decode: device timing (0: skip it)")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", 0)
    name = register_config(TINY) if args.model_config == "tiny" else args.model
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29517")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
    try:
        rates = {r: step_rate(name, r, args.batch, args.steps, args.warmup, device) for r in args.resolutions}
        print(f"  done: {rates}", file=sys.stderr)
    finally:
        dist.destroy_process_group()
    decode = {}
    if args.decode_images:
        for label, size in (("reduced 171x128", (171, 128)), ("web 640x480", (640, 480))):
            decode[label] = decode_rate(photo_jpegs(args.decode_images, size), args.resolutions[0],
                                        args.batch, device)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    line = (f"train step {args.model if not args.model_config else 'tiny'} bf16, DDP world 1, batch {args.batch}, "
            f"{card}: " + ", ".join(f"{r} px {v:,.0f} samples/s/GPU" for r, v in rates.items()))
    if decode:
        line += f" | decode on device at {args.resolutions[0]} px: " + ", ".join(
            f"{k} {v:,.0f} images/s" for k, v in decode.items())
    print(line)


if __name__ == "__main__":
    main()
