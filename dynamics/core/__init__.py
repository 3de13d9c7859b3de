"""Pure numpy stage algorithms: k-means fit and assignment, refinement, scaling, per-epoch sampling.

Nothing here does I/O; the stage commands read and write artifacts and call these functions.
"""

from dynamics.core.kmeans import (
    AssignBackend,
    KMeansInit,
    KMeansResult,
    assign_nearest,
    fit_spherical_kmeans,
    sample_training_subset,
)
from dynamics.core.refine import refine_centroids
from dynamics.core.sampler import (
    DEFAULT_MISSING_PROB,
    ShardTable,
    export_ref_json,
    iter_ref_json,
    uniform,
    uniforms,
    use_count,
    uses,
)
from dynamics.core.scaling import (
    SampleMode,
    cluster_probs,
    cluster_targets,
    counts_from_labels,
    scale,
    scale_report,
)

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
