"""``dynamics stage scale``: sizes -> probabilities, per-shard tables, report and plot (single-pod Job).

scale: cluster sizes -> per-cluster probabilities -> per-shard tables for the trainer, report, plot.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence

import numpy as np

from dynamics.core.diagnostics import sampling_diagnostics
from dynamics.core.sampler import ShardTable
from dynamics.core.scaling import cluster_probs, cluster_targets, expected_counts, scale_report
from dynamics.spec.checks import embed_parts
from dynamics.spec.model import RunSpec
from dynamics.stages.common import context_from_args, stage_parser
from dynamics.stages.inputs import read_keys, require
from dynamics.stages.scale.classes import shard_class_report
from dynamics.stages.scale.plot import size_plot_png
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths

log = logging.getLogger("dynamics.scale")


def cluster_sizes(spec: RunSpec, paths: RunPaths, cfg: storage.StorageConfig) -> np.ndarray:
    """n_c summed over every assign part's counts (all parts must be assigned)."""
    parts = range(embed_parts(spec))
    require([paths.assign_marker(i) for i in parts], "assign", cfg)
    sizes = None
    for i in parts:
        counts = storage.read_npy(paths.assign_counts(i), cfg).astype(np.int64)
        sizes = counts if sizes is None else sizes + counts
    assert sizes is not None
    return sizes


def _table(keys: list[str], labels: np.ndarray, probs: np.ndarray) -> bytes:
    return ShardTable.from_keys(keys, probs[labels].astype(np.float32), clusters=labels).to_bytes()


def _write_shard_tables(spec: RunSpec, paths: RunPaths, probs: np.ndarray, cfg: storage.StorageConfig) -> int:
    """Write one table per shard: its keys with their cluster and probability; returns how many.

    Parts are contiguous shard slices with rows in (shard, row) order, so each shard is one run of
    rows of one part: tables are written as each part is read, never all held at once.
    """
    written: set[int] = set()
    for part in range(embed_parts(spec)):
        shard_index, keys = read_keys(paths, part, cfg)
        labels = storage.read_npy(paths.assign_labels(part), cfg)
        starts = np.flatnonzero(np.r_[True, shard_index[1:] != shard_index[:-1]]) if len(keys) else []
        bounds = [*map(int, starts), len(keys)]
        for lo, hi in itertools.pairwise(bounds):
            shard = int(shard_index[lo])
            storage.write_bytes(paths.shard_table(shard), _table(keys[lo:hi], labels[lo:hi], probs), cfg)
            written.add(shard)
    # Shards with no embedded sample (all corrupt, or empty) still get a table: an empty one.
    empty = _table([], np.zeros(0, np.int32), probs)
    for shard in sorted(set(range(spec.n_shards)) - written):
        storage.write_bytes(paths.shard_table(shard), empty, cfg)
    return spec.n_shards


def scale_stage(spec: RunSpec, paths: RunPaths, cfg: storage.StorageConfig) -> bool:
    """Compute and commit sizes, p_c, report, plot and per-shard tables; False when already complete."""
    if storage.exists(paths.scale_marker, cfg):
        log.info("scale already complete (%s exists); nothing to do", paths.scale_marker)
        return False
    s = spec.sample
    sizes = cluster_sizes(spec, paths, cfg)
    targets = cluster_targets(sizes, s.alpha, s.budget)
    probs = cluster_probs(sizes, targets, s.decimals)
    report = scale_report(sizes, probs, budget=s.budget, alpha=s.alpha, mode=s.mode.value)
    report["diagnostics"] = sampling_diagnostics(sizes, expected_counts(sizes, probs, s.mode.value))
    if s.class_report:
        report["classes"] = shard_class_report(spec, paths, probs, cfg)
    log.info("N=%d in %d clusters, T=%.0f: expected %.0f samples per epoch, %d clusters at p >= 1",
             report["N"], report["K_nonempty"], report["T"], report["expected_per_epoch"],
             report["clusters_p_ge_1"])
    storage.write_npy(paths.sizes, sizes, cfg)
    storage.write_npy(paths.probs, probs, cfg)
    storage.write_json(paths.report, report, cfg)
    storage.write_bytes(paths.plot, size_plot_png(sizes, probs, s.mode.value, s.alpha, s.budget), cfg)
    n_tables = _write_shard_tables(spec, paths, probs, cfg)
    storage.write_marker(paths.scale_marker, {"N": report["N"], "clusters": int(sizes.size),
                                              "shards": n_tables}, cfg)
    return True


def main(argv: Sequence[str]) -> int:
    """Compute the sampling probabilities; a complete scale step is skipped."""
    parser = stage_parser("scale", "Turn cluster sizes into per-cluster sampling probabilities and write the "
                          "per-shard tables the trainer reads.")
    ctx = context_from_args(parser.parse_args(list(argv)))

    scale_stage(ctx.spec, ctx.paths, ctx.storage)
    return 0
