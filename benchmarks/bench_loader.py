"""Training loader cost per CPU core: S3 shard -> decode -> RandomResizedCrop 112 -> tensor + tokens.

Compares, on the same samples in a moto S3 server on loopback, the trainer's loader
(:class:`dynamics.stages.train.data.EpochDataset`: DynamiCS sampling, shuffle window, crop-aware
reduced-scale JPEG decode, open_clip's train transform, tokenizer) on the original shards and on the
reduced copies the embed stage writes (``embed.reducedShards``, made here with the embed stage's own
writer at the faithful size of :func:`dynamics.spec.reduced.required_short_side`), at p = 1 and at
p = the recipe's budget (0.5: half the samples are read and dropped, and that reading is charged to
the kept ones); the worker side of ``train.decode: device`` (no pixel decode: it happens on the GPU and
is not timed here); and open_clip's ``open_clip_train.data.get_wds_dataset`` on the originals.

How it counts, so that a skeptic can accept the ratios:

- whole batches only: every pipeline delivers the same ``batches x batch`` samples per round (the shard
  sizes are a multiple of the batch), and a counter on each transform checks that exactly that many
  images were decoded (open_clip is credited with what it decodes, no partial batches);
- one untimed warm-up round, then ``--repeats`` rounds, the pipelines' order rotated each round;
- CPU time (``time.process_time`` of this process: every pipeline runs here with ``workers=0`` and one
  torch thread; the moto server is another process) per delivered sample; ratios are paired per round
  (open_clip's CPU-s per sample / the pipeline's, same round) and reported as median (min-max).

It prints one line (progress on stderr); ``--markdown FILE`` also writes the tables that
``benchmarks/README.md`` and ``README.md`` quote.

    python benchmarks/bench_loader.py [--sets web 384] [--shards 2] [--per-shard 768] [--repeats 7] [--markdown F]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
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
from dynamics.spec.reduced import required_short_side
from dynamics.stages.embed.reduced import ReducedShardWriter
from dynamics.stages.train.data import EpochDataset, EpochSpec
from dynamics.stages.train.decode import TrainImageTransform
from dynamics.stages.train.gpu_decode import Crop
from dynamics.stages.train.stream import StreamSettings
from dynamics.stages.train.tokens import CaptionTokenizer
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths
from dynamics.storage.shards import Sample, SkipStats, decode_image, iter_samples
from dynamics.storage.wds_s3 import register_s3_handler

# web: 512-1024 px per side (~89 KiB); 384: DataComp-like, resized to 384 px-class sizes (~33 KiB).
SETS = {"web": ((512, 384), (640, 480), (800, 600), (1024, 768), (384, 512), (768, 1024)),
        "384": ((384, 384), (384, 288), (288, 384), (512, 384), (384, 512))}
CONTEXT = 32
SCALE = (0.4, 1.0)
GPU_NEED = 2600  # samples/s one H100 consumes at 112 px in the reference recipe
BUDGET = 0.5  # the recipe's sample.budget: the share of samples an epoch keeps


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


class CountingTransform(TrainImageTransform):
    """The trainer's transform, counting the images it decodes (or boxes it draws for the device)."""

    def __init__(self, transform: Callable) -> None:
        super().__init__(transform)
        self.count = 0

    def __call__(self, data: bytes, ext: str) -> torch.Tensor:
        self.count += 1
        return super().__call__(data, ext)

    def for_device(self, data: bytes, ext: str) -> tuple[bytes | torch.Tensor, Crop | None]:
        self.count += 1
        return super().for_device(data, ext)


@dataclass
class Counting:
    """open_clip's transform, counting the images it is given."""

    transform: Callable
    count: int = 0

    def __call__(self, image: Image.Image) -> torch.Tensor:
        self.count += 1
        return self.transform(image)


def consume(batches: Iterable[object], n_batches: int) -> int:
    """Take ``n_batches`` batches; returns how many there were (a short pipeline is an error)."""
    taken = 0
    for _ in batches:
        taken += 1
        if taken == n_batches:
            break
    return taken


def ours(settings: StreamSettings, n_batches: int, batch: int, transform: CountingTransform,
         tokenizer: Callable, on_device: bool = False) -> int:
    """The trainer's loader (``on_device``: its worker side with ``train.decode: device``); returns images decoded."""
    transform.count = 0
    spec = EpochSpec(stream=settings, sampler_epoch=0, steps=range(n_batches), rank=0, world_size=1,
                     workers=0, batch_size=batch, decode_on_device=on_device)
    assert consume(iter(EpochDataset(spec, transform, tokenizer)), n_batches) == n_batches
    return transform.count


def _patch_open_clip_eof() -> None:
    # webdataset >= 0.2.96 ends every shard with an empty "EOF" dict that open_clip 3.3's
    # group_by_keys_nothrow cannot take (KeyError 'fname'; open_clip#935, webdataset#384). The
    # maintainers' fix is eof_value=None, applied here so open_clip's pipeline runs unchanged otherwise.
    import open_clip_train.data as oc_data
    from webdataset.tariterators import tar_file_expander

    oc_data.tar_file_expander = functools.partial(tar_file_expander, eof_value=None)


