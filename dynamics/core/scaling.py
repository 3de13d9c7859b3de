"""Cluster-size scaling: how many samples each cluster should contribute per epoch (the method's "scale" step).

With ``n_c`` samples in cluster ``c``, ``N = Σ n_c``, ``T = budget · N`` and exponent ``alpha``::

    target_c = round(T · n_c^alpha / Σ_j n_j^alpha)   # numpy round: half to even, like Python's round()
    p_c      = round(target_c / n_c, 6)                # Python's round: correctly rounded

``alpha = 1`` is uniform sampling at rate ``T/N``; ``alpha = 0`` gives every non-empty cluster the same target
(MetaCLIP-like flat balancing); ``0 < alpha < 1`` compresses sizes but keeps their order. ``p_c`` may exceed 1
for small clusters; the sampler either caps it (reference) or repeats samples (see :mod:`.sampler`).

Empty clusters (``n_c = 0``) get weight 0 for every ``alpha`` (including ``alpha = 0``, where ``0**0`` would
otherwise be 1), target 0 and probability 0: they have no samples to draw, and giving them a share of
``T`` would silently shrink the epoch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

SampleMode = Literal["cap", "repeat"]
PROB_DECIMALS = 6


def counts_from_labels(labels: np.ndarray, k: int) -> np.ndarray:
    """Cluster sizes ``n_c`` (int64, length ``k``) from per-sample cluster ids in ``[0, k)``."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"cluster labels must lie in [0, {k}); got [{labels.min()}, {labels.max()}]")
    return np.bincount(labels.ravel(), minlength=k).astype(np.int64, copy=False)


def _check_sizes(sizes: np.ndarray) -> np.ndarray:
    sizes = np.asarray(sizes)
    if sizes.ndim != 1 or not np.issubdtype(sizes.dtype, np.integer):
        raise ValueError("sizes must be a 1-d integer array of cluster sizes")
    if sizes.size and sizes.min() < 0:
        raise ValueError("cluster sizes must be non-negative")
    return sizes.astype(np.int64, copy=False)


def cluster_weights(sizes: np.ndarray, alpha: float) -> np.ndarray:
    """``n_c^alpha`` as float64, with 0 for empty clusters (also when ``alpha = 0``)."""
    sizes = _check_sizes(sizes)
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
    n = sizes.astype(np.float64)
    return np.where(sizes > 0, np.power(n, alpha), 0.0)


def cluster_targets(sizes: np.ndarray, alpha: float, budget: float) -> np.ndarray:
    """Per-cluster sample targets ``round(T · n_c^alpha / Σ_j n_j^alpha)`` with ``T = budget · N`` (int64).

    ``T`` is kept as the float ``budget · N`` (not rounded first). The expression is evaluated left to
    right as written, ``(T · w_c) / Σ w``, in float64, and rounded half-to-even (``numpy.round``), so
    ``Σ target_c`` equals ``T`` up to ``K/2`` from rounding.
    """
    sizes = _check_sizes(sizes)
    if not math.isfinite(budget) or budget < 0:
        raise ValueError(f"budget must be a finite number >= 0, got {budget}")
    w = cluster_weights(sizes, alpha)
    total_w = w.sum()
    if total_w == 0:
        return np.zeros_like(sizes)
    t = budget * float(sizes.sum())
    return np.round(t * w / total_w).astype(np.int64)


def cluster_probs(sizes: np.ndarray, targets: np.ndarray, decimals: int = PROB_DECIMALS) -> np.ndarray:
    """Per-sample probability ``p_c = round(target_c / n_c, decimals)`` (float64); 0 for empty clusters.

    Rounding is Python's ``round(x, 6)`` on the float64 quotient: correctly rounded, half to even.
    (``numpy.round`` multiplies by 10**6 first and disagrees on about one quotient in a million, e.g.
    662943 / 2000000, which Python rounds to 0.331471 and numpy to 0.331472.) K is at most ~10**5,
    so the Python loop costs milliseconds.
    """
    sizes = _check_sizes(sizes)
    targets = np.asarray(targets)
    if targets.shape != sizes.shape:
        raise ValueError(f"targets shape {targets.shape} != sizes shape {sizes.shape}")
    nonempty = sizes > 0
    p = np.zeros(sizes.shape, dtype=np.float64)
    quotients = (targets[nonempty] / sizes[nonempty]).tolist()
    p[nonempty] = [round(q, decimals) for q in quotients]
    return p


