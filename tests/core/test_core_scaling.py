"""Cluster scaling (DESIGN.md §2 "scale"): targets, probabilities and the report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamics.core.scaling import (
    cluster_probs,
    cluster_targets,
    counts_from_labels,
    expected_counts,
    scale,
    scale_report,
)

sizes_st = st.lists(st.integers(min_value=1, max_value=10**7), min_size=1, max_size=60).map(
    lambda v: np.array(v, dtype=np.int64)
)
budget_st = st.floats(min_value=0.05, max_value=2.0)
alpha_st = st.floats(min_value=0.0, max_value=1.0)


@given(sizes=sizes_st, budget=budget_st)
def test_alpha_one_is_uniform_rate(sizes: np.ndarray, budget: float) -> None:
    n = sizes.sum()
    p = cluster_probs(sizes, cluster_targets(sizes, 1.0, budget))
    # Only rounding separates p_c from T/N: target rounding (<= 0.5/n_c) plus 6-decimal rounding.
    assert np.all(np.abs(p - budget) <= 0.5 / sizes + 5e-7 + 1e-12 * budget * n)


def test_alpha_one_exact_when_targets_are_integral() -> None:
    sizes = np.array([2, 40, 1000, 123456], dtype=np.int64) * 2
    p = cluster_probs(sizes, cluster_targets(sizes, 1.0, 0.5))
    assert np.all(p == 0.5)


@given(sizes=sizes_st, budget=budget_st)
def test_alpha_zero_gives_equal_targets(sizes: np.ndarray, budget: float) -> None:
    targets = cluster_targets(sizes, 0.0, budget)
    assert targets.max() - targets.min() <= 1
    assert abs(targets[0] - budget * sizes.sum() / sizes.size) <= 0.5 + 1e-9 * sizes.sum()


@given(sizes=sizes_st, alpha=alpha_st, budget=budget_st)
def test_targets_keep_size_order(sizes: np.ndarray, alpha: float, budget: float) -> None:
    order = np.argsort(sizes, kind="stable")
    targets = cluster_targets(sizes, alpha, budget)[order]
    assert np.all(np.diff(targets) >= 0)


@given(sizes=sizes_st, alpha=alpha_st, budget=budget_st)
def test_targets_sum_to_budget_within_rounding(sizes: np.ndarray, alpha: float, budget: float) -> None:
    t = budget * sizes.sum()
    targets = cluster_targets(sizes, alpha, budget)
    assert abs(targets.sum() - t) <= sizes.size / 2 + 1e-9 * t


@given(sizes=sizes_st, alpha=alpha_st, budget=budget_st)
def test_probs_are_target_over_size_rounded_to_6_decimals(sizes: np.ndarray, alpha: float, budget: float) -> None:
    targets = cluster_targets(sizes, alpha, budget)
    p = cluster_probs(sizes, targets)
    assert p.tolist() == [round(t / n, 6) for t, n in zip(targets.tolist(), sizes.tolist(), strict=True)]
    q = targets / sizes
    # Half a unit in the 6th decimal, plus float64 representation error of p and q.
    assert np.all(np.abs(p - q) <= 5e-7 + 4 * np.spacing(np.maximum(q, 1.0)))


def test_probs_use_correct_decimal_rounding() -> None:
    # 662943 / 2000000 is stored just below 0.3314715: correct rounding gives 0.331471 (numpy.round
    # would give 0.331472).
    assert cluster_probs(np.array([2_000_000]), np.array([662_943])).tolist() == [0.331471]


def test_matches_formula_by_hand() -> None:
    sizes = np.array([1000, 100, 10, 1], dtype=np.int64)
    alpha, budget = 0.2, 0.5
    t = budget * 1111
    w = [n**alpha for n in sizes.tolist()]
    expected = [round(t * wi / math.fsum(w)) for wi in w]
    targets = cluster_targets(sizes, alpha, budget)
    assert targets.tolist() == expected
    by_hand = [round(e / n, 6) for e, n in zip(expected, sizes.tolist(), strict=True)]
    assert cluster_probs(sizes, targets).tolist() == by_hand


def test_round_half_to_even() -> None:
    # T = 5 shared by two equal clusters: 2.5 each rounds to 2 (half to even), like Python's round.
    sizes = np.array([5, 5], dtype=np.int64)
    assert cluster_targets(sizes, 1.0, 0.5).tolist() == [2, 2]


def test_empty_clusters_get_nothing() -> None:
    sizes = np.array([0, 10, 0, 30], dtype=np.int64)
    for alpha in (0.0, 0.2, 1.0):
        targets = cluster_targets(sizes, alpha, 0.5)
        p = cluster_probs(sizes, targets)
        assert targets[[0, 2]].tolist() == [0, 0]
        assert p[[0, 2]].tolist() == [0.0, 0.0]
    assert cluster_targets(sizes, 0.0, 0.5)[[1, 3]].tolist() == [10, 10]


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError):
        cluster_targets(np.array([1, -1]), 0.2, 0.5)
    with pytest.raises(ValueError):
        cluster_targets(np.array([1.5, 2.0]), 0.2, 0.5)
    with pytest.raises(ValueError):
        cluster_targets(np.array([1, 2]), -0.1, 0.5)
    with pytest.raises(ValueError):
        cluster_targets(np.array([1, 2]), 0.2, float("nan"))


def test_counts_from_labels() -> None:
    labels = np.array([0, 2, 2, 4, 0, 2], dtype=np.int32)
    counts = counts_from_labels(labels, 6)
    assert counts.dtype == np.int64
    assert counts.tolist() == [2, 0, 3, 0, 1, 0]
    with pytest.raises(ValueError):
        counts_from_labels(np.array([0, 6]), 6)


def test_expected_counts_cap_and_repeat() -> None:
    sizes = np.array([10, 4], dtype=np.int64)
    p = np.array([0.5, 2.5])
    assert expected_counts(sizes, p, "cap").tolist() == [5.0, 4.0]
    assert expected_counts(sizes, p, "repeat").tolist() == [5.0, 10.0]


def test_report_small_example() -> None:
    sizes = np.array([900, 0, 100], dtype=np.int64)
    probs = np.array([0.2, 0.0, 1.5])
    r = scale_report(sizes, probs, budget=0.5, alpha=0.2, mode="cap")
    json.dumps(r)  # must be JSON-serialisable as is
    assert r["N"] == 1000 and r["K"] == 3 and r["K_nonempty"] == 2 and r["T"] == 500.0
    assert r["expected_per_epoch"] == r["expected_per_epoch_cap"] == 180 + 100
    assert r["expected_per_epoch_repeat"] == 180 + 150
    assert r["clusters_p_ge_1"] == 1
    # top 1% and top 10% of 2 clusters are both the single largest one.
    assert r["share_top1pct_before"] == pytest.approx(0.9)
    assert r["share_top1pct_after"] == pytest.approx(180 / 280)
    assert r["share_top10pct_before"] == pytest.approx(0.9)
    h = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert r["entropy_before_nats"] == pytest.approx(h)
    assert r["entropy_before_normalised"] == pytest.approx(h / math.log(2))
    assert r["entropy_after_normalised"] > r["entropy_before_normalised"]


@settings(max_examples=30)
@given(sizes=sizes_st, alpha=st.floats(min_value=0.0, max_value=0.99))
def test_balancing_never_lowers_entropy(sizes: np.ndarray, alpha: float) -> None:
    # Sizes large enough that rounding to integer targets cannot reorder the distribution much.
    sizes = sizes * 1000
    _, _, r = scale(sizes, alpha, 0.5, mode="repeat")
    assert r["entropy_after_nats"] >= r["entropy_before_nats"] - 1e-3
