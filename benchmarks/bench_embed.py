"""Embed throughput (images/s) on this machine's CPU, streaming webdataset shards from a moto S3 server.

Backends: ``pixels`` (the quickstart's) and a small ViT (open_clip ViT-S-32 image tower, random weights,
224 px) -- DINOv2 ViT-B/14 itself needs a GPU to be practical; see README's GPU section.

    python benchmarks/bench_embed.py [--images 1536] [--workers 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from s3server import start_moto_server

from dynamics.demo import generate_demo_data
from dynamics.spec.loader import validate
from dynamics.stages.embed.run import embed_part
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths


def _spec(workdir: str, pattern: str, n: int, backend: dict, workers: int):
    return validate({
        "name": "bench", "storage": {"workdir": workdir}, "data": {"shards": pattern, "approxSamples": n},
        "embed": {**backend, "gpusPerPod": 0, "shardsPerPart": 1000, "workers": workers, "batchSize": 64},
        "cluster": {"k": 2, "trainSamples": 2},
        "train": {"modelConfig": {"embed_dim": 8, "vision_cfg": {"patch_size": 8},
                                  "text_cfg": {"context_length": 8, "width": 8, "heads": 1, "layers": 1}},
                  "nodes": 1, "gpusPerNode": 0,
                  "procsPerNode": 1, "workers": 1,
                  "phases": [{"name": "p", "resolution": 32, "samples": 1, "batchPerGpu": 1, "lr": 0.1}]},
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1536)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pixels-only", action="store_true", help="skip the ViT backend (quick checks)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    server = start_moto_server()
    os.environ.update(AWS_ENDPOINT_URL=server.endpoint_url, AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    try:
        storage.s3_client().create_bucket(Bucket="bench")
        manifest = generate_demo_data("s3://bench/data", seed=0, n_train=args.images, shard_size=256,
                                      image_size=256, n_eval_per_class=1)
        pattern = manifest["train"]["pattern"]
        results = []
        for label, backend in (("pixels", {"backend": "pixels"}),
                               ("open_clip ViT-S-32 @224", {"backend": "open_clip", "model": "ViT-S-32"})
                               )[:1 if args.pixels_only else 2]:
            spec = _spec(f"s3://bench/runs/{label.split()[0]}", pattern, args.images, backend, args.workers)
            start = time.perf_counter()
            embed_part(spec, RunPaths.for_run(spec.storage.workdir, spec.name), 0, storage.StorageConfig())
            results.append((label, args.images / (time.perf_counter() - start)))
        print(f"embed from S3 on {os.cpu_count()} CPU cores, {args.images} JPEGs 256px, workers={args.workers}: "
              + "; ".join(f"{label}: {rate:.0f} images/s" for label, rate in results))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
