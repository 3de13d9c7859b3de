"""Centring + PCA whitening: what it computes, that it is deterministic, and that it survives storage."""

from __future__ import annotations

import numpy as np
import pytest

from dynamics.core.whiten import fit_whitening, whitening_from_array, whitening_to_array


def _two_blobs(rng: np.random.Generator, n: int = 400, d: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative 'images' of two kinds, unit length: like raw pixel vectors, every pair has a high cosine."""
    base = np.abs(rng.normal(size=(2, d))) + 2.0
    labels = np.arange(n) % 2
    x = base[labels] + rng.normal(scale=0.3, size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def test_whitened_sample_has_identity_covariance() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 10)) @ rng.normal(size=(10, 10)) + 5.0
    w = fit_whitening(x, dim=6)
    y = (x.astype(np.float32) - w.mean) @ w.projection
    assert w.dim == 6
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-3)
    np.testing.assert_allclose(np.cov(y, rowvar=False), np.eye(6), atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(w.apply(x), axis=1), 1.0, atol=1e-5)


def test_whitening_gives_cosine_a_meaning_on_non_negative_vectors() -> None:
    x, labels = _two_blobs(np.random.default_rng(1))
    raw_between = float((x[labels == 0] @ x[labels == 1].T).mean())
    y = fit_whitening(x, dim=8).apply(x)
    within = float((y[labels == 0] @ y[labels == 0].T).mean())
    between = float((y[labels == 0] @ y[labels == 1].T).mean())
    assert raw_between > 0.9  # the raw space: everything looks alike
    assert between < 0.0 < within


def test_fit_is_deterministic_and_order_independent() -> None:
    x, _ = _two_blobs(np.random.default_rng(2))
    a, b = fit_whitening(x, 8), fit_whitening(x.copy(), 8)
    assert a.mean.tobytes() == b.mean.tobytes() and a.projection.tobytes() == b.projection.tobytes()
    shuffled = fit_whitening(x[np.random.default_rng(3).permutation(len(x))], 8)
    np.testing.assert_allclose(shuffled.apply(x), a.apply(x), atol=1e-4)


def test_stored_array_round_trip_applies_identically() -> None:
    x, _ = _two_blobs(np.random.default_rng(4))
    w = fit_whitening(x, 5)
    back = whitening_from_array(whitening_to_array(w))
    assert back.apply(x).tobytes() == w.apply(x).tobytes()


def test_dim_is_capped_by_the_sample_rank_and_degenerate_input_is_refused() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(50, 3)) @ rng.normal(size=(3, 12))  # rank 3 in 12 dimensions
    assert fit_whitening(x, 10).dim == 3
    with pytest.raises(ValueError, match="no variance"):
        fit_whitening(np.ones((5, 4)), 2)
    with pytest.raises(ValueError, match="dimension"):
        fit_whitening(x, 3).apply(np.zeros((2, 5)))
