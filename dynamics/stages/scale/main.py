"""``dynamics stage scale``: sizes -> probabilities, per-shard tables, report and plot (single-pod Job).

scale: cluster sizes -> per-cluster probabilities -> per-shard tables for the trainer, report, plot.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from dynamics.constants import Stage
from dynamics.core.diagnostics import sampling_diagnostics
from dynamics.core.scaling import cluster_probs, cluster_targets, expected_counts, scale_report
from dynamics.errors import DynamicsError
from dynamics.spec.checks import embed_parts
from dynamics.spec.model import RunSpec
from dynamics.stages.common import context_from_args, stage_parser
from dynamics.stages.inputs import already_done, marker, require_stage
from dynamics.stages.scale.classes import shard_class_report
from dynamics.stages.scale.plot import size_plot_png
from dynamics.stages.scale.tables import write_shard_tables
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths

log = logging.getLogger("dynamics.scale")


def cluster_sizes(spec: RunSpec, paths: RunPaths, cfg: storage.StorageConfig) -> np.ndarray:
    """n_c summed over every assign part's counts (all parts must be assigned)."""
    parts = range(embed_parts(spec))
    require_stage(spec, Stage.ASSIGN, [paths.assign_marker(i) for i in parts], cfg)
    sizes = None
    for i in parts:
        counts = storage.read_npy(paths.assign_counts(i), cfg).astype(np.int64)
        sizes = counts if sizes is None else sizes + counts
    assert sizes is not None
    return sizes


def refuse_empty_epoch(report: dict, decimals: int) -> None:
    """An epoch expected to hold no sample would only fail later, in the trainer: refuse it now."""
    expected = float(report["expected_per_epoch"])
    if expected >= 1:
        return
    raise DynamicsError(
        f"sample.budget {report['budget']} gives an empty epoch: T = {report['T']:.3g} samples over "
        f"{report['N']} samples in {report['K_nonempty']} clusters, every p_c rounds to "
        f"{'0' if expected == 0 else 'almost 0'} at {decimals} decimals (expected {expected:.3g} per epoch)",
        hint="raise sample.budget (T = budget x N must be well above 1) or sample.decimals", exit_code=2)


def scale_stage(spec: RunSpec, paths: RunPaths, cfg: storage.StorageConfig) -> bool:
    """Compute and commit sizes, p_c, report, plot and per-shard tables; False when already complete."""
    if already_done(paths.scale_marker, spec, Stage.SCALE, cfg):
        log.info("scale already complete (%s exists); nothing to do", paths.scale_marker)
        return False
    s = spec.sample
    sizes = cluster_sizes(spec, paths, cfg)
    targets = cluster_targets(sizes, s.alpha, s.budget)
    probs = cluster_probs(sizes, targets, s.decimals)
    report = scale_report(sizes, probs, budget=s.budget, alpha=s.alpha, mode=s.mode.value)
    refuse_empty_epoch(report, s.decimals)
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
    n_tables = write_shard_tables(spec, paths, probs, cfg)
    storage.write_marker(paths.scale_marker, marker(spec, Stage.SCALE, N=report["N"], clusters=int(sizes.size),
                                                    shards=n_tables), cfg)
    return True


def main(argv: Sequence[str]) -> int:
    """Compute the sampling probabilities; a complete scale step is skipped."""
    parser = stage_parser("scale")
    ctx = context_from_args(parser.parse_args(list(argv)))

    scale_stage(ctx.spec, ctx.paths, ctx.storage)
    return 0