def open_clip_pipeline(pattern: str, n_samples: int, batch: int, transform: Counting,
                       tokenizer: Callable) -> int:
    """open_clip's training loader over ``n_samples`` (a multiple of ``batch``); returns images decoded."""
    transform.count = 0
    args = Namespace(train_data=pattern, val_data=None, dataset_resampled=False, train_num_samples=n_samples,
                     train_data_upsampling_factors=None, seed=0, batch_size=batch, world_size=1, workers=0)
    info = get_wds_dataset(args, transform, is_train=True, epoch=0, tokenizer=tokenizer)
    assert info.dataloader.num_batches == n_samples // batch
    assert consume(iter(info.dataloader), info.dataloader.num_batches) == n_samples // batch
    return transform.count


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


@dataclass(frozen=True)
class Pipeline:
    """One row of the comparison."""

    key: str
    label: str
    reduced: bool = False
    p: float = 1.0
    device: bool = False


PIPELINES = (
    Pipeline("reduced", "dynamics, reduced copies (phase 1)", reduced=True),
    Pipeline("reduced_budget", f"dynamics, reduced copies, p = {BUDGET} (dropped samples' reads charged)",
             reduced=True, p=BUDGET),
    Pipeline("device", "dynamics, reduced copies, `decode: device` (worker side)", reduced=True, device=True),
    Pipeline("original", "dynamics, originals"),
    Pipeline("open_clip", "open_clip `get_wds_dataset`, originals"),
)


@dataclass
class Row:
    """A pipeline's paired results over the timed rounds."""

    pipeline: Pipeline
    cpu: list[float]  # CPU-s per delivered sample, per round
    ratio: list[float]  # open_clip's CPU per sample / this one's, same round

    @property
    def us(self) -> float:
        return statistics.median(self.cpu) * 1e6

    @property
    def rate(self) -> float:
        """Samples per CPU-second (per core)."""
        return 1e6 / self.us

    @property
    def cores(self) -> int:
        return math.ceil(GPU_NEED * self.us / 1e6)

    def ratio_text(self) -> str:
        return f"{statistics.median(self.ratio):.2f}x ({min(self.ratio):.2f}-{max(self.ratio):.2f})"


def run_set(s: ShardSet, args: argparse.Namespace, transform: Callable, tokenizer: Callable) -> list[Row]:
    """Warm-up and timed rounds of every pipeline on one image set."""
    def settings(pipe: Pipeline) -> StreamSettings:
        paths = RunPaths.for_run("s3://bench/work", f"{s.name}-p{round(pipe.p * 100)}")
        write_tables(paths, s.keys, pipe.p)
        return StreamSettings(s.originals, paths, None, seed=0, sample_seed=0, mode="cap", unknown_prob=0.5,
                              window=min(400, s.n), reduced=s.reduced if pipe.reduced else (),
                              reduced_epochs=1 if pipe.reduced else 0)

    if s.n % args.batch:
        raise SystemExit(f"shards x per-shard ({s.n}) must be a multiple of --batch {args.batch}: whole batches only")
    n_batches = s.n // args.batch
    pattern = f"{s.originals[0].rsplit('/', 1)[0]}/{{000..{len(s.originals) - 1:03d}}}.tar"
    ours_tf, oc_tf = CountingTransform(transform), Counting(transform)
    streams = {p.key: settings(p) for p in PIPELINES}  # tables written before any timing

    def run(pipe: Pipeline) -> float:
        """CPU-s per delivered sample of one run (checked: it decoded exactly what it delivered)."""
        start = time.process_time()
        if pipe.key == "open_clip":
            decoded = open_clip_pipeline(pattern, s.n, args.batch, oc_tf, tokenizer)
        else:
            decoded = ours(streams[pipe.key], n_batches, args.batch, ours_tf, tokenizer, on_device=pipe.device)
        cpu = time.process_time() - start
        if decoded != n_batches * args.batch:
            raise SystemExit(f"{pipe.key} decoded {decoded} images for {n_batches * args.batch} delivered")
        return cpu / decoded

    cpu: dict[str, list[float]] = {p.key: [] for p in PIPELINES}
    for r in range(args.repeats + 1):
        first = r % len(PIPELINES)
        order = PIPELINES[first:] + PIPELINES[:first]  # rotate who goes first (caches, server warm-up)
        print(f"  {s.name}: {'warm-up' if r == 0 else f'round {r}/{args.repeats}'} "
              f"({', '.join(p.key for p in order)})", file=sys.stderr)
        times = {p.key: run(p) for p in order}
        if r:  # round 0 warms caches, imports and the server up
            for key, value in times.items():
                cpu[key].append(value)
    base = cpu["open_clip"]
    return [Row(p, cpu[p.key], [b / c for b, c in zip(base, cpu[p.key], strict=True)]) for p in PIPELINES]


