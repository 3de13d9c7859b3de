"""Reduced-resolution copies of the training shards, written by the embed stage as it decodes them.

The embed stage decodes every image once anyway; with ``embed.reducedShards`` on it also keeps a copy
of each shard whose images have their short side cut to ``embed.reducedShortSide``, re-encoded as JPEG
(quality 90, 4:2:0). The default size is faithful by construction
(:func:`dynamics.spec.reduced.required_short_side`): ``res / sqrt(scale_min * 3/4)`` rounded up to 16 px,
so that no RandomResizedCrop of phase 1 is upsampled (208 px for 112 px at scale (0.4, 1.0)). Keys,
captions, metadata and labels are unchanged and in the same order, so the sampler makes the same
decisions on either copy. Images already that small are copied byte for byte. Phases the copies serve
without upsampling read them (``RunPaths.reduced_shard``); the others read the originals.

Quality 90 keeps the copies' crops at ~37 dB PSNR of the originals' (``tests/stages/test_embed_reduced.py``);
quality 80 decodes ~20% faster but costs ~1.8 dB, so it is not used.
Each captioned sample also gets its caption's BPE ids (``.bpe``, :mod:`dynamics.stages.train.tokens`),
which the trainer takes instead of tokenising; other webdataset readers ignore the extra member.

Samples whose image cannot be decoded are left out of the copy (the trainer would skip them anyway).
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass, field

from PIL import Image

from dynamics.stages.train.tokens import encode_caption
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths
from dynamics.storage.shards import BPE_EXT, CAPTION_EXT, JSON_EXT, LABEL_EXT, Sample

JPEG_QUALITY = 90
JPEG_SUBSAMPLING = 2  # 4:2:0: half the chroma samples to decode (4:4:4 decoded ~30% slower here)


def reduce_image(image: Image.Image, side: int) -> Image.Image | None:
    """``image`` with its short side cut to ``side`` (aspect kept), or None when it is not larger."""
    width, height = image.size
    short = min(width, height)
    if short <= side:
        return None
    size = (max(1, round(width * side / short)), max(1, round(height * side / short)))
    # reducing_gap: a box pre-shrink, then a short bicubic pass (fast, and close to full antialiasing).
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)


@dataclass(frozen=True)
class ReducedShards:
    """Where and how big (picklable: it travels to the embed DataLoader workers)."""

    side: int
    paths: RunPaths

    def writer(self) -> ReducedShardWriter:
        """A fresh collector for one shard."""
        return ReducedShardWriter(self.side)

    def url(self, shard_index: int) -> str:
        """The reduced copy of shard ``shard_index``."""
        return self.paths.reduced_shard(shard_index)


@dataclass
class ReducedShardWriter:
    """Collects one shard's reduced samples (in order) and writes them as one tar."""

    side: int
    members: list[tuple[str, bytes]] = field(default_factory=list)

    def add(self, sample: Sample, decoded: Image.Image) -> None:
        """Add ``sample``, whose image ``decoded`` was decoded at no less than the reduced size."""
        small = reduce_image(decoded, self.side)
        if small is None:
            self.members.append((f"{sample.key}.{sample.image_ext}", sample.image))
        else:
            buf = io.BytesIO()
            small.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=JPEG_SUBSAMPLING)
            self.members.append((f"{sample.key}.jpg", buf.getvalue()))
        if sample.caption is not None:
            self.members.append((f"{sample.key}.{CAPTION_EXT}", sample.caption.encode("utf-8")))
            # Tokenised here, once, so that phase 1 of training need not (see stages.train.tokens).
            self.members.append((f"{sample.key}.{BPE_EXT}", encode_caption(sample.caption)))
        if sample.meta is not None:
            self.members.append((f"{sample.key}.{JSON_EXT}", json.dumps(sample.meta).encode("utf-8")))
        if sample.label is not None:
            self.members.append((f"{sample.key}.{LABEL_EXT}", str(sample.label).encode("ascii")))

    def tar_bytes(self) -> bytes:
        """The shard as an uncompressed tar (fixed mtimes: the same input gives the same bytes)."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in self.members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    def write(self, url: str, cfg: storage.StorageConfig | None) -> int:
        """Write the shard atomically to ``url``; returns its size in bytes."""
        data = self.tar_bytes()
        storage.write_bytes(url, data, cfg)
        return len(data)
