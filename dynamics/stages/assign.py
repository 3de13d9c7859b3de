"""``dynamics stage assign``: nearest kept centroid for one embed part (Indexed Job)."""

from __future__ import annotations

from collections.abc import Sequence

from dynamics.stages.common import context_from_args, stage_parser


def main(argv: Sequence[str]) -> int:
    """Assign the part given by --index or JOB_COMPLETION_INDEX; a complete part is skipped."""
    parser = stage_parser("assign", "Assign every embedding of one part to its nearest kept centroid.",
                          indexed=True)
    ctx = context_from_args(parser.parse_args(list(argv)))
    from dynamics.cluster.assign import assign_part

    assert ctx.index is not None
    assign_part(ctx.spec, ctx.paths, ctx.index, ctx.storage)
    return 0
