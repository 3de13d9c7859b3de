"""Embedding and sampling diagnostics (pure numpy): does the clustering see structure, and what does
the sampler do with it?

- nearest-centroid cosine of the embeddings, and each centroid's cosine to its nearest other
  centroid: whether the refinement threshold fits this embedding (DINOv2's 0.70 means nothing for a
  space where every pair is at 0.9);
- cluster-size Gini and the share of each size decile of clusters before and after sampling: how
  much the sampler can rebalance;
- label-free: how separated the clusters are (each sample's cosine to its own centroid vs to the
  nearest other one) and how far an expected epoch departs from a uniform one (total variation
  between the two inclusion distributions over samples), with a plain warning when the embedding
  gives the sampler little to work with. Gini and decile shares can look good while the concept mix
  barely moves (k-means on a weak embedding splits a head concept into many similar clusters); these
  two say so without labels;
- with class labels: each class's share of the data vs of an expected epoch, and cluster purity.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
# Rows per block when comparing embeddings with centroids: bounds memory at block x K floats.
_BLOCK = 4096


def quantiles(values: np.ndarray) -> dict[str, float]:
    """``{"q0": .., "q10": .., ..., "q100": ..}`` of ``values`` (empty -> {})."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        return {}
    qs = np.quantile(values, QUANTILES)
    return {f"q{round(q * 100)}": round(float(v), 4) for q, v in zip(QUANTILES, qs, strict=True)}