def expected_counts(sizes: np.ndarray, probs: np.ndarray, mode: SampleMode = "cap") -> np.ndarray:
    """Expected samples drawn per cluster per epoch: ``n_c · min(p_c, 1)`` (cap) or ``n_c · p_c`` (repeat)."""
    sizes = _check_sizes(sizes)
    p = np.asarray(probs, dtype=np.float64)
    if mode == "cap":
        p = np.minimum(p, 1.0)
    elif mode != "repeat":
        raise ValueError(f"mode must be 'cap' or 'repeat', got {mode!r}")
    return sizes * p


def _entropy(weights: np.ndarray) -> tuple[float, float]:
    """Shannon entropy (nats) of ``weights / Σ weights`` and the same divided by ``log(#non-zero)``."""
    total = weights.sum()
    if total <= 0:
        return 0.0, 0.0
    q = weights[weights > 0] / total
    h = float(-(q * np.log(q)).sum())
    return h, (h / math.log(q.size) if q.size > 1 else 0.0)


def _top_share(order: np.ndarray, weights: np.ndarray, fraction: float) -> float:
    """Share of ``weights`` held by the first ``ceil(fraction · len(order))`` clusters of ``order``."""
    total = weights.sum()
    if total <= 0 or order.size == 0:
        return 0.0
    m = max(1, math.ceil(fraction * order.size))
    return float(weights[order[:m]].sum() / total)


def scale_report(
    sizes: np.ndarray,
    probs: np.ndarray,
    *,
    budget: float | None = None,
    alpha: float | None = None,
    mode: SampleMode = "cap",
    top_fractions: Sequence[float] = (0.01, 0.1),
) -> dict[str, Any]:
    """Summary of a scaling decision, JSON-serialisable, for ``report.json`` and the run log.

    ``top_share_before/after`` use the same clusters (the largest by ``n_c``, the top
    ``ceil(f · K')`` of the ``K'`` non-empty ones) so "after" shows how much of the sampled epoch
    the formerly dominant clusters still take. Entropies are of the cluster distribution of the data
    (before) and of the expected sample (after), in nats and normalised by ``log K'``.
    """
    sizes = _check_sizes(sizes)
    p = np.asarray(probs, dtype=np.float64)
    if p.shape != sizes.shape:
        raise ValueError(f"probs shape {p.shape} != sizes shape {sizes.shape}")
    n_total = int(sizes.sum())
    nonempty = np.flatnonzero(sizes > 0)
    # Stable sort so equal-size clusters are ranked by index: the report is reproducible.
    order = nonempty[np.argsort(-sizes[nonempty], kind="stable")]
    before = sizes.astype(np.float64)
    after = expected_counts(sizes, p, mode)
    h_before, hn_before = _entropy(before)
    h_after, hn_after = _entropy(after)
    report: dict[str, Any] = {
        "N": n_total,
        "K": int(sizes.size),
        "K_nonempty": int(nonempty.size),
        "alpha": alpha,
        "budget": budget,
        "T": (budget * n_total) if budget is not None else None,
        "mode": mode,
        "expected_per_epoch": float(after.sum()),
        "expected_per_epoch_cap": float(expected_counts(sizes, p, "cap").sum()),
        "expected_per_epoch_repeat": float(expected_counts(sizes, p, "repeat").sum()),
        "entropy_before_nats": h_before,
        "entropy_after_nats": h_after,
        "entropy_before_normalised": hn_before,
        "entropy_after_normalised": hn_after,
        "clusters_p_ge_1": int(np.count_nonzero(p[nonempty] >= 1.0)),
        "p_min": float(p[nonempty].min()) if nonempty.size else 0.0,
        "p_max": float(p[nonempty].max()) if nonempty.size else 0.0,
        "size_min": int(sizes[nonempty].min()) if nonempty.size else 0,
        "size_max": int(sizes.max()) if sizes.size else 0,
    }
    for f in top_fractions:
        tag = f"top{f * 100:g}pct"
        report[f"share_{tag}_before"] = _top_share(order, before, f)
        report[f"share_{tag}_after"] = _top_share(order, after, f)
    return report


def scale(
    sizes: np.ndarray, alpha: float, budget: float, *, mode: SampleMode = "cap"
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The whole scale step: sizes → (targets, p_c, report)."""
    targets = cluster_targets(sizes, alpha, budget)
    probs = cluster_probs(sizes, targets)
    return targets, probs, scale_report(sizes, probs, budget=budget, alpha=alpha, mode=mode)
