"""Image bytes -> training tensor: open_clip's train transform with crop-aware reduced-scale JPEG decoding.

open_clip's training transform starts with torchvision's ``RandomResizedCrop``, which picks a crop of
the full-resolution image and resizes it to the output size (for web images almost always a
downscale). :class:`DraftRandomResizedCrop` draws the very same crop parameters (same RNG calls, from
the image size that the JPEG header gives without decoding), then lets libjpeg decode at the smallest
DCT scale (1/2, 1/4 or 1/8) at which that crop still covers the output size, and resamples the crop
from there. The output size and the crop distribution are unchanged; decoding and resampling touch
up to 64x fewer pixels. Non-JPEG images are decoded at full size.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image
from torchvision.transforms import Compose, InterpolationMode, RandomResizedCrop

from dynamics.storage.shards import CorruptImage

_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
_PIL_FILTERS = {
    InterpolationMode.BICUBIC: Image.Resampling.BICUBIC,
    InterpolationMode.BILINEAR: Image.Resampling.BILINEAR,
    InterpolationMode.NEAREST: Image.Resampling.NEAREST,
    InterpolationMode.LANCZOS: Image.Resampling.LANCZOS,
}


class DraftRandomResizedCrop(RandomResizedCrop):
    """``RandomResizedCrop`` that decodes a lazily opened JPEG only at the scale its crop needs."""

    def __init__(self, base: RandomResizedCrop, draft: bool = True) -> None:
        super().__init__(base.size, scale=base.scale, ratio=base.ratio, interpolation=base.interpolation,
                         antialias=base.antialias)
        self.draft = draft

    def forward(self, img: Image.Image) -> Image.Image:
        """Crop and resize ``img`` (opened, possibly not yet decoded) to the output size."""
        top, left, height, width = self.get_params(img, list(self.scale), list(self.ratio))
        out_h, out_w = self.size
        full_w, full_h = img.size
        if self.draft and img.format == "JPEG":
            # draft() picks the largest reduction keeping each side >= the requested one, i.e. the
            # crop keeps >= out_w x out_h pixels: still a downscale, as without draft.
            img.draft("RGB", (math.ceil(full_w * out_w / width), math.ceil(full_h * out_h / height)))
        img = img.convert("RGB")  # decodes (at the drafted scale)
        sx, sy = img.size[0] / full_w, img.size[1] / full_h
        box = (left * sx, top * sy, (left + width) * sx, (top + height) * sy)
        return img.resize((out_w, out_h), resample=_PIL_FILTERS[self.interpolation], box=box)


class TrainImageTransform:
    """Callable ``(image bytes, extension) -> tensor`` built from open_clip's training transform."""

    def __init__(self, transform: Callable[[Any], torch.Tensor], draft: bool = True) -> None:
        steps = list(transform.transforms) if isinstance(transform, Compose) else []
        if not steps or not isinstance(steps[0], RandomResizedCrop):
            raise TypeError("expected open_clip's training transform (Compose starting with RandomResizedCrop)")
        self.crop = DraftRandomResizedCrop(steps[0], draft=draft)
        self.rest = Compose(steps[1:])

    def __call__(self, data: bytes, ext: str) -> torch.Tensor:
        """Decode and augment one image; raises :class:`CorruptImage` for undecodable bytes."""
        try:
            image = self.crop(Image.open(io.BytesIO(data)))
        except _DECODE_ERRORS as exc:
            raise CorruptImage(f"cannot decode .{ext} image: {exc}") from exc
        return self.rest(image)
