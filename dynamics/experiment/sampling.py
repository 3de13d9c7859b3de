"""The experiment's data side, through the pipeline's own pieces: the ``pixels`` backend, the optional
PCA whitening, spherical k-means, refinement, assignment and the scale formula; then epochs drawn
the way the trainer draws them (cap mode: each sample kept with probability ``min(p, 1)``; repeat
mode: ``floor(p)`` copies plus one more with probability ``frac(p)``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from dynamics.core.diagnostics import (
    class_report,
    embedding_diagnostics,
    sampling_diagnostics,
)
from dynamics.core.kmeans import assign_nearest, fit_spherical_kmeans
from dynamics.core.refine import refine_centroids
from dynamics.core.scaling import SampleMode, cluster_probs, cluster_targets, expected_counts
from dynamics.core.whiten import fit_whitening
from dynamics.experiment.digits import CLASS_NAMES
from dynamics.stages.embed.backends import PixelsBackend


@dataclass(frozen=True)
class Knobs:
    """The method's settings for one experiment (the spec's cluster.* and sample.* fields)."""

    k: int
    iterations: int
    threshold: float
    whiten_dim: int | None  # None: no whitening (the method's default)
    alpha: float
    budget: float


def to_pil(image: np.ndarray) -> Image.Image:
    """A digit (8x8 uint8 in [0, 16]) as an 8-bit greyscale PIL image."""
    return Image.fromarray((image.astype(np.float32) * (255.0 / 16.0)).round().astype(np.uint8), mode="L")


def pixel_embeddings(images: np.ndarray) -> np.ndarray:
    """The ``pixels`` backend's embeddings (8x8, centred per image, unit length)."""
    backend = PixelsBackend(8)
    batch = torch.stack([backend.transform(to_pil(im)) for im in images])
    return backend.embed(batch)


def cluster_probabilities(x: np.ndarray, knobs: Knobs, seed: int,
                          whiten: bool = True) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(per-sample cluster, per-sample probability, diagnostics) as cluster-fit/assign/scale compute them
    (``whiten``: apply ``knobs.whiten_dim`` PCA whitening when it is set)."""
    if whiten and knobs.whiten_dim is not None:
        x = fit_whitening(x, knobs.whiten_dim).apply(x)
    fit = fit_spherical_kmeans(x, knobs.k, knobs.iterations, seed, gpu=False)
    kept = fit.centroids[refine_centroids(fit.centroids, knobs.threshold)]
    labels = assign_nearest(x, kept)
    sizes = np.bincount(labels, minlength=kept.shape[0]).astype(np.int64)
    probs = cluster_probs(sizes, cluster_targets(sizes, knobs.alpha, knobs.budget))
    diag = {"kept_clusters": int(kept.shape[0]),
            **embedding_diagnostics(x, fit.centroids, kept, knobs.threshold),
            **sampling_diagnostics(sizes, expected_counts(sizes, probs, "cap"))}
    return labels, probs[labels], diag


def oracle_probabilities(classes: np.ndarray, knobs: Knobs) -> np.ndarray:
    """Per-sample probabilities when the clusters are the true classes (the ceiling of the mechanism)."""
    sizes = np.bincount(classes).astype(np.int64)
    return cluster_probs(sizes, cluster_targets(sizes, knobs.alpha, knobs.budget))[classes]


def class_composition(classes: np.ndarray, clusters: np.ndarray, sample_probs: np.ndarray,
                      mode: SampleMode = "cap") -> dict[str, Any]:
    """The class-aware report of one sampling decision (expected uses per epoch: min(p, 1) in cap mode,
    p in repeat mode)."""
    weight = np.minimum(sample_probs, 1.0) if mode == "cap" else np.asarray(sample_probs, dtype=np.float64)
    return class_report(classes, clusters, weight, CLASS_NAMES)


def epoch_draw(sample_probs: np.ndarray, rng: np.random.Generator, mode: SampleMode = "cap") -> np.ndarray:
    """One epoch's sample indices, unshuffled: cap keeps each sample with probability min(p, 1); repeat
    takes floor(p) copies and one more with probability frac(p)."""
    p = np.asarray(sample_probs, dtype=np.float64)
    if mode == "cap":
        return np.flatnonzero(rng.random(p.size) < np.minimum(p, 1.0))
    copies = np.floor(p).astype(np.int64) + (rng.random(p.size) < p - np.floor(p))
    return np.repeat(np.arange(p.size), copies)


def sample_stream(sample_probs: np.ndarray, seed: int, mode: SampleMode = "cap") -> Iterator[int]:
    """Training-sample indices, epoch after epoch (a new draw each epoch), shuffled within the epoch."""
    epoch = 0
    while True:
        rng = np.random.default_rng([seed, epoch])
        yield from rng.permutation(epoch_draw(sample_probs, rng, mode)).tolist()
        epoch += 1


def realised_shares(classes: np.ndarray, key_log: list[np.ndarray], n_classes: int) -> np.ndarray:
    """Each class's share of the samples a model actually saw (from the trainer's key log)."""
    seen = np.concatenate(key_log) if key_log else np.zeros(0, np.int64)
    counts = np.bincount(classes[seen], minlength=n_classes).astype(np.float64)
    return counts / max(counts.sum(), 1.0)
