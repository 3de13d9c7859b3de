"""Pure numpy stage algorithms: k-means fit and assignment, refinement, scaling, per-epoch sampling.

Nothing here does I/O; the stage commands read and write artifacts and call these functions.
"""

from __future__ import annotations

import importlib
from typing import Any

# Where each name lives: imported on first use (PEP 562), so importing dynamics.core.errors (every
# DynamicsError) does not load numpy for commands that never compute anything.
_HOMES = {
    "AssignBackend": "dynamics.core.kmeans",
    "KMeansInit": "dynamics.core.kmeans",
    "KMeansResult": "dynamics.core.kmeans",
    "assign_nearest": "dynamics.core.kmeans",
    "fit_spherical_kmeans": "dynamics.core.kmeans",
    "sample_training_subset": "dynamics.core.kmeans",
    "refine_centroids": "dynamics.core.refine",
    "DEFAULT_MISSING_PROB": "dynamics.core.sampler",
    "ShardTable": "dynamics.core.sampler",
    "export_ref_json": "dynamics.core.sampler",
    "iter_ref_json": "dynamics.core.sampler",
    "uniform": "dynamics.core.sampler",
    "uniforms": "dynamics.core.sampler",
    "use_count": "dynamics.core.sampler",
    "uses": "dynamics.core.sampler",
    "SampleMode": "dynamics.core.scaling",
    "cluster_probs": "dynamics.core.scaling",
    "cluster_targets": "dynamics.core.scaling",
    "counts_from_labels": "dynamics.core.scaling",
    "scale": "dynamics.core.scaling",
    "scale_report": "dynamics.core.scaling",
}

__all__ = [
    "DEFAULT_MISSING_PROB",
    "AssignBackend",
    "KMeansInit",
    "KMeansResult",
    "SampleMode",
    "ShardTable",
    "assign_nearest",
    "cluster_probs",
    "cluster_targets",
    "counts_from_labels",
    "export_ref_json",
    "fit_spherical_kmeans",
    "iter_ref_json",
    "refine_centroids",
    "sample_training_subset",
    "scale",
    "scale_report",
    "uniform",
    "uniforms",
    "use_count",
    "uses",
]


def __getattr__(name: str) -> Any:
    """The re-exported names, each imported from its module on first use."""
    if name not in _HOMES:
        raise AttributeError(f"module 'dynamics.core' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value
