"""``dynamics stage embed``: embed one part of the shards (the embed Indexed Job's command)."""

from __future__ import annotations

from collections.abc import Sequence

from dynamics.stages.common import context_from_args, stage_parser


def main(argv: Sequence[str]) -> int:
    """Embed the part given by --index or JOB_COMPLETION_INDEX; a complete part is skipped."""
    parser = stage_parser("embed")
    ctx = context_from_args(parser.parse_args(list(argv)))
    from dynamics.stages.embed.run import embed_part

    assert ctx.index is not None
    embed_part(ctx.spec, ctx.paths, ctx.index, ctx.storage)
    return 0
