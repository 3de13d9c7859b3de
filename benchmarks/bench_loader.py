"""Training loader throughput per CPU core: S3 shard -> decode -> RandomResizedCrop 112 -> tensor + tokens.

Compares, in one run and on the same shards in a moto S3 server on loopback, the trainer's pipeline
(:class:`dynamics.stages.train.data.EpochDataset`: DynamiCS sampling, shuffle window, reduced-scale JPEG
decode, open_clip's train transform, tokenizer) with open_clip's own webdataset pipeline
(``open_clip_train.data.get_wds_dataset``, streaming the same ``s3://`` URLs through
``dynamics.storage.shards.register_s3_handler``). Both run in the benchmark process (``workers=0``) with one
torch thread, so samples/s is per CPU core. Images are web-like JPEGs of 512-1024 px.

    python benchmarks/bench_loader.py [--shards 8] [--per-shard 200] [--resolution 112] [--repeats 2]
"""

from __future__ import annotations

import argparse
import functools
import io
import logging
import math
import os
import sys
import tarfile
import time
from argparse import Namespace
from collections.abc import Callable, Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import numpy as np
import open_clip
import torch
from open_clip_train.data import get_wds_dataset
from PIL import Image, ImageDraw
from s3server import start_moto_server

from dynamics.core.sampler import ShardTable
from dynamics.stages.train.data import EpochDataset, EpochSpec
from dynamics.stages.train.stream import StreamSettings
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths
from dynamics.storage.shards import register_s3_handler

SIZES = ((512, 384), (640, 480), (800, 600), (1024, 768), (384, 512), (768, 1024))
CONTEXT = 32
SCALE = (0.4, 1.0)
GPU_NEED = 2600  # samples/s one H100 consumes at 112 px (DESIGN.md §2)


