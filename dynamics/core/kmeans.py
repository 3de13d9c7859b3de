"""Spherical k-means fit (FAISS), training-subset selection and nearest-centroid assignment.

The published method: ``faiss.Kmeans(d, k, niter=10, spherical=True)`` on a random subset of the embeddings;
every sample is then assigned to its nearest kept centroid by inner product.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

import numpy as np

from dynamics.core.errors import DynamicsError

# Rows per assignment batch are limited so that the (rows x k) score block stays this small.
_ASSIGN_SCORE_BYTES = 1 << 28

KMeansInit = Literal["random", "kmeans++"]
AssignBackend = Literal["numpy", "faiss"]
_INIT_METHODS = {"kmeans++": "ClusteringInitMethod_KMEANS_PLUS_PLUS"}


@dataclass(frozen=True)
class KMeansResult:
    """Output of :func:`fit_spherical_kmeans`."""

    centroids: np.ndarray  # float32 (k, d), rows L2-normalised
    objective: list[float]  # FAISS objective per iteration (sum of similarities for spherical)
    iterations: int
    seconds: float
    n_train: int  # points FAISS actually trained on (after its max_points_per_centroid cap)
    gpu: bool


def _faiss() -> ModuleType:
    # Imported lazily: the controller and render path must not need faiss installed.
    import faiss

    return faiss


def gpu_available() -> bool:
    """Whether this FAISS build has GPU support and sees at least one GPU."""
    faiss = _faiss()
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _resolve_gpu(gpu: bool | None) -> bool:
    if gpu is None:
        return gpu_available()
    if gpu and not gpu_available():
        raise DynamicsError(
            "k-means on GPU was requested but FAISS sees no GPU",
            hint="run it on a GPU node with faiss-gpu (the clusterer image), or cluster on CPUs (cluster.gpus: 0)",
        )
    return gpu


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (float32); zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def fit_spherical_kmeans(
    x: np.ndarray,
    k: int,
    niter: int,
    seed: int,
    *,
    gpu: bool | None = None,
    max_points_per_centroid: int = 256,
    init: KMeansInit = "random",
    verbose: bool = False,
) -> KMeansResult:
    """Fit ``k`` unit-norm centroids to the rows of ``x`` (float32, (n, d)) with FAISS spherical k-means.

    ``gpu=None`` uses a GPU when FAISS has GPU support and one is present; ``gpu=True`` without one is an
    error. FAISS itself subsamples ``max_points_per_centroid · k`` rows (seeded) when ``n`` is larger.
    ``init="random"`` (FAISS's default, what the reference uses) seeds centroids with random points;
    ``"kmeans++"`` needs FAISS >= 1.13 and is steadier when k is small relative to the structure.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-d (n, d), got shape {x.shape}")
    n, d = x.shape
    if k < 1 or n < k:
        raise ValueError(f"need 1 <= k <= n training points, got k={k}, n={n}")
    use_gpu = _resolve_gpu(gpu)
    faiss = _faiss()
    options: dict[str, object] = {}
    if init != "random":
        method = getattr(faiss, _INIT_METHODS[init], None)
        if method is None:
            raise DynamicsError(f"this FAISS build has no {init} initialisation", hint="use init 'random'")
        options["init_method"] = method
    km = faiss.Kmeans(
        d,
        k,
        niter=niter,
        spherical=True,
        seed=seed,
        gpu=use_gpu,
        max_points_per_centroid=max_points_per_centroid,
        verbose=verbose,
        **options,
    )
    t0 = time.perf_counter()
    km.train(x)
    seconds = time.perf_counter() - t0
    objective = [float(v) for v in km.obj]
    return KMeansResult(
        # FAISS normalises spherical centroids each iteration; re-normalising guards the last step.
        centroids=l2_normalise(km.centroids).reshape(k, d),
        objective=objective,
        iterations=len(objective),
        seconds=seconds,
        n_train=min(n, max_points_per_centroid * k),
        gpu=use_gpu,
    )


def sample_training_subset(part_sizes: list[int], n_train: int, seed: int) -> list[np.ndarray]:
    """Row indices (sorted int64, local to each part) of a uniform sample without replacement.

    ``n_train`` rows are drawn from all ``Σ part_sizes`` rows at once (all rows if there are fewer),
    so every row has the same chance regardless of how rows are split into parts. Deterministic for a
    given ``seed`` and numpy version.
    """
    sizes = np.asarray(part_sizes, dtype=np.int64)
    if sizes.ndim != 1 or (sizes.size and sizes.min() < 0) or n_train < 0:
        raise ValueError("part_sizes must be non-negative and n_train >= 0")
    total = int(sizes.sum())
    if n_train >= total:
        return [np.arange(s, dtype=np.int64) for s in sizes.tolist()]
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(total, size=n_train, replace=False, shuffle=False))
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    cuts = np.searchsorted(rows, bounds)
    return [rows[cuts[i] : cuts[i + 1]] - bounds[i] for i in range(sizes.size)]