def summary(s: ShardSet, rows: list[Row], parts: list[dict[str, float]], side: int) -> str:
    """One image set's part of the printed line."""
    steps = ", ".join(f"{k} {a:.0f}/{b:.0f}" for k, a, b in zip(parts[0], parts[0].values(), parts[1].values(),
                                                                 strict=True))
    results = "; ".join(f"{r.pipeline.key} {r.rate:.0f}/s/core ({r.us:.0f} CPU-us/sample) = {r.ratio_text()} "
                        f"open_clip, {r.cores} cores/H100" for r in rows)
    return (f"{s.name} set, {s.n} JPEGs ({s.bytes_original / s.n / 1024:.1f} KiB avg; copies at short side {side} "
            f"{s.bytes_reduced / s.n / 1024:.1f} KiB = {s.bytes_reduced / s.bytes_original:.1%} extra storage, "
            f"{s.reduce_s / s.n * 1e3:.2f} ms/image resize+encode+BPE on top of embed's {s.decode_s / s.n * 1e3:.2f}"
            f" ms decode): {results} | open_clip-style us/sample original/reduced: {steps}")


def markdown(sets: list[tuple[ShardSet, list[Row]]], header: str, side: int, repeats: int) -> str:
    """The tables benchmarks/README.md quotes."""
    out = [header, "", f"| image set | pipeline | samples/s per core | CPU us / sample | vs open_clip, median "
           f"(min-max) of {repeats} paired rounds | cores per H100 at {GPU_NEED:,}/s |",
           "| --- | --- | ---: | ---: | ---: | ---: |"]
    for s, rows in sets:
        name = f"{s.name}, {s.bytes_original / s.n / 1024:.0f} KiB (copies {s.bytes_reduced / s.n / 1024:.1f} KiB)"
        for i, r in enumerate(rows):
            out.append(f"| {name if i == 0 else ''} | {r.pipeline.label} | {r.rate:,.0f} | {r.us:,.0f} | "
                       f"{r.ratio_text()} | {r.cores} |")
    out.append("")
    out.append(f"Copies' short side {side} px (faithful size for the benchmark's crop).")
    return "\n".join(out) + "\n"


def machine() -> str:
    """CPU model, core count, load average and date, for the record."""
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{model}, {os.cpu_count()} CPUs, load average {load}, {now}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    # Per-shard costs (the shard's GET, its sampling table's GET and parse: ~10 ms of CPU with moto, which
    # closes every connection) are paid once per shard; DataComp-style shards hold ~10,000 samples. 768 per
    # shard keeps them at the ~1% a real shard would show while a round stays short.
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--per-shard", type=int, default=768)
    ap.add_argument("--resolution", type=int, default=112)
    ap.add_argument("--short-side", type=int, default=None,
                    help="reduced copies' short side (default: the faithful size for --resolution and the crop scale)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds (after one warm-up round)")
    ap.add_argument("--markdown", type=Path, help="also write the result tables (markdown) here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    side = args.short_side or required_short_side(args.resolution, SCALE[0])
    before = machine()

    server = start_moto_server()
    os.environ.update({"AWS_ENDPOINT_URL": server.endpoint_url, "AWS_ACCESS_KEY_ID": "bench",
                       "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})
    try:
        storage.s3_client().create_bucket(Bucket="bench")
        sets = [write_shards("s3://bench", name, args.shards, args.per_shard, side, seed=i)
                for i, name in enumerate(args.sets)]
        register_s3_handler(None)
        _patch_open_clip_eof()
        # ViT-B-16's preprocessing (OpenAI mean/std, bicubic) at the benchmark's size, without building it.
        pp = open_clip.transform.PreprocessCfg(size=args.resolution)
        transform = open_clip.transform.image_transform_v2(
            pp, is_train=True, aug_cfg=open_clip.transform.AugmentationCfg(scale=SCALE))
        tokenizer = open_clip.get_tokenizer("ViT-B-16", context_length=CONTEXT)
        results = [(s, run_set(s, args, transform, tokenizer)) for s in sets]
        parts = [[breakdown(urls, transform, tokenizer, min(s.n, 200)) for urls in (s.originals, s.reduced)]
                 for s, _ in results]
    finally:
        server.stop()
    header = (f"loader {args.resolution}px, crop scale {SCALE}, 1 core (CPU time), batch {args.batch}, "
              f"{args.repeats} paired rounds after a warm-up; {before} -> load {os.getloadavg()[0]:.1f} at the end")
    if args.markdown:
        args.markdown.write_text(markdown(results, header, side, args.repeats))
    print(header + ": " + " || ".join(summary(s, rows, p, side) for (s, rows), p in zip(results, parts, strict=True)))


if __name__ == "__main__":
    main()
