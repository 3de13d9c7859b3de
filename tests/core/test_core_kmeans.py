"""Spherical k-means fit, training subset and nearest-centroid assignment."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamics.core.kmeans import (
    AssignBackend,
    KMeansInit,
    assign_nearest,
    fit_spherical_kmeans,
    gpu_available,
    l2_normalise,
    sample_training_subset,
)
from dynamics.errors import DynamicsError


def separated_clusters(seed: int, k: int = 6, per: int = 300, d: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = l2_normalise(rng.standard_normal((k, d)))
    labels = np.repeat(np.arange(k), per)
    x = centres[labels] + 0.05 * rng.standard_normal((k * per, d)).astype(np.float32)
    return l2_normalise(x), centres


@pytest.mark.parametrize(("init", "k"), [("random", 24), ("kmeans++", 12)])
def test_recovers_well_separated_clusters(init: KMeansInit, k: int) -> None:
    x, centres = separated_clusters(0)
    truth = np.repeat(np.arange(6), 300)
    # Over-clustering (k > 6 true clusters), as in the real pipeline (k=50k): with k = 6 exactly,
    # Lloyd iterations from a random start often stop with two true clusters merged.
    res = fit_spherical_kmeans(x, k, niter=20, seed=1, gpu=False, init=init)
    assert res.centroids.shape == (k, 32) and res.centroids.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(res.centroids, axis=1), 1.0, atol=1e-5)
    # Every true centre has a fitted centroid right on it, and no fitted cluster mixes true ones.
    assert (centres @ res.centroids.T).max(axis=1).min() > 0.99
    labels = assign_nearest(x, res.centroids)
    assert all(np.unique(truth[labels == j]).size <= 1 for j in range(k))
    assert 1 <= res.iterations <= 20 and len(res.objective) == res.iterations
    assert res.objective[-1] >= res.objective[0]
    assert res.seconds >= 0 and not res.gpu


def test_fit_is_deterministic_for_a_seed() -> None:
    x, _ = separated_clusters(3)
    a = fit_spherical_kmeans(x, 6, niter=5, seed=11, gpu=False)
    b = fit_spherical_kmeans(x, 6, niter=5, seed=11, gpu=False)
    np.testing.assert_array_equal(a.centroids, b.centroids)


def test_fit_validates() -> None:
    x, _ = separated_clusters(0, k=2, per=3)
    with pytest.raises(ValueError):
        fit_spherical_kmeans(x, 10, niter=2, seed=0, gpu=False)
    if not gpu_available():
        with pytest.raises(DynamicsError):
            fit_spherical_kmeans(x, 2, niter=2, seed=0, gpu=True)


@settings(max_examples=50)
@given(
    part_sizes=st.lists(st.integers(0, 500), min_size=1, max_size=8),
    n_train=st.integers(0, 3000),
    seed=st.integers(0, 2**32 - 1),
)
def test_training_subset_is_a_deterministic_sample(part_sizes: list[int], n_train: int, seed: int) -> None:
    parts = sample_training_subset(part_sizes, n_train, seed)
    again = sample_training_subset(part_sizes, n_train, seed)
    assert len(parts) == len(part_sizes)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    assert sum(p.size for p in parts) == min(n_train, sum(part_sizes))
    for rows, size in zip(parts, part_sizes, strict=True):
        assert rows.dtype == np.int64
        assert np.all(np.diff(rows) > 0)  # sorted, no repeats
        assert rows.size == 0 or (rows[0] >= 0 and rows[-1] < size)


def test_training_subset_is_uniform_across_parts() -> None:
    sizes = [100_000, 300_000, 600_000]
    parts = sample_training_subset(sizes, 100_000, seed=5)
    shares = np.array([p.size for p in parts]) / 100_000
    np.testing.assert_allclose(shares, [0.1, 0.3, 0.6], atol=0.01)
    assert not np.array_equal(parts[0], sample_training_subset(sizes, 100_000, seed=6)[0])


@pytest.mark.parametrize("backend", ["numpy", "faiss"])
def test_assign_matches_argmax_and_is_batch_independent(backend: AssignBackend) -> None:
    rng = np.random.default_rng(0)
    x = l2_normalise(rng.standard_normal((1000, 16)))
    c = l2_normalise(rng.standard_normal((37, 16)))
    labels = assign_nearest(x, c, backend=backend, gpu=False)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, np.argmax(x.astype(np.float64) @ c.T.astype(np.float64), axis=1))
    np.testing.assert_array_equal(labels, assign_nearest(x, c, batch=7, backend=backend, gpu=False))
    # Embedding parts are stored as float16: accepted, and rounding moves only near-ties.
    half = assign_nearest(x.astype(np.float16), c, backend=backend, gpu=False)
    assert np.mean(half == labels) > 0.98


@pytest.mark.parametrize("backend", ["numpy", "faiss"])
def test_assign_ties_go_to_lowest_index(backend: AssignBackend) -> None:
    c = np.array([[0, 1], [1, 0], [1, 0], [0, 1]], dtype=np.float32)
    x = np.array([[1, 0], [0, 1], [np.sqrt(0.5), np.sqrt(0.5)]] * 30, dtype=np.float32)
    for batch in (1, 65536):
        assert assign_nearest(x, c, batch, backend=backend, gpu=False).tolist() == [1, 0, 0] * 30
    assert assign_nearest(x, c[:1], backend=backend, gpu=False).tolist() == [0] * 90


def test_assign_validates_input() -> None:
    with pytest.raises(ValueError):
        assign_nearest(np.ones((3, 4), dtype=np.float32), np.ones((2, 5), dtype=np.float32))
    with pytest.raises(ValueError):
        assign_nearest(np.ones((3, 4), dtype=np.float32), np.ones((2, 4)), backend="torch")  # type: ignore[arg-type]
