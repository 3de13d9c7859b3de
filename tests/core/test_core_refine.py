"""Centroid refinement (DESIGN.md §2 "refine") against an exact brute-force double loop."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamics.core.refine import float32_threshold, refine_centroids


def brute_force_refine(centroids: np.ndarray, threshold: float) -> np.ndarray:
    """The definition, literally: exact rational dot products, threshold rounded to float32."""
    c = np.asarray(centroids, dtype=np.float32)
    rows = [[Fraction(float(v)) for v in row] for row in c.tolist()]
    t = Fraction(float(np.float32(threshold)))
    kept: list[int] = []
    for i, row in enumerate(rows):
        if all(sum(a * b for a, b in zip(row, rows[j], strict=True)) < t for j in kept):
            kept.append(i)
    mask = np.zeros(len(rows), dtype=bool)
    mask[kept] = True
    return mask


def unit_rows(rng: np.random.Generator, k: int, d: int) -> np.ndarray:
    x = rng.standard_normal((k, d)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# Lattice entries make many similarities hit the thresholds below exactly (ties).
lattice = st.sampled_from([-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 0.7, 1.0])


@st.composite
def lattice_sets(draw: st.DrawFn) -> np.ndarray:
    d = draw(st.integers(1, 4))
    k = draw(st.integers(0, 10))
    rows = [draw(st.lists(lattice, min_size=d, max_size=d)) for _ in range(k)]
    # Duplicates: repeat some earlier rows later on.
    for _ in range(draw(st.integers(0, 3)) if rows else 0):
        rows.append(rows[draw(st.integers(0, len(rows) - 1))])
    return np.array(rows, dtype=np.float32).reshape(len(rows), d)


@settings(max_examples=300, deadline=None)
@given(
    c=lattice_sets(),
    threshold=st.sampled_from([0.0, 0.25, 0.5, 0.7, 0.75, 1.0, -0.25, 1.25]),
    block=st.sampled_from([1, 2, 3, 512]),
)
def test_equals_brute_force_with_ties(c: np.ndarray, threshold: float, block: int) -> None:
    assert np.array_equal(refine_centroids(c, threshold, block=block), brute_force_refine(c, threshold))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), block=st.sampled_from([1, 7, 64]))
def test_equals_brute_force_on_near_duplicates(seed: int, block: int) -> None:
    rng = np.random.default_rng(seed)
    base = unit_rows(rng, 12, 8)
    noisy = base[rng.integers(0, 12, 30)] + 0.3 * rng.standard_normal((30, 8)).astype(np.float32)
    c = np.concatenate([base, noisy / np.linalg.norm(noisy, axis=1, keepdims=True)]).astype(np.float32)
    c = c[rng.permutation(len(c))]
    c[5] = c[2]  # an exact duplicate
    # A threshold equal to a computed similarity puts a pair right at the edge.
    threshold = float(c[0] @ c[1]) if seed % 2 else 0.7
    assert np.array_equal(refine_centroids(c, threshold, block=block), brute_force_refine(c, threshold))


def test_pair_exactly_at_threshold_is_dropped() -> None:
    c = np.array([[1.0, 0.0], [0.7, math.sqrt(0.51)]], dtype=np.float32)
    # The stored similarity is exactly float32(0.7), which is what threshold 0.7 rounds to.
    assert Fraction(float(c[0, 0] * c[1, 0])) == Fraction(float32_threshold(0.7))
    assert refine_centroids(c, 0.7).tolist() == [True, False]
    above = float(np.nextafter(np.float32(0.7), np.float32(1.0)))
    assert refine_centroids(c, above).tolist() == [True, True]
    # 0.7 + 1e-9 is not representable in float32 and rounds back to float32(0.7): still a duplicate.
    assert refine_centroids(c, 0.7 + 1e-9).tolist() == [True, False]


def test_threshold_edges() -> None:
    c = np.array([[1, 0], [0, 1], [-1, 0], [1, 0]], dtype=np.float32)
    # threshold 0: orthogonal (sim 0) blocks, opposite (sim -1) does not.
    assert refine_centroids(c, 0.0).tolist() == [True, False, True, False]
    # threshold 1: only an exact duplicate with squared norm >= 1 blocks.
    assert refine_centroids(c, 1.0).tolist() == [True, True, True, False]
    short = np.array([[0.6, 0.8], [0.6, 0.8]], dtype=np.float32)
    assert refine_centroids(short, 1.0).tolist() == brute_force_refine(short, 1.0).tolist()


def test_first_is_always_kept_and_empty_input() -> None:
    assert refine_centroids(np.zeros((0, 4), dtype=np.float32), 0.7).tolist() == []
    assert refine_centroids(np.ones((1, 4), dtype=np.float32), -5.0).tolist() == [True]
    assert refine_centroids(np.ones((3, 4), dtype=np.float32), 0.5).tolist() == [True, False, False]


def test_block_size_does_not_matter_at_scale() -> None:
    rng = np.random.default_rng(7)
    base = unit_rows(rng, 300, 64)
    near = base[rng.integers(0, 300, 700)] + 0.08 * rng.standard_normal((700, 64)).astype(np.float32)
    c = np.concatenate([base, near])[rng.permutation(1000)]
    c = (c / np.linalg.norm(c, axis=1, keepdims=True)).astype(np.float32)
    masks = [refine_centroids(c, 0.7, block=b) for b in (1, 33, 256, 5000)]
    assert all(np.array_equal(masks[0], m) for m in masks[1:])
    assert 300 <= masks[0].sum() < 1000
    # Away from the threshold a plain float64 double loop agrees too.
    kept = c[masks[0]].astype(np.float64)
    assert (kept @ kept.T - 2 * np.eye(len(kept))).max() < 0.7


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        refine_centroids(np.ones(3, dtype=np.float32), 0.7)
    with pytest.raises(ValueError):
        refine_centroids(np.array([[np.nan, 0.0]], dtype=np.float32), 0.7)
    with pytest.raises(ValueError):
        refine_centroids(np.ones((2, 2), dtype=np.float32), float("inf"))
    with pytest.raises(ValueError):
        refine_centroids(np.full((2, 2), 1e16, dtype=np.float32), 0.7)
