"""Decoding on the training device (``train.decode: device``): nvJPEG via ``torchvision.io.decode_jpeg``.

For nodes short of CPU cores. The loader then only reads tars and draws crop parameters from each JPEG's
header (no pixel decode on the CPU); a whole batch of JPEG bytes goes to the device, is decoded there in
one batched call, and each image is cropped, resized (antialiased, the transform's interpolation) and
optionally flipped on the device. Crops stay uint8 until :func:`normalise`, which also serves the
default path: its workers send uint8 crops, normalised on the device. The same functions run on the
CPU (``device="cpu"``, libjpeg), which is the reference the tests hold the GPU path to.

torchvision 0.29 (pinned) deprecates its image decoders in favour of TorchCodec (from 0.16); they still
work, and moving to TorchCodec's batched decoder is a change confined to :func:`decode_crops`.
"""

from __future__ import annotations

import functools
import io
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from dynamics.storage.shards import CorruptImage

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Crop:
    """A RandomResizedCrop box in source pixels, and whether to flip it horizontally."""

    top: int
    left: int
    height: int
    width: int
    flip: bool = False


@dataclass(frozen=True)
class JpegHeader:
    """What a JPEG's frame header (SOFn) says: the full size and the number of colour components."""

    width: int
    height: int
    components: int


# Start-of-frame markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RSTn: markers without a length


def jpeg_header(data: bytes) -> JpegHeader | None:
    """The frame header of JPEG ``data``, by walking its marker segments (a few us: PIL's open takes ~60).

    None when ``data`` is not a JPEG or its segments are malformed before the frame header; the
    caller then leaves the image to PIL, which decides whether it is corrupt.
    """
    if not is_jpeg(data):
        return None
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker in _STANDALONE:
            pos += 2
        elif marker in _SOF_MARKERS:
            if pos + 10 > end:
                return None
            height, width = struct.unpack_from(">HH", data, pos + 5)
            return JpegHeader(width, height, data[pos + 9]) if width and height else None
        else:
            pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]
    return None


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the JPEG header alone (no decode)."""
    header = jpeg_header(data)
    if header is not None:
        return header.width, header.height
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "JPEG":
                raise CorruptImage(f"not a JPEG ({img.format})")
            return img.size
    except (OSError, ValueError, SyntaxError) as exc:
        raise CorruptImage(f"cannot read JPEG header: {exc}") from exc


@functools.lru_cache(maxsize=8)
def _log_ratio(ratio: tuple[float, float]) -> tuple[float, float]:
    """torchvision's float32 log of the aspect bounds (computed once, not per image)."""
    low, high = torch.log(torch.tensor(ratio)).tolist()
    return low, high


