"""Where the reduced-resolution shard copies apply: pure decisions from the spec (no image library).

The embed stage writes the copies (:mod:`dynamics.stages.embed.reduced`); the trainer, the controller and
``dynamics estimate`` only need these decisions, and the controller image has no image library.

**Faithful by construction.** A phase may read the copies only if none of its RandomResizedCrops is
upsampled there, so that it trains on the pixels it would cut from the originals (resampled once more,
never enlarged). torchvision's ``RandomResizedCrop.get_params`` (which open_clip's training transform
uses, aspect range ``ratio = (3/4, 4/3)``) draws, for an image of ``W x H`` pixels:

- up to 10 times: an area ``s * W * H`` with ``s ~ U(scale)`` and an aspect ``a`` log-uniform in
  ``ratio``, giving ``w = round(sqrt(s W H a))``, ``h = round(sqrt(s W H / a))``, accepted if
  ``w <= W`` and ``h <= H``. Then ``min(w, h) >= sqrt(s W H) * sqrt(min(a, 1/a))`` (before rounding, and
  rounding keeps an integer bound), and ``min(a, 1/a) >= k = min(ratio_min, 1 / ratio_max)`` (3/4);
  with ``S`` the short side, ``W H >= S^2``, so ``min(w, h) >= S * sqrt(scale_min * k)``;
- otherwise (the fallback) a centre crop: the whole image if its aspect lies in ``ratio``, else the
  full short side by ``short / ratio`` or ``short * ratio`` on the long one: never under ``S`` per side.

A crop is resized to ``res x res``, so nothing is upsampled when both bounds reach ``res``:

    S >= res / sqrt(scale_min * min(ratio_min, 1 / ratio_max))     (the fallback needs S >= res, implied)

e.g. 112 px at scale (0.4, 1.0): S >= 204.5, stored as 208 (the next multiple of the 16-px JPEG MCU).
The bound is tight: the smallest crop of a square image is ``S * sqrt(0.3)`` wide. Fewer pixels than this
would cut the phase's fine detail (at 128 px, 64-85% of phase 1's crops were upsampled). With the same
RNG the crop boxes on a copy and on its original agree up to rounding (the sampling is scale-free), so a
copy's crop is the original's, resampled twice; ``tests/stages/test_embed_reduced.py`` measures it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dynamics.spec.model import RunSpec

# torchvision's RandomResizedCrop default, which open_clip's training transform keeps.
CROP_RATIO = (3 / 4, 4 / 3)
# Copies get a whole number of 4:2:0 JPEG MCUs (16 px) on the short side.
_STEP = 16


def faithful_short_side(resolution: int, scale_min: float, ratio: tuple[float, float] = CROP_RATIO) -> float:
    """Smallest short side at which no RandomResizedCrop (``scale_min``, ``ratio``) to ``resolution`` upsamples.

    See the module docstring for the derivation, fallback included.
    """
    if not 0 < scale_min <= 1 or not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"need 0 < scale_min <= 1 and 0 < ratio[0] <= ratio[1], got {scale_min}, {ratio}")
    k = min(ratio[0], 1 / ratio[1], 1.0)
    return resolution / math.sqrt(scale_min * k)


def required_short_side(resolution: int, scale_min: float, ratio: tuple[float, float] = CROP_RATIO) -> int:
    """:func:`faithful_short_side` rounded up to a whole number of 16-px MCUs: the default copy size."""
    need = math.ceil(faithful_short_side(resolution, scale_min, ratio) - 1e-9)
    return -(-need // _STEP) * _STEP


def short_side(spec: RunSpec) -> int | None:
    """Short side of the reduced copies, or None when the spec does not ask for them.

    Default: the faithful size for phase 1 (:func:`required_short_side` of its resolution and the
    augmentation's scale).
    """
    if not spec.embed.reduced_shards:
        return None
    if spec.embed.reduced_short_side is not None:
        return spec.embed.reduced_short_side
    return required_short_side(spec.train.phases[0].resolution, spec.train.augmentation.scale[0])


def reads_copies(spec: RunSpec, resolution: int) -> bool:
    """Whether a phase at ``resolution`` can read the copies without upsampling any crop."""
    side = short_side(spec)
    return side is not None and side >= faithful_short_side(resolution, spec.train.augmentation.scale[0])


def reduced_epochs(spec: RunSpec, epochs_per_phase: Sequence[int]) -> int:
    """Sampler epochs (from 0) that read the reduced copies: those of the leading phases they serve faithfully."""
    total = 0
    for phase, epochs in zip(spec.train.phases, epochs_per_phase, strict=True):
        if not reads_copies(spec, phase.resolution):
            break
        total += epochs
    return total


def reduced_note(spec: RunSpec) -> str:
    """One line on the copies for logs and reports: which phases read them, and what the size guarantees."""
    scale = spec.train.augmentation.scale[0]
    readers = [p.name for p in spec.train.phases if reads_copies(spec, p.resolution)]
    first = spec.train.phases[0].resolution
    return (f"no crop upsampled for phases {', '.join(readers) or 'none'}: phase 1 at {first} px and scale "
            f"{scale:g} needs >= {faithful_short_side(first, scale):.1f} px")