def nearest_centroid_cosine(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Cosine of each (unit) row of ``x`` to its nearest (unit) centroid."""
    x = np.asarray(x, dtype=np.float32)
    c = np.asarray(centroids, dtype=np.float32)
    out = np.empty(x.shape[0], np.float32)
    for lo in range(0, x.shape[0], _BLOCK):
        out[lo:lo + _BLOCK] = (x[lo:lo + _BLOCK] @ c.T).max(axis=1)
    return out


def nearest_other_centroid_cosine(centroids: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Cosine of each centroid (or of those in ``rows``) to its most similar other centroid."""
    c = np.asarray(centroids, dtype=np.float32)
    if c.shape[0] < 2:
        return np.zeros(0, np.float32)
    rows = np.arange(c.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
    out = np.empty(rows.size, np.float32)
    for lo in range(0, rows.size, _BLOCK):
        block = rows[lo:lo + _BLOCK]
        sims = c[block] @ c.T
        sims[np.arange(block.size), block] = -np.inf
        out[lo:lo + _BLOCK] = sims.max(axis=1)
    return out


def _subsample(n: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= cap else np.sort(rng.choice(n, size=cap, replace=False))


def embedding_diagnostics(x: np.ndarray, centroids: np.ndarray, kept: np.ndarray, threshold: float, *,
                          max_rows: int = 20_000, seed: int = 0) -> dict[str, Any]:
    """Cosine distributions for fit.json: sample -> nearest kept centroid, centroid -> nearest other.

    At full scale (12.8M samples, 50k centroids) the exact distributions would cost more than the fit:
    both are estimated on at most ``max_rows`` seeded rows (quantiles need no more).
    """
    rng = np.random.default_rng(seed)
    other = nearest_other_centroid_cosine(centroids, _subsample(len(centroids), max_rows, rng))
    rows = x[_subsample(len(x), max_rows, rng)]
    separation = cluster_separation(rows, kept)
    out = {
        "nearest_kept_centroid_cosine": quantiles(nearest_centroid_cosine(rows, kept)),
        "centroid_nearest_other_cosine": quantiles(other),
        "threshold": threshold,
        "share_centroids_with_neighbour_above_threshold": round(float((other >= threshold).mean()), 4)
        if other.size else 0.0,
        "separation": separation,
    }
    warning = weak_embedding_warning(separation.get("separation_margin_median"), None)
    return out | ({"warning": warning} if warning else {})


# Below these, the sampler has little to work with (see weak_embedding_warning).
MIN_MARGIN = 0.05  # median own-minus-nearest-other centroid cosine of a sample
MIN_TV = 0.10  # total variation between the expected epoch and a uniform one


def top2_cosines(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each (unit) row's cosine to its nearest (unit) centroid, its own cluster's under nearest
    assignment, and to the second nearest (-1 with a single centroid)."""
    x = np.asarray(x, dtype=np.float32)
    c = np.asarray(centroids, dtype=np.float32)
    own = np.empty(x.shape[0], np.float32)
    other = np.full(x.shape[0], -1.0, np.float32)
    for lo in range(0, x.shape[0], _BLOCK):
        sims = x[lo:lo + _BLOCK] @ c.T
        if c.shape[0] >= 2:
            top = -np.partition(-sims, 1, axis=1)[:, :2]
            own[lo:lo + _BLOCK], other[lo:lo + _BLOCK] = top[:, 0], top[:, 1]
        else:
            own[lo:lo + _BLOCK] = sims[:, 0]
    return own, other


def cluster_separation(x: np.ndarray, centroids: np.ndarray) -> dict[str, float]:
    """Median cosine of a sample to its own centroid, to the nearest other centroid, and the median margin
    between the two (near 0: a sample is about as close to another cluster as to its own)."""
    if len(centroids) < 2 or len(x) == 0:  # no other cluster to be separated from
        return {}
    own, other = top2_cosines(x, centroids)
    return {"own_centroid_cosine_median": round(float(np.median(own)), 4),
            "nearest_other_centroid_cosine_median": round(float(np.median(other)), 4),
            "separation_margin_median": round(float(np.median(own - other)), 4)}


def inclusion_tv(sizes: np.ndarray, expected: np.ndarray) -> float:
    """Total variation between the expected epoch's inclusion distribution over samples and a uniform
    epoch's: the share of an epoch's draws that sampling moves from some samples to others (0 = uniform).

    Samples of one cluster are drawn alike, so the sum over samples reduces to one over clusters:
    ``1/2 · Σ_c |e_c / Σ e - n_c / N|``.
    """
    n = np.asarray(sizes, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if n.sum() <= 0 or e.sum() <= 0:
        return 0.0
    return float(0.5 * np.abs(e / e.sum() - n / n.sum()).sum())


def weak_embedding_warning(margin: float | None, tv: float | None) -> str | None:
    """A plain warning when the clusters are barely separated or the expected epoch is close to uniform
    (None when neither, or when neither was measured)."""
    problems = []
    if margin is not None and margin < MIN_MARGIN:
        problems.append(f"clusters are barely separated (median margin between a sample's own and nearest other "
                        f"centroid cosine {margin:.3f} < {MIN_MARGIN})")
    if tv is not None and tv < MIN_TV:
        problems.append(f"the expected epoch is close to uniform (total variation {tv:.3f} < {MIN_TV}: "
                        f"sampling moves under {MIN_TV:.0%} of an epoch's draws)")
    if not problems:
        return None
    return ("the embedding gives DynamiCS little to work with: " + "; ".join(problems)
            + ". Expect results close to uniform sampling; use a concept-aligned embedder (DINOv2, or the "
            "bootstrap recipe: embed with a short uniform run's own image tower).")


def gini(sizes: np.ndarray) -> float:
    """Gini coefficient of the non-empty cluster sizes (0 = all equal, -> 1 = one cluster has all)."""
    s = np.sort(np.asarray(sizes, dtype=np.float64)[np.asarray(sizes) > 0])
    n = s.size
    if n < 2 or s.sum() == 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float((2 * (ranks * s).sum()) / (n * s.sum()) - (n + 1) / n)


def decile_shares(sizes: np.ndarray, expected: np.ndarray) -> dict[str, list[float]]:
    """Share of the data and of an expected epoch held by each tenth of the non-empty clusters.

    Deciles are of clusters ranked largest first (stable, so ties rank by index); with fewer than
    ten clusters some deciles are empty and hold 0.
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    nonempty = np.flatnonzero(sizes > 0)
    order = nonempty[np.argsort(-sizes[nonempty], kind="stable")]
    bounds = [math.floor(i * order.size / 10) for i in range(11)]
    out: dict[str, list[float]] = {"before": [], "after": []}
    for key, values in (("before", sizes), ("after", expected)):
        total = values[order].sum()
        for lo, hi in itertools.pairwise(bounds):
            out[key].append(round(float(values[order[lo:hi]].sum() / total), 4) if total > 0 else 0.0)
    return out


def sampling_diagnostics(sizes: np.ndarray, expected: np.ndarray) -> dict[str, Any]:
    """Gini before/after, decile shares and the total variation from a uniform epoch, for report.json."""
    tv = inclusion_tv(sizes, expected)
    out = {"gini_before": round(gini(sizes), 4), "gini_after": round(gini(expected), 4),
           "decile_shares": decile_shares(sizes, expected), "inclusion_tv_from_uniform": round(tv, 4)}
    warning = weak_embedding_warning(None, tv)
    return out | ({"warning": warning} if warning else {})


def purity(classes: np.ndarray, clusters: np.ndarray) -> float:
    """Size-weighted purity: share of samples whose cluster's majority class is their own class."""
    classes = np.asarray(classes, dtype=np.int64)
    clusters = np.asarray(clusters, dtype=np.int64)
    if classes.size == 0:
        return 0.0
    table = np.zeros((int(clusters.max()) + 1, int(classes.max()) + 1), np.int64)
    np.add.at(table, (clusters, classes), 1)
    return float(table.max(axis=1).sum() / classes.size)


def class_report(classes: np.ndarray, clusters: np.ndarray, sample_weight: np.ndarray,
                 names: list[str]) -> dict[str, Any]:
    """Per class: count, share of the data, share of an expected epoch; head/tail thirds and purity.

    ``sample_weight`` is each sample's expected uses per epoch (``min(p, 1)`` in cap mode). Head is
    the most frequent third of the classes, tail the least frequent third (at least one each), the
    same definition the zero-shot evaluation uses.
    """
    classes = np.asarray(classes, dtype=np.int64)
    w = np.asarray(sample_weight, dtype=np.float64)
    counts = np.bincount(classes, minlength=len(names)).astype(np.float64)
    epoch = np.bincount(classes, weights=w, minlength=len(names))
    order = np.argsort(-counts, kind="stable")
    third = max(1, len(names) // 3)
    head, tail = order[:third], order[-third:]
    data_share, epoch_share = counts / max(counts.sum(), 1), epoch / max(epoch.sum(), 1e-12)
    return {
        "definition": "head = most frequent third of the classes, tail = least frequent third",
        "classes": [{"name": names[i], "count": int(counts[i]), "data_share": round(float(data_share[i]), 4),
                     "epoch_share": round(float(epoch_share[i]), 4)} for i in order],
        "head": [names[i] for i in head], "tail": [names[i] for i in tail],
        "head_data_share": round(float(data_share[head].sum()), 4),
        "head_epoch_share": round(float(epoch_share[head].sum()), 4),
        "tail_data_share": round(float(data_share[tail].sum()), 4),
        "tail_epoch_share": round(float(epoch_share[tail].sum()), 4),
        "purity": round(purity(classes, clusters), 4),
    }
