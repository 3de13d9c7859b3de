"""``sample.classReport``: the class-aware view of a sampling decision, for data with ``.cls`` labels.

Each class's share of the data vs of an expected epoch, the head/tail thirds and cluster purity
(:func:`dynamics.core.diagnostics.class_report`). Labels are not kept by the embed stage, so this
reads every shard once more: cheap for evaluation-sized data, an opt-in pass at full scale.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from dynamics.core.diagnostics import class_report
from dynamics.spec.checks import embed_parts
from dynamics.spec.model import RunSpec, SampleMode
from dynamics.stages.inputs import read_keys
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths
from dynamics.storage.shards import SkipStats, iter_samples, resolve_shards

log = logging.getLogger("dynamics.scale")


def _shard_labels(url: str, cfg: storage.StorageConfig) -> dict[str, int | None]:
    return {s.key: s.label for s in iter_samples(url, cfg, SkipStats())}


def shard_class_report(spec: RunSpec, paths: RunPaths, probs: np.ndarray,
                       cfg: storage.StorageConfig) -> dict[str, Any] | None:
    """The class report of the run's data, or None (logged) when some embedded sample has no label."""
    urls = resolve_shards(spec.data.shards, cfg)
    classes, clusters = [], []
    for part in range(embed_parts(spec)):
        shard_index, keys = read_keys(paths, part, cfg)
        labels_of: dict[int, dict[str, int | None]] = {}
        for shard in np.unique(shard_index).tolist():
            labels_of[shard] = _shard_labels(urls[shard], cfg)
        part_classes = [labels_of[int(s)].get(k) for s, k in zip(shard_index, keys, strict=True)]
        if any(c is None for c in part_classes):
            log.warning("sample.classReport: some samples of part %d have no .cls label; no class report", part)
            return None
        classes += part_classes
        clusters.append(storage.read_npy(paths.assign_labels(part), cfg).astype(np.int64))
    if not classes:
        return None
    cls = np.asarray(classes, dtype=np.int64)
    cl = np.concatenate(clusters)
    weight = probs[cl] if spec.sample.mode is SampleMode.REPEAT else np.minimum(probs[cl], 1.0)
    return class_report(cls, cl, weight, [str(i) for i in range(int(cls.max()) + 1)])
