"""Per-epoch sampling decisions for N samples: per-shard tables vs the reference's global JSON dict.

Setup (not timed): N keys in ``--shards`` shards, each sample in one of K long-tailed (Zipf) clusters,
p_c from the scale step (alpha=0.2, budget=0.5). Written once as one ``.npz`` ShardTable per shard and
as the reference's single ``{__key__: p}`` JSON file.

Each approach then runs one epoch in its own subprocess (so its peak RSS, VmHWM, is its own) the way a
data-loader worker would see the data: shard after shard, key after key.

* ``tables``: load the shard's table, decide the whole shard with ``uses`` (vectorised);
* ``tables-per-sample``: same tables, one ``use_count`` call per sample (a streaming loader);
* ``reference``: parse the JSON (orjson if installed, as the reference does; else json) into one dict,
  then ``random.random() < d.get(key, 0.5)`` per sample.

    .venv/bin/python benchmarks/bench_sampler.py [--n 10000000] [--shards 1000] [--k 50000]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dynamics.core.sampler import ShardTable, iter_ref_json, use_count, uses
from dynamics.core.scaling import cluster_probs, cluster_targets, counts_from_labels

SEED, EPOCH = 42, 0
APPROACHES = ("tables", "tables-per-sample", "reference")


def shard_keys(shard: int, per_shard: int) -> list[str]:
    """The ``__key__`` values of one shard, as a webdataset reader would yield them."""
    return [f"{shard:06d}{i:05d}" for i in range(per_shard)]


def table_path(root: Path, shard: int) -> Path:
    return root / f"{shard:08d}.npz"


def maxrss_mib() -> float:
    """Peak resident memory of this process so far, MiB.

    VmHWM belongs to the process image and restarts at exec; ``ru_maxrss`` would also carry the
    parent's peak from before the fork, which here is the whole benchmark setup.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def build(root: Path, n: int, shards: int, k: int, seed: int) -> float:
    """Write the tables and the reference JSON; return the expected kept count (cap mode)."""
    rng = np.random.default_rng(seed)
    w = rng.permutation(1.0 / np.arange(1, k + 1))
    cdf = np.cumsum(w / w.sum())
    cdf[-1] = 1.0
    labels = np.searchsorted(cdf, rng.random(n), side="right")
    sizes = counts_from_labels(labels, k)
    p_sample = cluster_probs(sizes, cluster_targets(sizes, 0.2, 0.5))[labels]
    per_shard = n // shards
    for s in range(shards):
        rows = slice(s * per_shard, (s + 1) * per_shard)
        table = ShardTable.from_keys(shard_keys(s, per_shard), p_sample[rows].astype(np.float32))
        table_path(root, s).write_bytes(table.to_bytes())
    all_keys = (key for s in range(shards) for key in shard_keys(s, per_shard))
    with (root / "ref.json").open("wb") as f:
        for chunk in iter_ref_json(all_keys, p_sample[: shards * per_shard].tolist()):
            f.write(chunk)
    return float(np.minimum(p_sample[: shards * per_shard], 1.0).sum())


def run_tables(root: Path, shards: int, per_shard: int, per_sample: bool) -> int:
    kept = 0
    for s in range(shards):
        table = ShardTable.from_bytes(table_path(root, s).read_bytes())
        keys = shard_keys(s, per_shard)
        if per_sample:
            kept += sum(use_count(table, key, seed=SEED, epoch=EPOCH, shard_index=s) for key in keys)
        else:
            kept += int(uses(table, keys, seed=SEED, epoch=EPOCH, shard_index=s).sum())
    return kept


def run_reference(root: Path, shards: int, per_shard: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    data = (root / "ref.json").read_bytes()
    try:
        import orjson

        probs = orjson.loads(data)
    except ImportError:
        probs = json.loads(data)
    del data
    t_load = time.perf_counter() - t0
    rng = random.Random(SEED)  # the reference draws from a stateful RNG per read
    kept = 0
    for s in range(shards):
        for key in shard_keys(s, per_shard):
            kept += rng.random() < probs.get(key, 0.5)
    return kept, t_load


def child(approach: str, root: Path, shards: int, per_shard: int) -> None:
    """Run one approach for one epoch and print a JSON result line."""
    base = maxrss_mib()
    t0 = time.perf_counter()
    t_load = 0.0
    if approach == "reference":
        kept, t_load = run_reference(root, shards, per_shard)
    else:
        kept = run_tables(root, shards, per_shard, per_sample=approach == "tables-per-sample")
    seconds = time.perf_counter() - t0
    print(json.dumps({"kept": kept, "seconds": seconds, "load": t_load, "base": base, "peak": maxrss_mib()}))


def spawn(approach: str, root: Path, shards: int, per_shard: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", approach, "--dir", str(root)]
    cmd += ["--shards", str(shards), "--per-shard", str(per_shard)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--shards", type=int, default=1000)
    ap.add_argument("--k", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", choices=APPROACHES)
    ap.add_argument("--dir", type=Path)
    ap.add_argument("--per-shard", type=int)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.dir, args.shards, args.per_shard)
        return

    per_shard = args.n // args.shards
    with tempfile.TemporaryDirectory(prefix="bench_sampler_") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        expected = build(root, args.n, args.shards, args.k, args.seed)
        json_mib = (root / "ref.json").stat().st_size / 2**20
        print(f"setup {time.perf_counter() - t0:.1f} s, JSON {json_mib:.0f} MiB", file=sys.stderr)
        res = {a: spawn(a, root, args.shards, per_shard) for a in APPROACHES}
    for a, r in res.items():
        print(f"{a}: {r}", file=sys.stderr)
    t, ps, ref = res["tables"], res["tables-per-sample"], res["reference"]
    n = args.shards * per_shard
    print(
        f"sampling epoch N={n:,} ({args.shards} shards, K={args.k:,}; expected kept {expected:,.0f}): "
        f"per-shard tables {t['seconds']:.1f} s, peak RSS {t['peak']:.0f} MiB "
        f"(+{t['peak'] - t['base']:.0f} over imports), kept {t['kept']:,}; "
        f"per-sample use_count {ps['seconds']:.1f} s, +{ps['peak'] - ps['base']:.0f} MiB | "
        f"reference JSON dict {ref['seconds']:.1f} s (parse {ref['load']:.1f} s), peak RSS {ref['peak']:.0f} MiB "
        f"(+{ref['peak'] - ref['base']:.0f}), kept {ref['kept']:,}"
    )


if __name__ == "__main__":
    main()
