"""The long-tail experiment's data: scikit-learn's bundled handwritten digits, made long-tailed by class.

The images are the UCI "Optical Recognition of Handwritten Digits" test set as shipped inside the
scikit-learn wheel (``sklearn.datasets.load_digits``: 1,797 8x8 greyscale images, 10 classes, read
from the installed package, never downloaded). Dataset licence: CC BY 4.0 (UCI Machine Learning
Repository); scikit-learn itself is BSD-3-Clause.

A fixed, seeded split (independent of the training seeds) holds out a balanced evaluation set and
subsamples the rest exponentially by class: the class of rank r keeps
``round(n_max * imbalance ** (-r / (C - 1)))`` images, so the commonest has ``imbalance`` times as
many as the rarest. Which digit gets which rank is part of the seeded split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dynamics.errors import DynamicsError

CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEMPLATES = ("a photo of the digit {}.", "a handwritten {}.", "the number {}.", "a scan of a written {}.")


@dataclass(frozen=True)
class Split:
    """Training images (long-tailed) and evaluation images (balanced), uint8 8x8 in [0, 16]."""

    train_x: np.ndarray
    train_y: np.ndarray
    eval_x: np.ndarray
    eval_y: np.ndarray


def load_images() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) uint8 in [0, 16], labels (1797,) int64) from the installed scikit-learn."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DynamicsError("the long-tail experiment needs scikit-learn (its bundled digits dataset)",
                            hint="pip install -c requirements/lock.txt 'dynamics[experiment]'") from exc
    digits = load_digits()
    return digits.images.astype(np.uint8), digits.target.astype(np.int64)


def long_tail_split(images: np.ndarray, labels: np.ndarray, *, eval_per_class: int, imbalance: float,
                    seed: int) -> Split:
    """Balanced held-out eval set, long-tailed training set (see the module doc)."""
    rng = np.random.default_rng(seed)
    n_classes = int(labels.max()) + 1
    rank_of = rng.permutation(n_classes)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(n_classes)]
    n_max = min(len(idx) for idx in per_class) - eval_per_class
    if n_max < 1:
        raise DynamicsError(f"eval-per-class {eval_per_class} leaves no training images",
                            hint="lower --eval-per-class", exit_code=2)
    train, held = [], []
    for c, idx in enumerate(per_class):
        held.append(idx[:eval_per_class])
        keep = max(1, round(n_max * imbalance ** (-rank_of[c] / (n_classes - 1))))
        train.append(idx[eval_per_class:eval_per_class + keep])
    tr, ev = np.sort(np.concatenate(train)), np.sort(np.concatenate(held))
    return Split(images[tr], labels[tr], images[ev], labels[ev])
