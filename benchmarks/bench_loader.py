"""Training loader throughput per CPU core: S3 shard -> decode -> RandomResizedCrop 112 -> tensor + tokens.

Compares, in one run and on the same samples in a moto S3 server on loopback, four pipelines: the
trainer's (:class:`dynamics.stages.train.data.EpochDataset`: DynamiCS sampling, shuffle window, crop-aware
reduced-scale JPEG decode, open_clip's train transform, tokenizer) on the original shards, the same on the
reduced-resolution copies the embed stage writes (``embed.reducedShards``, built here with the embed
stage's own writer), the worker side of ``train.decode: device`` on those copies (tar read, sampling, crop
boxes from JPEG headers, stored caption ids: the pixel decode happens on the GPU and is not timed here),
and open_clip's ``open_clip_train.data.get_wds_dataset`` on the originals. The trainer's workers hand over
uint8 crops (normalised on the GPU); open_clip's hand over normalised floats. All run in
the benchmark process (``workers=0``, one torch thread): samples/s is per CPU core. Rounds alternate the
pipelines' order; medians are reported, with CPU time per sample (the moto server's excluded), a time
breakdown (tar read, decode, crop/resize, to-tensor, tokenize, and tokenize from the BPE ids the reduced
copies store) and the reduced copies' cost.

Two image sets: ``web`` (512-1024 px per side, ~94 KiB) and ``384`` (DataComp-style, <= 512 px).

    python benchmarks/bench_loader.py [--sets web 384] [--shards 4] [--per-shard 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import functools
import io
import logging
import math
import os
import statistics
import sys
import tarfile
import time
from argparse import Namespace
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import numpy as np
import open_clip
import torch
from open_clip_train.data import get_wds_dataset
from PIL import Image, ImageDraw
from s3server import start_moto_server
from torchvision.transforms.functional import pil_to_tensor

from dynamics.core.sampler import ShardTable
from dynamics.stages.embed.reduced import ReducedShardWriter
from dynamics.stages.train.data import EpochDataset, EpochSpec
from dynamics.stages.train.stream import StreamSettings
from dynamics.stages.train.tokens import CaptionTokenizer
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths
from dynamics.storage.shards import Sample, SkipStats, decode_image, iter_samples
from dynamics.storage.wds_s3 import register_s3_handler

SETS = {"web": ((512, 384), (640, 480), (800, 600), (1024, 768), (384, 512), (768, 1024)),
        "384": ((384, 384), (384, 288), (288, 384), (512, 384), (384, 512))}
CONTEXT = 32
SCALE = (0.4, 1.0)
GPU_NEED = 2600  # samples/s one H100 consumes at 112 px in the reference recipe


def web_jpeg(rng: np.random.Generator, sizes: tuple[tuple[int, int], ...]) -> bytes:
    """A photo-like JPEG: smooth gradient, a few shapes, sensor noise (quality 90)."""
    width, height = sizes[int(rng.integers(len(sizes)))]
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


@dataclass
class ShardSet:
    """One image set's original shards and reduced copies in S3, and what the copies cost."""

    name: str
    originals: tuple[str, ...]
    reduced: tuple[str, ...]
    keys: list[list[str]]
    bytes_original: int = 0
    bytes_reduced: int = 0
    decode_s: float = 0.0  # decoding at the reduced size (the embed stage does this anyway)
    reduce_s: float = 0.0  # resize + JPEG encode + caption BPE ids: the embed stage's extra work

    @property
    def n(self) -> int:
        return sum(map(len, self.keys))


def write_shards(bucket: str, name: str, n_shards: int, per_shard: int, side: int, seed: int) -> ShardSet:
    """Original shards and reduced copies (made by the embed stage's writer) under ``{bucket}/{name}``."""
    rng = np.random.default_rng(seed)
    out = ShardSet(name, tuple(f"{bucket}/{name}/orig/{i:03d}.tar" for i in range(n_shards)),
                   tuple(f"{bucket}/{name}/reduced/{i:03d}.tar" for i in range(n_shards)), [])
    for shard in range(n_shards):
        keys = [f"{shard:03d}{i:05d}" for i in range(per_shard)]
        members, copy = [], ReducedShardWriter(side)
        for row, key in enumerate(keys):
            image, caption = web_jpeg(rng, SETS[name]), f"a photo number {key}"
            members += [(f"{key}.jpg", image), (f"{key}.txt", caption.encode())]
            t0 = time.process_time()
            decoded = decode_image(image, "jpg", side)
            t1 = time.process_time()
            copy.add(Sample(out.originals[shard], key, image, "jpg", caption, None, row), decoded)
            out.decode_s, out.reduce_s = out.decode_s + t1 - t0, out.reduce_s + time.process_time() - t1
        data, small = tar_of(members), copy.tar_bytes()
        out.bytes_original, out.bytes_reduced = out.bytes_original + len(data), out.bytes_reduced + len(small)
        storage.write_bytes(out.originals[shard], data)
        storage.write_bytes(out.reduced[shard], small)
        out.keys.append(keys)
        print(f"  {name}: wrote shard {shard + 1}/{n_shards}", file=sys.stderr)
    return out


