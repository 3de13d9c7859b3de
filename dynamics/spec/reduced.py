"""Where the reduced-resolution shard copies apply: pure decisions from the spec (no image library).

The embed stage writes the copies (:mod:`dynamics.stages.embed.reduced`); the trainer, the controller and
``dynamics estimate`` only need these decisions, and the controller image has no image library.
"""

from __future__ import annotations

from collections.abc import Sequence

from dynamics.spec.model import RunSpec

_STEP = 32


def short_side(spec: RunSpec) -> int | None:
    """Short side of the reduced copies, or None when the spec does not ask for them."""
    if not spec.embed.reduced_shards:
        return None
    if spec.embed.reduced_short_side is not None:
        return spec.embed.reduced_short_side
    first = spec.train.phases[0].resolution
    return (first // _STEP + 1) * _STEP


def reduced_epochs(spec: RunSpec, epochs_per_phase: Sequence[int]) -> int:
    """Sampler epochs (from 0) that read the reduced copies: those of the leading phases below the short side."""
    side = short_side(spec)
    total = 0
    for phase, epochs in zip(spec.train.phases, epochs_per_phase, strict=True):
        if side is None or phase.resolution >= side:
            break
        total += epochs
    return total
