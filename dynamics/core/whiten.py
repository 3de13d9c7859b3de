"""Centring + PCA whitening of embeddings, fitted on the clustering sample (pure numpy).

Why: cosine similarity only carries meaning when the vectors are centred. DINOv2 embeddings
roughly are; cheap embeddings are not (raw pixel vectors are all non-negative, so any two images
have a high cosine and a refinement threshold calibrated for DINOv2, 0.70, merges nothing or
everything). Subtracting the sample mean, rotating onto the top principal axes and dividing each
axis by its standard deviation makes every direction count equally; after re-normalising to unit
length, spherical k-means and the refinement threshold see the data's structure, not its offset.

The fit is deterministic (eigendecomposition of the covariance in float64, eigenvector signs
fixed so the largest-magnitude entry of each is positive) and is stored with the run, so the
assign step applies exactly the transform the centroids were fitted in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Axes whose variance is below this fraction of the largest one are dropped: dividing by a near-zero
# standard deviation would blow numerical noise up to unit scale.
_MIN_RELATIVE_VARIANCE = 1e-6


@dataclass(frozen=True)
class Whitening:
    """``y = normalise((x - mean) @ projection)``; ``projection`` is (d_in, d_out) float32."""

    mean: np.ndarray
    projection: np.ndarray

    @property
    def dim(self) -> int:
        """Output dimension."""
        return int(self.projection.shape[1])

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Whitened, unit-length float32 rows of ``x`` (n, d_in); a zero row stays zero."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"expected rows of dimension {self.mean.shape[0]}, got shape {x.shape}")
        y = (x - self.mean) @ self.projection
        norms = np.linalg.norm(y, axis=1, keepdims=True)
        return (y / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def fit_whitening(x: np.ndarray, dim: int) -> Whitening:
    """Fit centring + PCA whitening to ``dim`` axes (fewer when the sample has fewer usable axes)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need at least 2 rows to fit a whitening, got shape {x.shape}")
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    mean = x.mean(axis=0)
    centred = x - mean
    cov = centred.T @ centred / (x.shape[0] - 1)
    eigval, eigvec = np.linalg.eigh(cov)
    order = np.argsort(-eigval, kind="stable")
    eigval, eigvec = eigval[order], eigvec[:, order]
    usable = eigval > max(float(eigval[0]), 1e-30) * _MIN_RELATIVE_VARIANCE
    keep = min(dim, int(usable.sum()))
    if keep == 0:
        raise ValueError("the sample has no variance to whiten (all rows equal)")
    eigval, eigvec = eigval[:keep], eigvec[:, :keep]
    # Fix each axis' sign so the same data always gives the same projection.
    pivot = np.abs(eigvec).argmax(axis=0)
    eigvec = eigvec * np.sign(eigvec[pivot, np.arange(keep)])
    projection = eigvec / np.sqrt(eigval)
    return Whitening(mean.astype(np.float32), projection.astype(np.float32))


def whitening_to_array(w: Whitening) -> np.ndarray:
    """One (d_in, 1 + d_out) float32 array to store with the run: the mean as column 0, then P."""
    return np.hstack([w.mean[:, None], w.projection]).astype(np.float32)


def whitening_from_array(a: np.ndarray) -> Whitening:
    """The inverse of :func:`whitening_to_array`."""
    a = np.asarray(a, dtype=np.float32)
    if a.ndim != 2 or a.shape[1] < 2:
        raise ValueError(f"not a stored whitening: shape {a.shape}")
    return Whitening(np.ascontiguousarray(a[:, 0]), np.ascontiguousarray(a[:, 1:]))
