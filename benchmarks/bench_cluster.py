"""Clustering on CPU: refinement at k=50k, d=768; spherical k-means fit; assignment.

* refine: ``refine_centroids`` on k random unit vectors of which a share are near-duplicates of earlier
  ones, half of them at cosine 0.69-0.71 (near the 0.70 threshold, where the exact re-check runs),
  against the floor any refinement pays: a plain blocked float32 matmul of every pair (each block of
  512 rows against all earlier rows, no decisions), and a plain Python double loop (one ``numpy.dot``
  per pair, timed on a prefix and extrapolated by its pair count).
* fit: FAISS spherical k-means, ``--fit-n`` x 768 vectors, ``--fit-k`` centroids, 10 iterations.
* assign: at K = ``--k`` (the refined centroids, 50k by default: the real size) on ``--assign-n``
  vectors, and ``assign_nearest`` with the numpy backend (matmul + argmax) against its FAISS backend
  (``IndexFlatIP`` top-2 search, ties to the lower index) on the same data.

    .venv/bin/python benchmarks/bench_cluster.py [--k 50000] [--fit-n 200000] [--fit-k 1000]
"""

from __future__ import annotations

import argparse
import sys
import time

import faiss
import numpy as np

from dynamics.core.kmeans import assign_nearest, fit_spherical_kmeans, l2_normalise
from dynamics.core.refine import refine_centroids


def centroids_with_duplicates(k: int, d: int, dup_share: float, rng: np.random.Generator) -> np.ndarray:
    """Random unit vectors; ``dup_share`` of them are copies of earlier ones at cosine 0.6-0.99, half
    of those at 0.69-0.71 (near the 0.70 threshold)."""
    c = l2_normalise(rng.standard_normal((k, d), dtype=np.float32))
    dups = np.flatnonzero(rng.random(k) < dup_share)
    dups = dups[dups > 0]
    sources = (rng.random(dups.size) * dups).astype(np.int64)  # always an earlier index
    cos = np.where(rng.random(dups.size) < 0.5, rng.uniform(0.69, 0.71, dups.size), rng.uniform(0.6, 0.99, dups.size))
    # v = cos * source + sin * (unit vector orthogonal to source): cosine exactly ``cos`` before rounding.
    src = c[sources].astype(np.float64)
    noise = rng.standard_normal((dups.size, d))
    noise -= np.sum(noise * src, axis=1, keepdims=True) * src
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    c[dups] = (cos[:, None] * src + np.sqrt(1 - cos[:, None] ** 2) * noise).astype(np.float32)
    return l2_normalise(c)


def blocked_matmul_seconds(c: np.ndarray, block: int = 512) -> float:
    """Every pair's float32 similarity once, block by block (the BLAS work of refinement, no decisions)."""
    t0 = time.perf_counter()
    for lo in range(0, len(c), block):
        c[lo:lo + block] @ c[:lo + block].T
    return time.perf_counter() - t0


def human(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def naive_refine_seconds_per_pair(c: np.ndarray, threshold: float, prefix: int) -> tuple[float, int]:
    """Time the obvious double loop on ``c[:prefix]``; return (seconds per compared pair, pairs)."""
    kept: list[np.ndarray] = []
    pairs = 0
    t0 = time.perf_counter()
    for v in c[:prefix]:
        pairs += len(kept)
        if all(float(np.dot(v, w)) < threshold for w in kept):
            kept.append(v)
    return (time.perf_counter() - t0) / max(pairs, 1), pairs


def bench_refine(k: int, d: int, rng: np.random.Generator) -> tuple[str, np.ndarray]:
    c = centroids_with_duplicates(k, d, 0.2, rng)
    t0 = time.perf_counter()
    keep = refine_centroids(c, 0.70)
    t_refine = time.perf_counter() - t0
    kept = int(keep.sum())
    t_matmul = blocked_matmul_seconds(c)
    per_pair, _ = naive_refine_seconds_per_pair(c, 0.70, min(k, 3000))
    # The naive loop compares each candidate with every kept centroid until it finds a blocker;
    # the pair count of a full run is at most sum over i of kept-before-i, computed from our mask.
    full_pairs = int(np.cumsum(keep)[:-1].sum()) if k > 1 else 0
    t_naive = per_pair * full_pairs
    print(f"refine done: {t_refine:.1f} s, kept {kept}/{k}", file=sys.stderr)
    return (
        f"refine k={k:,} d={d} (10% near 0.70): {t_refine:.1f} s (kept {kept:,}) vs blocked matmul of all "
        f"pairs {t_matmul:.1f} s vs naive Python loop ~{human(t_naive)} (extrapolated, {per_pair * 1e6:.2f} us/pair)"
    ), c[keep]


def bench_assign_at_k(centroids: np.ndarray, n: int, rng: np.random.Generator) -> str:
    """Assignment throughput against the real-size centroid set (numpy backend, one sgemm per batch)."""
    x = l2_normalise(rng.standard_normal((n, centroids.shape[1]), dtype=np.float32))
    t0 = time.perf_counter()
    assign_nearest(x, centroids, backend="numpy")
    rate = n / (time.perf_counter() - t0)
    return f"assign at K={len(centroids):,}: {rate:,.0f} vec/s (numpy) -> 130M in ~{human(130e6 / rate)} CPU wall"


def bench_fit_assign(n: int, k: int, d: int, niter: int, rng: np.random.Generator) -> str:
    centres = l2_normalise(rng.standard_normal((k, d), dtype=np.float32))
    x = l2_normalise(centres[rng.integers(0, k, n)] + 0.04 * rng.standard_normal((n, d), dtype=np.float32))
    res = fit_spherical_kmeans(x, k, niter=niter, seed=0, gpu=False)
    fit_rate = res.n_train * res.iterations / res.seconds
    print(f"fit done: {res.seconds:.1f} s", file=sys.stderr)

    t0 = time.perf_counter()
    labels = assign_nearest(x, res.centroids, backend="numpy")
    t_numpy = time.perf_counter() - t0
    t0 = time.perf_counter()
    labels_faiss = assign_nearest(x, res.centroids, backend="faiss", gpu=False)
    t_faiss = time.perf_counter() - t0
    agree = float(np.mean(labels_faiss == labels))
    return (
        f"fit {n:,}x{d} k={k:,} {res.iterations} it: {res.seconds:.1f} s "
        f"({fit_rate:,.0f} vector-iterations/s) | assign: {n / t_numpy:,.0f} vec/s (numpy backend) vs "
        f"{n / t_faiss:,.0f} vec/s (faiss IndexFlatIP backend), agreement {agree:.4f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=50_000)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--fit-n", type=int, default=200_000)
    ap.add_argument("--fit-k", type=int, default=1000)
    ap.add_argument("--niter", type=int, default=10)
    ap.add_argument("--assign-n", type=int, default=20_000, help="vectors assigned at K=--k")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    line_refine, kept = bench_refine(args.k, args.d, rng)
    line_assign = bench_assign_at_k(kept, args.assign_n, rng)
    line_fit = bench_fit_assign(args.fit_n, args.fit_k, args.d, args.niter, rng)
    print(f"clustering on CPU ({faiss.omp_get_max_threads()} threads): {line_refine} | {line_assign} | {line_fit}")


if __name__ == "__main__":
    main()
