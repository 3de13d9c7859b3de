"""The whole scale stage: sizes -> p_c -> report -> plot -> EVERY per-shard table written (target: < 60 s of CPU).

Synthetic assign outputs (keys parquet, labels, counts, markers) for N samples in shards of
``--shard-size`` keys are written to a local workdir first (not timed); then ``scale_stage`` runs as the
Job would and is timed, wall and CPU (all threads). It also times building one part's tables the old way
(a ``ShardTable`` of Python strings per shard) against the Arrow/numpy writer and checks the bytes match.

    .venv/bin/python benchmarks/bench_scale.py [--n 13000000] [--k 50000] [--shard-size 10000]
"""

from __future__ import annotations

import argparse
import io
import itertools
import shutil
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dynamics.constants import Stage
from dynamics.core.sampler import ShardTable
from dynamics.spec.checks import embed_parts
from dynamics.spec.fingerprint import run_paths
from dynamics.spec.loader import validate
from dynamics.stages.inputs import marker
from dynamics.stages.scale.main import scale_stage
from dynamics.stages.scale.tables import part_tables, read_part_keys
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths


def zipf_probs(k: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Long-tailed cluster shares ~ rank^-exponent, in a random cluster order."""
    w = 1.0 / np.arange(1, k + 1, dtype=np.float64) ** exponent
    return rng.permutation(w / w.sum())


def bench_spec(workdir: str, shards: int, shard_size: int, shards_per_part: int):
    """A run spec whose data pattern has ``shards`` shards (the data itself is never read)."""
    return validate({
        "name": "bench", "storage": {"workdir": workdir},
        "data": {"shards": f"s3://none/{{00000000..{shards - 1:08d}}}.tar", "approxSamples": shards * shard_size},
        "embed": {"backend": "pixels", "gpusPerPod": 0, "shardsPerPart": shards_per_part},
        "cluster": {"k": 2, "trainSamples": 2},
        "train": {"modelConfig": {"embed_dim": 8, "vision_cfg": {"patch_size": 8},
                                  "text_cfg": {"context_length": 8, "width": 8, "heads": 1, "layers": 1}},
                  "nodes": 1, "gpusPerNode": 0, "procsPerNode": 1, "workers": 1,
                  "phases": [{"name": "p", "resolution": 32, "samples": 1, "batchPerGpu": 1, "lr": 0.1}]},
    })


def write_inputs(spec, paths: RunPaths, args: argparse.Namespace, rng: np.random.Generator) -> None:
    """Assign outputs as the assign stage leaves them, per part (contiguous shard slices)."""
    cdf = np.cumsum(zipf_probs(args.k, args.zipf, rng))
    cdf[-1] = 1.0
    per_part = spec.embed.shards_per_part
    for part in range(embed_parts(spec)):
        shards = range(part * per_part, min(spec.n_shards, (part + 1) * per_part))
        shard_index = np.repeat(np.array(shards, dtype=np.int32), args.shard_size)
        keys = [f"{s:08d}/{r:05d}" for s in shards for r in range(args.shard_size)]
        buf = io.BytesIO()
        pq.write_table(pa.table({"shard_index": shard_index, "key": pa.array(keys, pa.string())}), buf)
        storage.write_bytes(paths.embed_keys(part), buf.getvalue())
        labels = np.searchsorted(cdf, rng.random(len(keys)), side="right").astype(np.int32)
        storage.write_npy(paths.assign_labels(part), labels)
        storage.write_npy(paths.assign_counts(part), np.bincount(labels, minlength=args.k).astype(np.int64))
        storage.write_marker(paths.assign_marker(part), marker(spec, Stage.ASSIGN, rows=len(keys), clusters=args.k))


def old_vs_new(paths: RunPaths, probs: np.ndarray) -> tuple[float, float, bool]:
    """Seconds to build part 0's tables per-key (old) and from arrays (new); bytes identical?"""
    shard_index, offsets, data = read_part_keys(paths, 0, storage.StorageConfig())
    labels = storage.read_npy(paths.assign_labels(0))
    t0 = time.perf_counter()
    new = part_tables(shard_index, offsets, data, labels, probs.astype(np.float32))
    t_new = time.perf_counter() - t0
    keys = pq.read_table(io.BytesIO(storage.read_bytes(paths.embed_keys(0))), columns=["key"]).column("key").to_pylist()
    t0 = time.perf_counter()
    bounds = [*np.flatnonzero(np.r_[True, shard_index[1:] != shard_index[:-1]]).tolist(), len(keys)]
    old = [ShardTable.from_keys(keys[lo:hi], probs[labels[lo:hi]].astype(np.float32),
                                clusters=labels[lo:hi]).to_bytes() for lo, hi in itertools.pairwise(bounds)]
    t_old = time.perf_counter() - t0
    return t_old, t_new, old == [b for _, b in new]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=13_000_000)
    ap.add_argument("--k", type=int, default=50_000)
    ap.add_argument("--shard-size", type=int, default=10_000)
    ap.add_argument("--shards-per-part", type=int, default=100)
    ap.add_argument("--zipf", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None, help="local directory (default: a temporary one)")
    args = ap.parse_args()
    shards = max(1, args.n // args.shard_size)
    root = args.workdir or tempfile.mkdtemp(prefix="bench-scale-")
    try:
        spec = bench_spec(root, shards, args.shard_size, args.shards_per_part)
        paths = run_paths(spec)
        write_inputs(spec, paths, args, np.random.default_rng(args.seed))
        print(f"inputs written under {root}", file=sys.stderr)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        scale_stage(spec, paths, storage.StorageConfig())
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        report = storage.read_json(paths.report)
        t_old, t_new, same = old_vs_new(paths, storage.read_npy(paths.probs))
        n = shards * args.shard_size
        print(f"scale stage N={n:,} K={args.k:,} {shards:,} shards (all tables written, local disk): "
              f"{wall:.1f} s wall, {cpu:.1f} CPU-s -> x{130e6 / n:.0f} to 130M: ~{cpu * 130e6 / n:.0f} CPU-s "
              f"vs target 60 | part 0 tables: per-key ShardTable {t_old:.2f} s vs arrays {t_new:.2f} s "
              f"({t_old / max(t_new, 1e-9):.1f}x), bytes identical: {same} | "
              f"E[samples/epoch] {report['expected_per_epoch']:,.0f}")
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
