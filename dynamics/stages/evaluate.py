"""``dynamics stage eval``: zero-shot evaluation of the final checkpoint (single-pod Job)."""

from __future__ import annotations

from collections.abc import Sequence

from dynamics.stages.common import context_from_args, stage_parser


def main(argv: Sequence[str]) -> int:
    """Evaluate on every eval set of the spec; a complete evaluation is skipped."""
    parser = stage_parser("eval", "Zero-shot classification of the final checkpoint on the spec's eval sets.")
    ctx = context_from_args(parser.parse_args(list(argv)))
    from dynamics.evaluate import evaluate

    evaluate(ctx.spec, ctx.paths, ctx.storage)
    return 0
