"""Image bytes -> training tensor: open_clip's train transform with crop-aware reduced-scale JPEG decoding.

open_clip's training transform starts with torchvision's ``RandomResizedCrop``, which picks a crop of
the full-resolution image and resizes it to the output size (for web images almost always a
downscale). :class:`DraftRandomResizedCrop` draws the very same crop parameters (same RNG calls, from
the image size that the JPEG header gives without decoding), then lets libjpeg decode at the smallest
DCT scale (1/2, 1/4 or 1/8) at which that crop still covers the output size, and resamples the crop
from there. The output size and the crop distribution are unchanged; decoding and resampling touch
up to 64x fewer pixels. Non-JPEG images are decoded at full size.

The resample itself is torch's antialiased uint8 ``interpolate`` (the transform's interpolation): what
torchvision's ``RandomResizedCrop`` does to tensors, and what ``train.decode: device`` does on the GPU.
It takes a third to a half of the CPU time of PIL's bicubic ``resize``, the loader's largest cost at
the reduced copies' size; its bicubic kernel (a = -0.75) differs from PIL's (a = -0.5) by about 0.2 of
255 levels on average (``tests/stages/test_train_device_decode.py``).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import Compose, InterpolationMode, Normalize, RandomResizedCrop
from torchvision.transforms.functional import pil_to_tensor

from dynamics.stages.train.gpu_decode import Crop, JpegHeader, is_jpeg, jpeg_header, jpeg_size, random_crop
from dynamics.storage.shards import CorruptImage

_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
_PIL_FILTERS = {
    InterpolationMode.BICUBIC: Image.Resampling.BICUBIC,
    InterpolationMode.BILINEAR: Image.Resampling.BILINEAR,
    InterpolationMode.NEAREST: Image.Resampling.NEAREST,
    InterpolationMode.LANCZOS: Image.Resampling.LANCZOS,
}
_TORCH_MODES = {InterpolationMode.BICUBIC: "bicubic", InterpolationMode.BILINEAR: "bilinear",
                InterpolationMode.NEAREST: "nearest"}


class DraftRandomResizedCrop(RandomResizedCrop):
    """``RandomResizedCrop`` that decodes a lazily opened JPEG only at the scale its crop needs."""

    def __init__(self, base: RandomResizedCrop, draft: bool = True) -> None:
        super().__init__(base.size, scale=base.scale, ratio=base.ratio, interpolation=base.interpolation,
                         antialias=base.antialias)
        self.draft = draft
        self._scale = (float(self.scale[0]), float(self.scale[1]))
        self._ratio = (float(self.ratio[0]), float(self.ratio[1]))

    def forward(self, img: Image.Image) -> Image.Image:
        """Crop and resize ``img`` (opened, possibly not yet decoded) to the output size."""
        top, left, height, width = self.get_params(img, list(self.scale), list(self.ratio))
        return self.resized_crop(img, (left, top, left + width, top + height))

    def resized_crop(self, img: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
        """The output-size resample of ``box`` (left, top, right, bottom in ``img``'s full-size pixels), by PIL."""
        img, scaled = self.decode_box(img, box)
        out_h, out_w = self.size
        return img.resize((out_w, out_h), resample=_PIL_FILTERS[self.interpolation], box=scaled)

    def decode_box(self, img: Image.Image, box: tuple[float, float, float, float],
                   ) -> tuple[Image.Image, tuple[float, float, float, float]]:
        """``img`` decoded at the smallest DCT scale that keeps ``box`` >= the output size, and the box there."""
        full_w, full_h = img.size
        if self.draft and img.format == "JPEG":
            # draft() picks the largest reduction keeping each side >= the requested one, i.e. the
            # crop keeps >= the output size in pixels: still a downscale, as without draft.
            img.draft("RGB", _draft_request(img.size, box, self.size))
        img = _decoded_rgb(img)  # decodes (at the drafted scale)
        sx, sy = img.size[0] / full_w, img.size[1] / full_h
        return img, (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)

    def tensor(self, img: Image.Image) -> torch.Tensor:
        """uint8 ``(3, H, W)`` crop of ``img``, resampled by torch (see :class:`TrainImageTransform`)."""
        top, left, height, width = self.get_params(img, list(self.scale), list(self.ratio))
        return self._pil_crop(img, (left, top, left + width, top + height))

    def jpeg_tensor(self, data: bytes, header: JpegHeader) -> torch.Tensor:
        """:meth:`tensor` of a JPEG, the crop drawn from its header: decoded by torchvision's libjpeg when no
        DCT scale applies (same pixels as PIL's, without PIL's open and array copy), else by PIL with draft.
        """
        c = self.draw((header.width, header.height))
        box = (c.left, c.top, c.left + c.width, c.top + c.height)
        scaled = self.draft and _draft_factor((header.width, header.height), box, self.size) > 1
        pixels = None if scaled else _libjpeg_rgb(data, header)
        if pixels is None:  # PIL decodes it at the DCT scale, or says why it cannot
            return self._pil_crop(Image.open(io.BytesIO(data)), box)
        return self._resample(pixels[:, c.top : c.top + c.height, c.left : c.left + c.width])

    def draw(self, size: tuple[int, int]) -> Crop:
        """A crop of a ``size`` (width, height) image: torchvision's ``get_params``, the same draws from the
        same generator (checked in the tests), without an image."""
        return random_crop(size, self._scale, torch.default_generator, self._ratio)

    def _pil_crop(self, img: Image.Image, box: tuple[float, float, float, float]) -> torch.Tensor:
        decoded, box = self.decode_box(img, box)
        # Whole pixels of the decoded image: exact without draft, within half a drafted pixel with it.
        x0, y0 = min(round(box[0]), decoded.size[0] - 1), min(round(box[1]), decoded.size[1] - 1)
        x1, y1 = max(round(box[2]), x0 + 1), max(round(box[3]), y0 + 1)
        pixels = torch.from_numpy(np.array(decoded))  # (H, W, 3): a channels-last view below
        return self._resample(pixels[y0:y1, x0:x1].permute(2, 0, 1))

    def _resample(self, patch: torch.Tensor) -> torch.Tensor:
        """uint8 ``(3, h, w)`` -> the output size. Channels-last in memory: torch's fastest uint8 antialiased
        kernel, and the same values whatever layout the patch came in (checked in the tests)."""
        patch = patch[None].contiguous(memory_format=torch.channels_last)
        out = F.interpolate(patch, size=tuple(self.size), mode=_TORCH_MODES[self.interpolation],
                            antialias=self.interpolation is not InterpolationMode.NEAREST)
        return out[0]  # channels-last in memory; collation stacks it into a contiguous batch


def _libjpeg_rgb(data: bytes, header: JpegHeader) -> torch.Tensor | None:
    """uint8 ``(3, H, W)`` by torchvision's libjpeg, or None where it fails or disagrees with the header."""
    try:
        pixels = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except RuntimeError:
        return None
    return pixels if tuple(pixels.shape[1:]) == (header.height, header.width) else None


def _bomb(header: JpegHeader) -> bool:
    """Whether PIL would warn or refuse (decompression bomb): such images keep going through PIL, which says so."""
    limit = Image.MAX_IMAGE_PIXELS
    return limit is not None and header.width * header.height > limit


def _draft_request(size: tuple[int, int], box: tuple[float, float, float, float],
                   out: Sequence[int]) -> tuple[int, int]:
    """The full-image size at which ``box`` of a ``size`` image would be the output size ``out`` (h, w)."""
    return math.ceil(size[0] * out[1] / (box[2] - box[0])), math.ceil(size[1] * out[0] / (box[3] - box[1]))


def _draft_factor(size: tuple[int, int], box: tuple[float, float, float, float], out: Sequence[int]) -> int:
    """The DCT scale (1, 2, 4, 8) PIL's ``draft`` picks for ``box`` of a ``size`` JPEG (as ``decode_box`` asks)."""
    want_w, want_h = _draft_request(size, box, out)
    room = min(size[0] // want_w, size[1] // want_h)
    return next(a for a in (8, 4, 2, 1) if room >= a or a == 1)


def _decoded_rgb(img: Image.Image) -> Image.Image:
    """``img`` decoded, as RGB: no ``convert`` copy when the file already is (most JPEGs)."""
    img.load()
    return img if img.mode == "RGB" else img.convert("RGB")


class TrainImageTransform:
    """Callable ``(image bytes, extension) -> uint8 crop`` built from open_clip's training transform.

    The crop stays uint8 ``(3, H, W)``: the trainer normalises it on the device with :attr:`mean` and
    :attr:`std` (:func:`~dynamics.stages.train.gpu_decode.normalise`), so workers skip the float
    conversion and hand the trainer 4x fewer bytes through shared and pinned memory. Normalised, a crop is
    bit for bit the transform's own ``ToTensor`` + ``Normalize`` of it, and within a fraction of a level
    on average of open_clip's PIL-resampled crop (see the module docstring).
    """

    def __init__(self, transform: Callable[[Any], torch.Tensor], draft: bool = True) -> None:
        steps = list(transform.transforms) if isinstance(transform, Compose) else []
        if not steps or not isinstance(steps[0], RandomResizedCrop):
            raise TypeError("expected open_clip's training transform (Compose starting with RandomResizedCrop)")
        rest = steps[1:]
        norms = [s for s in rest if isinstance(s, Normalize)]
        unknown = [s for s in rest if not isinstance(s, Normalize) and _name(s) not in _PASS_THROUGH]
        if len(norms) != 1 or unknown:
            # Any other augmentation would have to run before normalisation, on the worker's CPU.
            raise TypeError(f"unsupported steps in the training transform: {unknown or rest}")
        self.crop = DraftRandomResizedCrop(steps[0], draft=draft)
        self.mean = tuple(float(v) for v in norms[0].mean)
        self.std = tuple(float(v) for v in norms[0].std)

    @property
    def size(self) -> int:
        """Output side in pixels."""
        return int(self.crop.size[0])

    def __call__(self, data: bytes, ext: str) -> torch.Tensor:
        """Decode and crop one image to uint8; raises :class:`CorruptImage` for undecodable bytes."""
        try:
            if self.crop.interpolation not in _TORCH_MODES:
                return pil_to_tensor(self.crop(Image.open(io.BytesIO(data))))
            header = jpeg_header(data)
            if header is not None and header.components in (1, 3) and not _bomb(header):
                return self.crop.jpeg_tensor(data, header)  # grey or YCbCr: torchvision decodes as PIL does
            return self.crop.tensor(Image.open(io.BytesIO(data)))
        except _DECODE_ERRORS as exc:
            raise CorruptImage(f"cannot decode .{ext} image: {exc}") from exc

    def for_device(self, data: bytes, ext: str) -> tuple[bytes | torch.Tensor, Crop | None]:
        """What the device decoder needs for one image: JPEG bytes and their crop box (drawn like
        :meth:`__call__` draws it, from the header alone), or a uint8 crop decoded here for other formats.
        """
        if not is_jpeg(data):
            return self(data, ext), None
        return data, self.crop.draw(jpeg_size(data))


def _name(step: object) -> str:
    return getattr(step, "__name__", type(step).__name__)


# open_clip's steps between the crop and Normalize; the crop already yields an RGB PIL image.
_PASS_THROUGH = frozenset({"MaybeConvertMode", "MaybeToTensor", "ToTensor", "_convert_to_rgb"})