def _top1_numpy(chunk: np.ndarray, c: np.ndarray) -> np.ndarray:
    return np.argmax(chunk @ c.T, axis=1)


def _faiss_top1(c: np.ndarray, use_gpu: bool) -> Callable[[np.ndarray], np.ndarray]:
    faiss = _faiss()
    index = faiss.IndexFlatIP(c.shape[1])
    if use_gpu:
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(c)
    depth = min(2, c.shape[0])

    def top1(chunk: np.ndarray) -> np.ndarray:
        scores, ids = index.search(chunk, depth)
        if depth == 1:
            return ids[:, 0]
        # FAISS does not define its order among equal scores; take the lower index, like argmax.
        tie = scores[:, 0] == scores[:, 1]
        return np.where(tie, np.minimum(ids[:, 0], ids[:, 1]), ids[:, 0])

    return top1


def assign_nearest(
    x: np.ndarray,
    centroids: np.ndarray,
    batch: int = 65536,
    *,
    backend: AssignBackend = "numpy",
    gpu: bool | None = None,
) -> np.ndarray:
    """Index (int32) of the centroid with the largest inner product with each row of ``x``.

    ``backend="numpy"``: one float32 matmul + ``argmax`` per batch; ties (equal computed scores) go to
    the lowest centroid index. ``backend="faiss"``: ``IndexFlatIP`` top-1 (on GPU per ``gpu``, as in
    :func:`fit_spherical_kmeans`), same tie rule for two-way ties. (After refinement no two centroids
    coincide, so ties need a row exactly between centroids.) Rows are scored in batches of at most
    ``batch`` rows and about 256 MiB of scores; ``x`` may be float16 or a memmap.
    """
    x = np.asarray(x)
    c = np.ascontiguousarray(centroids, dtype=np.float32)
    if x.ndim != 2 or c.ndim != 2 or x.shape[1] != c.shape[1]:
        raise ValueError(f"shape mismatch: x {x.shape}, centroids {c.shape}")
    k = c.shape[0]
    if k == 0:
        raise ValueError("no centroids to assign to")
    if backend == "numpy":
        top1: Callable[[np.ndarray], np.ndarray] = functools.partial(_top1_numpy, c=c)
    elif backend == "faiss":
        top1 = _faiss_top1(c, _resolve_gpu(gpu))
    else:
        raise ValueError(f"backend must be 'numpy' or 'faiss', got {backend!r}")
    rows = max(1, min(batch, _ASSIGN_SCORE_BYTES // (4 * k)))
    labels = np.empty(x.shape[0], dtype=np.int32)
    for start in range(0, x.shape[0], rows):
        chunk = np.ascontiguousarray(x[start : start + rows], dtype=np.float32)
        labels[start : start + rows] = top1(chunk)
    return labels
