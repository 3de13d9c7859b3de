"""Embedding, sampling and class diagnostics on hand-checkable inputs."""

from __future__ import annotations

import numpy as np
import pytest

from dynamics.core.diagnostics import (
    MIN_MARGIN,
    MIN_TV,
    class_report,
    cluster_separation,
    decile_shares,
    embedding_diagnostics,
    gini,
    inclusion_tv,
    nearest_other_centroid_cosine,
    purity,
    quantiles,
    sampling_diagnostics,
    weak_embedding_warning,
)


def test_gini_known_values() -> None:
    assert gini(np.array([5, 5, 5, 0])) == pytest.approx(0.0)
    assert gini(np.array([1, 3])) == pytest.approx(0.25)  # mean |xi - xj| / (2 mean) = 1 / 4
    assert gini(np.array([0, 0, 7])) == 0.0
    assert gini(np.array([1, 1, 1, 97])) > 0.7


def test_decile_shares_rank_clusters_largest_first() -> None:
    sizes = np.arange(1, 21)[::-1].astype(np.int64)  # 20 clusters: 20, 19, ..., 1
    out = decile_shares(sizes, np.ones(20))
    assert out["before"][0] == pytest.approx((20 + 19) / 210, abs=1e-4)
    assert out["before"] == sorted(out["before"], reverse=True)
    assert out["after"] == [0.1] * 10
    assert sum(out["before"]) == pytest.approx(1.0, abs=1e-3)


def test_cosine_distributions_and_threshold_share() -> None:
    c = np.array([[1, 0], [0.8, 0.6], [0, 1]], np.float32)  # cos(0, 1) = 0.8, cos(1, 2) = 0.6, cos(0, 2) = 0
    np.testing.assert_allclose(nearest_other_centroid_cosine(c), [0.8, 0.8, 0.6], atol=1e-6)
    x = np.array([[1, 0], [0, 1]], np.float32)
    diag = embedding_diagnostics(x, c, c[[0, 2]], threshold=0.7)
    assert diag["nearest_kept_centroid_cosine"]["q50"] == pytest.approx(1.0)
    assert diag["share_centroids_with_neighbour_above_threshold"] == pytest.approx(2 / 3, abs=1e-4)
    assert quantiles(np.array([0.0, 1.0]))["q50"] == 0.5


def test_class_report_shares_head_tail_and_purity() -> None:
    classes = np.array([0] * 6 + [1] * 3 + [2] * 1)
    clusters = np.array([0, 0, 0, 1, 1, 1, 2, 2, 1, 3])  # one class-1 sample sits in a class-0 cluster
    weight = np.where(classes == 0, 0.25, 1.0)  # the head class is subsampled, the others kept
    rep = class_report(classes, clusters, weight, ["a", "b", "c"])
    assert rep["head"] == ["a"] and rep["tail"] == ["c"]
    assert rep["head_data_share"] == 0.6
    assert rep["head_epoch_share"] == pytest.approx(1.5 / 5.5, abs=1e-4)
    assert rep["tail_epoch_share"] == pytest.approx(1 / 5.5, abs=1e-4)
    assert rep["purity"] == purity(classes, clusters) == pytest.approx(0.9)



def test_cosine_distributions_are_estimated_on_a_capped_seeded_sample() -> None:
    rng = np.random.default_rng(0)
    c = rng.normal(size=(300, 8)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    full = embedding_diagnostics(c, c, c, 0.7)
    capped = embedding_diagnostics(c, c, c, 0.7, max_rows=100, seed=1)
    assert capped == embedding_diagnostics(c, c, c, 0.7, max_rows=100, seed=1)
    assert abs(capped["centroid_nearest_other_cosine"]["q50"] - full["centroid_nearest_other_cosine"]["q50"]) < 0.1
    np.testing.assert_allclose(nearest_other_centroid_cosine(c, np.array([5, 7])),
                               nearest_other_centroid_cosine(c)[[5, 7]], atol=1e-6)


def _unit(rows: list[list[float]]) -> np.ndarray:
    x = np.asarray(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_cluster_separation_compares_own_and_nearest_other_centroid() -> None:
    centroids = _unit([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    tight = _unit([[1, 0.05, 0], [0.05, 1, 0], [0, 0.05, 1]])  # each near its own axis
    out = cluster_separation(tight, centroids)
    own = 1 / np.sqrt(1 + 0.05 ** 2)
    assert out["own_centroid_cosine_median"] == pytest.approx(own, abs=1e-4)
    assert out["nearest_other_centroid_cosine_median"] == pytest.approx(0.05 * own, abs=1e-4)
    assert out["separation_margin_median"] == pytest.approx(0.95 * own, abs=1e-4)
    between = _unit([[1, 0.95, 0], [0.95, 1, 0], [0, 0.95, 1]])  # each almost as close to a neighbour
    assert cluster_separation(between, centroids)["separation_margin_median"] < MIN_MARGIN
    assert cluster_separation(tight, centroids[:1]) == {}  # one cluster: nothing to be separated from


def test_inclusion_tv_is_zero_for_uniform_and_the_moved_share_otherwise() -> None:
    sizes = np.array([80, 20])
    assert inclusion_tv(sizes, 0.5 * sizes) == pytest.approx(0.0)  # any uniform budget
    # Flat balancing: 50/50 instead of 80/20 moves 30% of an epoch's draws.
    assert inclusion_tv(sizes, np.array([10.0, 10.0])) == pytest.approx(0.30)
    assert inclusion_tv(sizes, np.zeros(2)) == 0.0


def test_weak_embedding_warning_is_plain_and_only_when_weak() -> None:
    assert weak_embedding_warning(0.3, 0.4) is None
    assert weak_embedding_warning(None, None) is None
    tv_warning = weak_embedding_warning(None, 0.02)
    assert tv_warning is not None and "close to uniform" in tv_warning and "bootstrap" in tv_warning
    margin_warning = weak_embedding_warning(0.01, None)
    assert margin_warning is not None and "barely separated" in margin_warning


def test_reports_carry_the_label_free_measures_and_the_warning() -> None:
    sizes = np.array([50, 50, 50])
    near_uniform = sampling_diagnostics(sizes, 0.5 * sizes)
    assert near_uniform["inclusion_tv_from_uniform"] == 0.0 and "warning" in near_uniform
    rebalanced = sampling_diagnostics(np.array([500, 20, 10]), np.array([60.0, 20.0, 10.0]))
    assert rebalanced["inclusion_tv_from_uniform"] > MIN_TV and "warning" not in rebalanced
    centroids = _unit([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    x = _unit([[1, 0.97, 0], [0.97, 1, 0], [0, 0.97, 1]] * 5)
    fit = embedding_diagnostics(x, centroids, centroids, threshold=0.7)
    assert fit["separation"]["separation_margin_median"] < MIN_MARGIN and "barely separated" in fit["warning"]