def random_crop(size: tuple[int, int], scale: tuple[float, float], gen: torch.Generator,
                ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Crop:
    """torchvision's ``RandomResizedCrop.get_params`` (same draws, same fallback) for a ``size`` image."""
    width, height = size
    area = width * height
    low, high = _log_ratio(ratio)
    for _ in range(10):
        target = area * torch.empty(1).uniform_(scale[0], scale[1], generator=gen).item()
        # exp in float32, as torchvision does, so rounding picks the same box.
        aspect = torch.exp(torch.empty(1).uniform_(low, high, generator=gen)).item()
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=gen).item())
            left = int(torch.randint(0, width - w + 1, (1,), generator=gen).item())
            return Crop(top, left, h, w)
    # Fallback to a central crop (torchvision's rule).
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        w, h = round(height * max(ratio)), height
    else:
        w, h = width, height
    return Crop((height - h) // 2, (width - w) // 2, h, w)


def is_jpeg(data: bytes) -> bool:
    """Whether ``data`` starts like a JPEG (SOI marker), whatever the member's extension says."""
    return data[:3] == b"\xff\xd8\xff"


def decode_crops(jpegs: Sequence[bytes], crops: Sequence[Crop], size: int, device: torch.device | str,
                 interpolation: InterpolationMode = InterpolationMode.BILINEAR) -> torch.Tensor:
    """uint8 ``(B, 3, size, size)`` crops of a batch of JPEGs, decoded and resized on ``device``."""
    if len(jpegs) != len(crops):
        raise ValueError(f"{len(jpegs)} images but {len(crops)} crops")
    data = [torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpegs]
    try:
        images = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError as exc:
        raise CorruptImage(f"batched JPEG decode failed: {exc}") from exc
    out = torch.empty((len(images), 3, size, size), dtype=torch.uint8, device=device)
    for i, (img, c) in enumerate(zip(images, crops, strict=True)):
        patch = img[:, c.top:c.top + c.height, c.left:c.left + c.width]
        patch = F.resize(patch, [size, size], interpolation=interpolation, antialias=True)
        out[i] = patch.flip(-1) if c.flip else patch
    return out


def normalise(batch: torch.Tensor, mean: Sequence[float] = OPENAI_MEAN, std: Sequence[float] = OPENAI_STD,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 crops -> normalised float images, on the crops' device (the host sends 4x fewer bytes)."""
    m = torch.tensor(mean, dtype=dtype, device=batch.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=dtype, device=batch.device).view(1, 3, 1, 1)
    return (batch.to(dtype) / 255.0 - m) / s


@dataclass
class EncodedImages:
    """A batch as the loader hands it over for decoding on the device.

    ``rows[i]`` is JPEG bytes with ``crops[i]`` its box, or a uint8 crop the worker decoded itself
    (other formats, which nvJPEG cannot read) with ``crops[i] = None``.
    """

    rows: list[bytes | torch.Tensor]
    crops: list[Crop | None]
    size: int


def device_crops(batch: EncodedImages, device: torch.device,
                 interpolation: InterpolationMode) -> tuple[torch.Tensor, list[int]]:
    """uint8 crops of ``batch`` on ``device``, and the rows no decoder could read (left black).

    JPEGs are decoded in one batched call; when that fails, each image is retried on the device, then
    with libjpeg on the CPU, so one bad image costs one row, not the batch.
    """
    out = torch.zeros((len(batch.rows), 3, batch.size, batch.size), dtype=torch.uint8, device=device)
    jpeg_rows = [i for i, c in enumerate(batch.crops) if c is not None]
    for i, row in enumerate(batch.rows):
        if batch.crops[i] is None:
            out[i] = row.to(device, non_blocking=True)  # type: ignore[union-attr]
    if not jpeg_rows:
        return out, []
    jpegs = [batch.rows[i] for i in jpeg_rows]
    crops = [batch.crops[i] for i in jpeg_rows]
    try:
        out[jpeg_rows] = decode_crops(jpegs, crops, batch.size, device, interpolation)  # type: ignore[arg-type]
        return out, []
    except CorruptImage:
        pass  # find the culprit(s) below
    bad: list[int] = []
    for i, data, crop in zip(jpeg_rows, jpegs, crops, strict=True):
        for where in dict.fromkeys((device, torch.device("cpu"))):
            try:
                out[i] = decode_crops([data], [crop], batch.size, where, interpolation)[0]  # type: ignore[list-item]
                break
            except CorruptImage:
                continue
        else:
            bad.append(i)
    return out, bad


def fill_bad_rows(images: torch.Tensor, texts: torch.Tensor,
                  bad: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace undecodable rows by copies of good (image, text) pairs.

    Every rank must keep its batch size (the loss gathers equal-sized features), so a row is
    duplicated rather than dropped; a duplicate pair only adds one redundant positive.
    """
    skip = set(bad)
    good = [i for i in range(len(images)) if i not in skip]
    if not good:
        raise CorruptImage(f"no image of a batch of {len(images)} could be decoded")
    images, texts = images.clone(), texts.clone()
    for n, i in enumerate(bad):
        j = good[n % len(good)]
        images[i], texts[i] = images[j], texts[j]
    return images, texts
