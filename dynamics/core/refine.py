"""Centroid refinement: drop centroids that nearly duplicate an earlier kept one (the method's "refine" step).

Greedy, in index order: centroid 0 is kept; centroid ``i`` is kept iff ``sim(i, j) < threshold`` for
every centroid ``j < i`` kept so far. Nothing is averaged; the caller renumbers the kept ones
``0..K'-1`` (``centroids[keep]``).

**Exact tie rule.** So that the result does not depend on BLAS, thread count or block size, the decision
is defined on exact arithmetic:

* ``sim(i, j)`` is the *exact real* dot product of the stored float32 vectors (no rounding at all);
* ``threshold`` is first rounded to float32 (the vectors' precision), call it ``t``;
* ``j`` blocks ``i`` iff ``sim(i, j) >= t``; a pair exactly at the threshold is a duplicate.

So ``[1, 0]`` and ``[0.7, sqrt(0.51)]`` (as float32) have ``sim = float32(0.7)`` and block each other at
``threshold=0.7``. At ``threshold=1`` an exact duplicate blocks only if its float32 squared norm is
``>= 1`` (a float32-normalised vector's squared norm may be a hair below 1).

**Fast path.** Similarities are computed block-wise with float32 matmuls; a computed value ``s`` differs
from the exact one by at most ``gamma_d · ‖a‖ · ‖b‖`` with ``gamma_d = d·2⁻²⁴ / (1 - d·2⁻²⁴)`` (Higham, any
summation order), which we double for safety. Pairs whose computed value lies within that bound of ``t``
are re-decided exactly (float64 products of float32 values are exact; ``math.fsum`` rounds their sum with
``-t`` correctly, so its sign is the sign of ``sim - t``). Away from the threshold the float32 value
already decides. Cost: ``O(k · K' · d)`` flops in BLAS, ``O(k · B)`` small Python steps.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_THRESHOLD = 0.70
DEFAULT_BLOCK = 512
_UNIT_ROUNDOFF32 = 2.0**-24
# Covers float32 underflow in the products, which the relative bound does not.
_ABS_MARGIN = 1e-30
# Norms up to 1e15 keep every float32 partial sum (<= ‖a‖·‖b‖) far from overflow.
_MAX_NORM = 1e15
_MAX_ABS_THRESHOLD = 1e30


def float32_threshold(threshold: float) -> float:
    """The threshold actually compared against: ``threshold`` rounded to float32 (see module doc)."""
    if not (math.isfinite(threshold) and abs(threshold) <= _MAX_ABS_THRESHOLD):
        raise ValueError(f"threshold must be a finite number in [-1e30, 1e30], got {threshold}")
    return float(np.float32(threshold))


def exact_sim_at_least(a: np.ndarray, b: np.ndarray, t: float) -> bool:
    """Whether the exact dot product of float32 vectors ``a`` and ``b`` is ``>= t`` (no rounding)."""
    # A float32 x float32 product has <= 48 significant bits, so it is exact in float64.
    products = a.astype(np.float64) * b.astype(np.float64)
    return math.fsum([*products.tolist(), -t]) >= 0.0


def _error_bounds(norms: np.ndarray, d: int) -> np.ndarray:
    """Per-row bound on |float32 dot(c_i, c_j) - exact| valid for every j (2gamma_d ‖c_i‖ max‖c_j‖)."""
    gamma = d * _UNIT_ROUNDOFF32 / (1.0 - d * _UNIT_ROUNDOFF32)
    return 2.0 * gamma * norms * (norms.max() if norms.size else 0.0) + _ABS_MARGIN


def _blocked(
    x: np.ndarray, sims: np.ndarray, bound: float, others: np.ndarray, rows: np.ndarray | None, t: float
) -> bool:
    """Whether some candidate blocker has exact sim >= t with ``x``.

    ``sims[j]`` is the float32 similarity of ``x`` with ``others[rows[j]]`` (``others[j]`` when
    ``rows`` is None); only rows within ``bound`` of ``t`` are gathered and checked exactly.
    """
    if sims.size == 0 or sims.max() + bound < t:
        return False
    if (sims - bound >= t).any():
        return True
    unsure = np.flatnonzero(sims + bound >= t)
    if rows is not None:
        unsure = rows[unsure]
    return any(exact_sim_at_least(x, others[j], t) for j in unsure)


def _resolve_block(blk: np.ndarray, bounds: np.ndarray, blocked: np.ndarray, t: float) -> np.ndarray:
    """Greedy pass inside one block; ``blocked`` marks rows already blocked by earlier blocks."""
    within = blk @ blk.T
    kept = np.empty(blk.shape[0], dtype=np.int64)
    m = 0
    for r in range(blk.shape[0]):
        if blocked[r]:
            continue
        if m and _blocked(blk[r], within[r, kept[:m]], bounds[r], blk, kept[:m], t):
            continue
        kept[m] = r
        m += 1
    return kept[:m]


def refine_centroids(
    centroids: np.ndarray, threshold: float = DEFAULT_THRESHOLD, *, block: int = DEFAULT_BLOCK
) -> np.ndarray:
    """Keep mask (bool, length k) of the greedy refinement; see the module doc for the exact rule.

    ``centroids`` is (k, d), normally L2-normalised float32 (other float dtypes are cast to float32,
    the precision the rule is defined in). The result does not depend on ``block``.
    """
    c = np.ascontiguousarray(centroids, dtype=np.float32)
    if c.ndim != 2:
        raise ValueError(f"centroids must be 2-d (k, d), got shape {c.shape}")
    if not np.isfinite(c).all():
        raise ValueError("centroids contain NaN or infinity")
    if block < 1:
        raise ValueError("block must be >= 1")
    t = float32_threshold(threshold)
    k, d = c.shape
    keep = np.zeros(k, dtype=bool)
    norms = np.sqrt(np.einsum("ij,ij->i", c, c, dtype=np.float64))
    if k and norms.max() > _MAX_NORM:
        raise ValueError(f"centroid norms must be <= {_MAX_NORM:g} (they are normally 1)")
    bounds = _error_bounds(norms, d)
    kept_vecs = np.empty((k, d), dtype=np.float32)
    m = 0
    for start in range(0, k, block):
        blk = c[start : start + block]
        blocked = np.zeros(blk.shape[0], dtype=bool)
        if m:
            # One matmul against everything kept so far; only rows near t look closer.
            sims = blk @ kept_vecs[:m].T
            near = np.flatnonzero(sims.max(axis=1) + bounds[start : start + block] >= t)
            for r in near:
                blocked[r] = _blocked(blk[r], sims[r], bounds[start + r], kept_vecs, None, t)
        kept = _resolve_block(blk, bounds[start : start + block], blocked, t)
        keep[start + kept] = True
        kept_vecs[m : m + len(kept)] = blk[kept]
        m += len(kept)
    return keep
