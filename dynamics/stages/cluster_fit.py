"""``dynamics stage cluster-fit``: spherical k-means + refinement (single-pod Job)."""

from __future__ import annotations

from collections.abc import Sequence

from dynamics.stages.common import context_from_args, stage_parser


def main(argv: Sequence[str]) -> int:
    """Fit and refine the centroids; a complete fit is skipped."""
    parser = stage_parser("cluster-fit", "Fit spherical k-means on a seeded subset of all embeddings, "
                          "then drop centroids too similar to an already kept one.")
    ctx = context_from_args(parser.parse_args(list(argv)))
    from dynamics.cluster.fit import cluster_fit

    cluster_fit(ctx.spec, ctx.paths, ctx.storage)
    return 0