def web_jpeg(rng: np.random.Generator) -> bytes:
    """A photo-like JPEG: smooth gradient, a few shapes, sensor noise (quality 90)."""
    width, height = SIZES[int(rng.integers(len(SIZES)))]
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(0, 255, 3) + np.stack([x / width, y / height, (x + y) / (width + height)], -1) * 80
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = int(rng.integers(width)), int(rng.integers(height))
        box = (x0, y0, x0 + int(rng.integers(40, width // 2)), y0 + int(rng.integers(40, height // 2)))
        draw.ellipse(box, fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    noisy = np.asarray(img, dtype=np.int16) + rng.normal(0, 6, (height, width, 3)).astype(np.int16)
    buf = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def tar_of(members: Iterable[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_shards(bucket: str, n_shards: int, per_shard: int, seed: int) -> tuple[str, list[list[str]], int]:
    """Shards ``{bucket}/shards/{000..}.tar``; returns (pattern, keys per shard, total bytes)."""
    rng = np.random.default_rng(seed)
    keys_per_shard, total = [], 0
    for shard in range(n_shards):
        keys = [f"{shard:03d}{i:05d}" for i in range(per_shard)]
        members = []
        for key in keys:
            members += [(f"{key}.jpg", web_jpeg(rng)), (f"{key}.txt", f"a photo number {key}".encode())]
        data = tar_of(members)
        total += len(data)
        storage.write_bytes(f"{bucket}/shards/{shard:03d}.tar", data)
        keys_per_shard.append(keys)
        print(f"  wrote shard {shard + 1}/{n_shards}", file=sys.stderr)
    return f"{bucket}/shards/{{000..{n_shards - 1:03d}}}.tar", keys_per_shard, total


def write_tables(paths: RunPaths, keys_per_shard: list[list[str]], p: float) -> None:
    for index, keys in enumerate(keys_per_shard):
        table = ShardTable.from_keys(keys, np.full(len(keys), p, dtype=np.float32))
        storage.write_bytes(paths.shard_table(index), table.to_bytes())


def timed(batches: Iterable[object], n_batches: int, batch: int) -> float:
    """Samples/s over ``n_batches`` batches (the first one included: both pipelines fill buffers)."""
    start = time.perf_counter()
    for i, _ in enumerate(batches):
        if i + 1 == n_batches:
            break
    return n_batches * batch / (time.perf_counter() - start)


def ours(settings: StreamSettings, n_batches: int, batch: int, resolution: int, draft: bool,
         transform: Callable, tokenizer: Callable) -> float:
    spec = EpochSpec(stream=settings, sampler_epoch=0, steps=range(n_batches), rank=0, world_size=1,
                     workers=0, batch_size=batch, draft=draft)
    return timed(iter(EpochDataset(spec, transform, tokenizer)), n_batches, batch)


def _patch_open_clip_eof() -> None:
    # webdataset >= 0.2.96 ends every shard with an empty "EOF" dict that open_clip 3.3's
    # group_by_keys_nothrow cannot take (KeyError 'fname'; open_clip#935, webdataset#384). The
    # maintainers' fix is eof_value=None, applied here so open_clip's pipeline runs unchanged otherwise.
    import open_clip_train.data as oc_data
    from webdataset.tariterators import tar_file_expander

    oc_data.tar_file_expander = functools.partial(tar_file_expander, eof_value=None)


def open_clip_pipeline(pattern: str, n_samples: int, batch: int, transform: Callable, tokenizer: Callable) -> float:
    args = Namespace(train_data=pattern, val_data=None, dataset_resampled=False, train_num_samples=n_samples,
                     train_data_upsampling_factors=None, seed=0, batch_size=batch, world_size=1, workers=0)
    info = get_wds_dataset(args, transform, is_train=True, epoch=0, tokenizer=tokenizer)
    return timed(iter(info.dataloader), info.dataloader.num_batches, batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--per-shard", type=int, default=200)
    ap.add_argument("--resolution", type=int, default=112)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)

    server = start_moto_server()
    os.environ.update({"AWS_ENDPOINT_URL": server.endpoint_url, "AWS_ACCESS_KEY_ID": "bench",
                       "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})
    try:
        storage.s3_client().create_bucket(Bucket="bench")
        pattern, keys, size = write_shards("s3://bench", args.shards, args.per_shard, seed=0)
        register_s3_handler(None)
        _patch_open_clip_eof()
        n = args.shards * args.per_shard
        n_batches = n // args.batch
        model = open_clip.create_model("ViT-B-16", force_image_size=args.resolution)
        pp = open_clip.transform.PreprocessCfg(**model.visual.preprocess_cfg)
        transform = open_clip.transform.image_transform_v2(
            pp, is_train=True, aug_cfg=open_clip.transform.AugmentationCfg(scale=SCALE))
        tokenizer = open_clip.get_tokenizer("ViT-B-16", context_length=CONTEXT)
        shards = tuple(f"s3://bench/shards/{i:03d}.tar" for i in range(args.shards))

        def settings(p: float, label: str) -> StreamSettings:
            paths = RunPaths.for_run("s3://bench/work", label)
            write_tables(paths, keys, p)
            return StreamSettings(shards, paths, None, seed=0, sample_seed=0, mode="cap", unknown_prob=0.5,
                                  window=400)

        full, half = settings(1.0, "p1"), settings(0.5, "p05")
        results: dict[str, list[float]] = {"ours": [], "nodraft": [], "openclip": [], "sampled": []}
        for r in range(args.repeats):
            print(f"  round {r + 1}/{args.repeats}", file=sys.stderr)
            results["ours"].append(ours(full, n_batches, args.batch, args.resolution, True, transform, tokenizer))
            results["openclip"].append(open_clip_pipeline(pattern, n, args.batch, transform, tokenizer))
            results["nodraft"].append(ours(full, n_batches, args.batch, args.resolution, False, transform,
                                           tokenizer))
            results["sampled"].append(ours(half, n_batches // 2, args.batch, args.resolution, True, transform,
                                           tokenizer))
    finally:
        server.stop()
    best = {k: max(v) for k, v in results.items()}
    print(
        f"loader {args.resolution}px, 1 core, {n} web JPEGs (512-1024 px, {size / n / 1024:.0f} KiB avg) from S3: "
        f"dynamics {best['ours']:.0f} samples/s/core (no draft decode: {best['nodraft']:.0f}; with sampling "
        f"p=0.5: {best['sampled']:.0f}) vs open_clip get_wds_dataset {best['openclip']:.0f} samples/s/core "
        f"-> {best['ours'] / best['openclip']:.2f}x | cores per H100 at {GPU_NEED}/s: "
        f"{math.ceil(GPU_NEED / best['ours'])} vs {math.ceil(GPU_NEED / best['openclip'])}"
    )


if __name__ == "__main__":
    main()
