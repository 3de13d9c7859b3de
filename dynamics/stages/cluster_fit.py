"""``dynamics stage cluster-fit``: spherical k-means + refinement (single-pod Job).

cluster-fit: spherical k-means on a seeded subset of all embeddings, then greedy refinement.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np

from dynamics.constants import Stage
from dynamics.core.diagnostics import embedding_diagnostics
from dynamics.core.kmeans import fit_spherical_kmeans, sample_training_subset
from dynamics.core.refine import refine_centroids
from dynamics.core.whiten import fit_whitening, whitening_to_array
from dynamics.errors import DynamicsError
from dynamics.spec.model import RunSpec, Whiten
from dynamics.stages.common import context_from_args, stage_parser
from dynamics.stages.inputs import already_done, embed_part_rows, marker, read_vectors
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths

log = logging.getLogger("dynamics.cluster")


def gather_training_set(spec: RunSpec, paths: RunPaths, cfg: storage.StorageConfig) -> np.ndarray:
    """The seeded training subset, drawn uniformly across all parts (float32, unit rows)."""
    rows = embed_part_rows(spec, paths, cfg)
    total = sum(rows)
    c = spec.cluster
    if total < c.k:
        raise DynamicsError(f"only {total} embeddings for k={c.k} centroids",
                            hint="lower cluster.k or embed more data", exit_code=2)
    picks = sample_training_subset(rows, c.train_samples, c.seed)
    chunks = []
    for part, idx in enumerate(picks):
        if idx.size:
            chunks.append(read_vectors(paths, part, cfg)[idx])
    log.info("training subset: %d of %d embeddings from %d parts", sum(len(x) for x in chunks), total, len(rows))
    return np.concatenate(chunks)


def cluster_fit(spec: RunSpec, paths: RunPaths, cfg: storage.StorageConfig) -> bool:
    """Fit, refine and commit the centroids; False when already complete."""
    if already_done(paths.cluster_marker, spec, Stage.CLUSTER_FIT, cfg):
        log.info("cluster-fit already complete (%s exists); nothing to do", paths.cluster_marker)
        return False
    c = spec.cluster
    t0 = time.perf_counter()
    x = gather_training_set(spec, paths, cfg)
    if c.whiten is Whiten.PCA:
        # Fitted on the k-means sample and stored, so assign applies the very same transform.
        whitening = fit_whitening(x, c.whiten_dim)
        storage.write_npy(paths.whitening, whitening_to_array(whitening), cfg)
        x = whitening.apply(x)
        log.info("PCA whitening: %d -> %d dimensions", whitening.mean.shape[0], whitening.dim)
    t1 = time.perf_counter()
    # The spec asked for GPUs: running on the CPU instead would be silently ~100x slower at 50k centroids.
    use_gpu = bool(c.gpus)
    log.info("spherical k-means: k=%d, %d iterations, d=%d, on %s", c.k, c.iterations, x.shape[1],
             "GPU" if use_gpu else "CPU")
    fit = fit_spherical_kmeans(x, c.k, c.iterations, c.seed, gpu=use_gpu,
                               max_points_per_centroid=c.max_points_per_centroid)
    t2 = time.perf_counter()
    keep = refine_centroids(fit.centroids, c.threshold)
    t3 = time.perf_counter()
    kept_index = np.flatnonzero(keep).astype(np.int64)
    log.info("refinement at %.2f: kept %d of %d centroids (%.1fs)", c.threshold, kept_index.size, c.k, t3 - t2)
    storage.write_npy(paths.centroids, fit.centroids, cfg)
    storage.write_npy(paths.kept, fit.centroids[kept_index], cfg)
    storage.write_npy(paths.kept_index, kept_index, cfg)
    storage.write_json(paths.fit_json, {
        "k": c.k, "kept": int(kept_index.size), "threshold": c.threshold, "iterations": fit.iterations,
        "objective": fit.objective, "n_train": fit.n_train, "dim": int(x.shape[1]), "seed": c.seed,
        "gpu": fit.gpu, "whiten": c.whiten.value,
        "diagnostics": embedding_diagnostics(x, fit.centroids, fit.centroids[kept_index], c.threshold,
                                             seed=c.seed),
        "timings": {"load_s": round(t1 - t0, 3), "kmeans_s": round(t2 - t1, 3), "refine_s": round(t3 - t2, 3)},
    }, cfg)
    storage.write_marker(paths.cluster_marker, marker(spec, Stage.CLUSTER_FIT, k=c.k, kept=int(kept_index.size)), cfg)
    return True


def main(argv: Sequence[str]) -> int:
    """Fit and refine the centroids; a complete fit is skipped."""
    parser = stage_parser("cluster-fit")
    ctx = context_from_args(parser.parse_args(list(argv)))

    cluster_fit(ctx.spec, ctx.paths, ctx.storage)
    return 0