def write_tables(paths: RunPaths, keys_per_shard: list[list[str]], p: float) -> None:
    for index, keys in enumerate(keys_per_shard):
        table = ShardTable.from_keys(keys, np.full(len(keys), p, dtype=np.float32))
        storage.write_bytes(paths.shard_table(index), table.to_bytes())


def timed(batches: Iterable[object], n_batches: int, batch: int) -> tuple[float, float]:
    """(samples/s, CPU-s per sample) over ``n_batches`` batches (the first included: all fill buffers)."""
    start, cpu = time.perf_counter(), time.process_time()
    for i, _ in enumerate(batches):
        if i + 1 == n_batches:
            break
    n = n_batches * batch
    return n / (time.perf_counter() - start), (time.process_time() - cpu) / n


def ours(settings: StreamSettings, n_batches: int, batch: int, draft: bool,
         transform: Callable, tokenizer: Callable, on_device: bool = False) -> tuple[float, float]:
    """The trainer's loader; ``on_device``: its worker side with ``train.decode: device`` (no pixel decode)."""
    spec = EpochSpec(stream=settings, sampler_epoch=0, steps=range(n_batches), rank=0, world_size=1,
                     workers=0, batch_size=batch, draft=draft, decode_on_device=on_device)
    return timed(iter(EpochDataset(spec, transform, tokenizer)), n_batches, batch)


def _patch_open_clip_eof() -> None:
    # webdataset >= 0.2.96 ends every shard with an empty "EOF" dict that open_clip 3.3's
    # group_by_keys_nothrow cannot take (KeyError 'fname'; open_clip#935, webdataset#384). The
    # maintainers' fix is eof_value=None, applied here so open_clip's pipeline runs unchanged otherwise.
    import open_clip_train.data as oc_data
    from webdataset.tariterators import tar_file_expander

    oc_data.tar_file_expander = functools.partial(tar_file_expander, eof_value=None)


def open_clip_pipeline(pattern: str, n_samples: int, batch: int, transform: Callable,
                       tokenizer: Callable) -> tuple[float, float]:
    args = Namespace(train_data=pattern, val_data=None, dataset_resampled=False, train_num_samples=n_samples,
                     train_data_upsampling_factors=None, seed=0, batch_size=batch, world_size=1, workers=0)
    info = get_wds_dataset(args, transform, is_train=True, epoch=0, tokenizer=tokenizer)
    return timed(iter(info.dataloader), info.dataloader.num_batches, batch)


def breakdown(urls: tuple[str, ...], transform: Callable, tokenizer: Callable, limit: int) -> dict[str, float]:
    """CPU microseconds per sample of each step, open_clip-style (full decode), over ``limit`` samples."""
    crop, to_tensor = transform.transforms[0], transform.transforms[1:]
    stored = CaptionTokenizer(tokenizer)  # the reduced copies' BPE ids (the originals have none: it tokenises)
    totals = dict.fromkeys(("tar read", "decode", "crop/resize", "to-tensor", "to uint8", "tokenize",
                            "tokenize (stored ids)"), 0.0)
    n = 0
    for url in urls:
        samples = iter(iter_samples(url, None, SkipStats()))
        while n < limit:
            t0 = time.process_time()
            sample = next(samples, None)
            t1 = time.process_time()
            if sample is None:
                break
            img = decode_image(sample.image, sample.image_ext)
            t2 = time.process_time()
            img = crop(img)
            t3 = time.process_time()
            tensor = img
            for step in to_tensor:
                tensor = step(tensor)
            t4 = time.process_time()
            pil_to_tensor(img)  # what the trainer's workers send instead (normalised on the GPU)
            t4b = time.process_time()
            tokenizer([sample.caption])
            t5 = time.process_time()
            stored([sample.caption], [sample.bpe])
            t6 = time.process_time()
            for key, dt in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4b - t4, t5 - t4b, t6 - t5), strict=True):
                totals[key] += dt
            n += 1
    return {k: v / max(n, 1) * 1e6 for k, v in totals.items()}


