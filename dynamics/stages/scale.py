"""``dynamics stage scale``: sizes -> probabilities, per-shard tables, report and plot (single-pod Job)."""

from __future__ import annotations

from collections.abc import Sequence

from dynamics.stages.common import context_from_args, stage_parser


def main(argv: Sequence[str]) -> int:
    """Compute the sampling probabilities; a complete scale step is skipped."""
    parser = stage_parser("scale", "Turn cluster sizes into per-cluster sampling probabilities and write the "
                          "per-shard tables the trainer reads.")
    ctx = context_from_args(parser.parse_args(list(argv)))
    from dynamics.cluster.scale import scale_stage

    scale_stage(ctx.spec, ctx.paths, ctx.storage)
    return 0
