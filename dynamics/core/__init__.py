"""Pure numpy stage algorithms: k-means fit and assignment, refinement, scaling, per-epoch sampling.

Nothing here does I/O; the stage commands read and write artifacts and call these functions.
"""

from dynamics.core.kmeans import KMeansResult, assign_nearest, fit_spherical_kmeans, sample_training_subset
from dynamics.core.refine import refine_centroids
from dynamics.core.sampler import ShardTable, export_ref_json, use_count, uses
from dynamics.core.scaling import (
    SampleMode,
    cluster_probs,
    cluster_targets,
    counts_from_labels,
    scale,
    scale_report,
)

__all__ = [
    "KMeansResult",
    "SampleMode",
    "ShardTable",
    "assign_nearest",
    "cluster_probs",
    "cluster_targets",
    "counts_from_labels",
    "export_ref_json",
    "fit_spherical_kmeans",
    "refine_centroids",
    "sample_training_subset",
    "scale",
    "scale_report",
    "use_count",
    "uses",
]