def run_set(s: ShardSet, args: argparse.Namespace, transform: Callable, tokenizer: Callable) -> str:
    """All rounds for one image set; returns its summary line."""
    def settings(reduced: bool) -> StreamSettings:
        paths = RunPaths.for_run("s3://bench/work", s.name)
        write_tables(paths, s.keys, 1.0)
        return StreamSettings(s.originals, paths, None, seed=0, sample_seed=0, mode="cap", unknown_prob=0.5,
                              window=400, reduced=s.reduced if reduced else (), reduced_epochs=1 if reduced else 0)

    n_batches = s.n // args.batch
    pattern = f"{s.originals[0].rsplit('/', 1)[0]}/{{000..{len(s.originals) - 1:03d}}}.tar"
    runs: dict[str, Callable[[], tuple[float, float]]] = {
        "reduced": lambda: ours(settings(True), n_batches, args.batch, True, transform, tokenizer),
        "original": lambda: ours(settings(False), n_batches, args.batch, True, transform, tokenizer),
        "device": lambda: ours(settings(True), n_batches, args.batch, True, transform, tokenizer, on_device=True),
        "open_clip": lambda: open_clip_pipeline(pattern, s.n, args.batch, transform, tokenizer),
    }
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
    names = list(runs)
    for r in range(args.repeats):
        first = r % len(names)
        order = names[first:] + names[:first]  # alternate who goes first (caches, server warm-up)
        print(f"  {s.name}: round {r + 1}/{args.repeats} ({', '.join(order)})", file=sys.stderr)
        for name in order:
            results[name].append(runs[name]())
    rate = {k: statistics.median(x[0] for x in v) for k, v in results.items()}
    cpu = {k: statistics.median(x[1] for x in v) * 1e6 for k, v in results.items()}
    parts = [breakdown(urls, transform, tokenizer, min(s.n, 200)) for urls in (s.originals, s.reduced)]
    steps = ", ".join(f"{k} {a:.0f}/{b:.0f}" for k, a, b in zip(parts[0], parts[0].values(), parts[1].values(),
                                                                 strict=True))
    return (
        f"{s.name} set, {s.n} JPEGs ({s.bytes_original / s.n / 1024:.0f} KiB avg; reduced copies "
        f"{s.bytes_reduced / s.n / 1024:.1f} KiB = {s.bytes_reduced / s.bytes_original:.1%} extra storage, "
        f"{s.reduce_s / s.n * 1e3:.2f} ms/image resize+encode+BPE on top of embed's {s.decode_s / s.n * 1e3:.2f} ms "
        f"decode): samples/s/core (median of {args.repeats}) reduced {rate['reduced']:.0f}, original "
        f"{rate['original']:.0f}, open_clip {rate['open_clip']:.0f} -> reduced/open_clip "
        f"{rate['reduced'] / rate['open_clip']:.2f}x, original/open_clip {rate['original'] / rate['open_clip']:.2f}x"
        f" | CPU us/sample {cpu['reduced']:.0f} / {cpu['original']:.0f} / {cpu['open_clip']:.0f} | cores per "
        f"H100 at {GPU_NEED}/s: {math.ceil(GPU_NEED / rate['reduced'])} / {math.ceil(GPU_NEED / rate['original'])}"
        f" / {math.ceil(GPU_NEED / rate['open_clip'])} | decode on device (worker side, reduced copies): "
        f"{rate['device']:.0f} samples/s/core = {rate['device'] / rate['open_clip']:.1f}x open_clip, CPU us/sample "
        f"{cpu['device']:.0f}, cores per H100 {math.ceil(GPU_NEED / rate['device'])}"
        f" | open_clip-style us/sample original/reduced: {steps}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--per-shard", type=int, default=200)
    ap.add_argument("--resolution", type=int, default=112)
    ap.add_argument("--short-side", type=int, default=128, help="reduced copies' short side")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)

    server = start_moto_server()
    os.environ.update({"AWS_ENDPOINT_URL": server.endpoint_url, "AWS_ACCESS_KEY_ID": "bench",
                       "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})
    try:
        storage.s3_client().create_bucket(Bucket="bench")
        sets = [write_shards("s3://bench", name, args.shards, args.per_shard, args.short_side, seed=i)
                for i, name in enumerate(args.sets)]
        register_s3_handler(None)
        _patch_open_clip_eof()
        # ViT-B-16's preprocessing (OpenAI mean/std, bicubic) at the benchmark's size, without building it.
        pp = open_clip.transform.PreprocessCfg(size=args.resolution)
        transform = open_clip.transform.image_transform_v2(
            pp, is_train=True, aug_cfg=open_clip.transform.AugmentationCfg(scale=SCALE))
        tokenizer = open_clip.get_tokenizer("ViT-B-16", context_length=CONTEXT)
        lines = [run_set(s, args, transform, tokenizer) for s in sets]
    finally:
        server.stop()
    print(f"loader {args.resolution}px, 1 core, reduced short side {args.short_side}: " + " || ".join(lines))


if __name__ == "__main__":
    main()
