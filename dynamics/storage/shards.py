"""Webdataset shards: brace patterns, existence checks, and streaming sample iteration.

Reading follows webdataset's own conventions (so our keys match what ``webdataset.WebDataset``
and open_clip see): tar members are grouped into samples by consecutive equal keys, where the key
is the member path up to the first dot of its basename and the rest is the lower-cased extension.

Bad data never stops a stage: truncated shards, samples without an image, undecodable images and
missing captions are counted in :class:`SkipStats` and reported; the stage continues.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from dynamics.errors import StorageError
from dynamics.storage import objects as storage
from dynamics.storage.objects import StorageConfig
from dynamics.storage.pattern import expand as expand_pattern

# Re-exported: callers read skip kinds from the module that reads shards.
from dynamics.storage.skips import MAX_PROBLEMS as MAX_PROBLEMS
from dynamics.storage.skips import CorruptImage as CorruptImage
from dynamics.storage.skips import ShardRead as ShardRead
from dynamics.storage.skips import SkipReason, SkipStats
from dynamics.storage.tarstream import TarRead, iter_tar

if TYPE_CHECKING:
    from PIL import Image

IMAGE_EXTS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp")
CAPTION_EXT = "txt"
BPE_EXT = "bpe"  # the caption's BPE ids (dynamics.stages.train.tokens), in the embed stage's reduced copies
JSON_EXT = "json"
LABEL_EXT = "cls"
MIN_IMAGE_SIDE = 10  # as the published method: tiny images are resized up before preprocessing
_TAR_BLOCK = 512
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")  # gzip, bzip2, xz: left to tarfile
# webdataset skips members such as "__index__".
_META_MEMBER = re.compile(r"__[^/]*__($|/)")


@dataclass(frozen=True)
class Sample:
    """One webdataset sample, undecoded.

    ``row`` is the sample's ordinal among all key groups of its shard (skipped ones included),
    so it does not depend on which samples a stage later fails to decode.
    """

    shard: str
    key: str
    image: bytes
    image_ext: str
    caption: str | None
    meta: dict[str, Any] | None
    row: int
    label: int | None = None
    bpe: bytes | None = None  # stored BPE ids of the caption (reduced copies only), see BPE_EXT


# ---------------------------------------------------------------- patterns


def _parent(url: str) -> str:
    return url.rsplit("/", 1)[0] if "/" in url else "."


def _normal(url: str) -> str:
    return url if storage.is_s3(url) else os.path.normpath(os.path.abspath(url))


def resolve_shards(pattern: str, cfg: StorageConfig | None = None) -> list[str]:
    """Expanded shard URLs of ``pattern``, after checking that every one exists.

    Lists each parent prefix once (not one HEAD per shard: 20k shards would take minutes).
    """
    urls = expand_pattern(pattern)
    listed: set[str] = set()
    for parent in sorted({_parent(u) for u in urls}):
        listed.update(_normal(u) for u in storage.list_uris(parent, cfg))
    missing = [u for u in urls if _normal(u) not in listed]
    if len(missing) == len(urls):
        raise StorageError(
            f"shard pattern {pattern!r} matches no existing shards",
            hint="fix data.shards (brace ranges such as {00000..00099}) or upload the shards",
        )
    if missing:
        raise StorageError(
            f"{len(missing)} of {len(urls)} shards of pattern {pattern!r} are missing (first: {missing[0]})",
            hint="narrow the brace range in data.shards or upload the missing shards",
        )
    return urls


# ---------------------------------------------------------------- tar reading


class _Counter(io.RawIOBase):
    """Pass-through reader remembering the byte count and the first block (for the skip's kind)."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__()
        self._raw = raw
        self.total = 0
        self.head = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._raw.read(len(view))
        n = len(data)
        view[:n] = data
        if len(self.head) < _TAR_BLOCK:
            self.head += bytes(data[: _TAR_BLOCK - len(self.head)])
        self.total += n
        return n


def _split_key(name: str) -> tuple[str, str] | None:
    """webdataset's ``base_plus_ext``: the key is the path up to the first dot of the basename."""
    base = name.rfind("/") + 1
    dot = name.find(".", base)
    if dot < 0:
        return None
    if dot == base:  # a basename starting with a dot: webdataset's regex then keys by the folder ("d/")
        parent = name.rfind("/", 0, max(base - 1, 0)) + 1
        if base == 0 or "." in name[parent:base]:
            return None
    return name[:dot], name[dot + 1 :].lower()


def iter_members(stream: IO[bytes], stats: SkipStats, url: str | None = None,
                 read: ShardRead | None = None) -> Iterator[tuple[str, bytes]]:
    """``(name, data)`` of the regular tar members of ``stream``, stopping at truncation.

    A shard that cannot be read to its end is counted (and named, given its ``url``) as
    ``empty_shard``, ``not_a_tar`` or ``truncated_shard`` with the last complete member, and
    ``read.complete`` is set False. Plain tars go through the lean reader of
    :mod:`dynamics.storage.tarstream`; compressed ones through ``tarfile``.
    """
    first = stream.read(_TAR_BLOCK)
    replay = _Replay(first, stream)
    members = _tarfile_members if first.startswith(_COMPRESSED_MAGIC) else _lean_members
    last: str | None = None
    status = TarRead()
    for name, data in members(replay, status):
        last = name
        yield name, data
    if read is not None:
        read.bytes = status.total
    if not status.complete:
        stats.add(_unreadable_kind(status.total, status.head), shard=url,
                  member=f"after {last}" if last else None)
        if read is not None:
            read.complete = False


class _Replay(io.RawIOBase):
    """``stream`` with ``first`` (bytes already read from it) put back in front."""

    def __init__(self, first: bytes, stream: IO[bytes]) -> None:
        super().__init__()
        self._first = first
        self._stream = stream

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._first:
            out, self._first = (self._first, b"") if size < 0 or size >= len(self._first) else (
                self._first[:size], self._first[size:])
            return out
        return self._stream.read(size)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)


def _lean_members(stream: IO[bytes], status: TarRead) -> Iterator[tuple[str, bytes]]:
    for name, data in iter_tar(stream, status):
        if not (name.startswith("__") and _META_MEMBER.match(name)):
            yield name, data


def _tarfile_members(stream: IO[bytes], status: TarRead) -> Iterator[tuple[str, bytes]]:
    tracker = _Counter(stream)
    try:
        with tarfile.open(fileobj=tracker, mode="r|*") as tar:
            for info in tar:
                if not info.isreg() or _META_MEMBER.match(info.name):
                    continue
                member = tar.extractfile(info)
                if member is None:
                    continue
                yield info.name, member.read()
                tar.members = []  # stream mode would otherwise keep every TarInfo in memory
            # compressed streams: the decompressor already raises on truncation
            status.complete = True
    except (tarfile.TarError, EOFError):
        status.complete = False  # truncated or corrupt tail: keep what was complete
    finally:
        status.total, status.head = tracker.total, tracker.head


def _unreadable_kind(total: int, head: bytes) -> SkipReason:
    if total == 0:
        return SkipReason.EMPTY_SHARD
    # POSIX/GNU tar headers carry "ustar" at offset 257 (a shorter file may be a tar cut short);
    # compressed shards start with their magic.
    tar_like = len(head) < 262 or head[257:262] == b"ustar" or head.startswith(_COMPRESSED_MAGIC)
    return SkipReason.TRUNCATED_SHARD if tar_like else SkipReason.NOT_A_TAR


def _group(members: Iterable[tuple[str, bytes]], stats: SkipStats,
           url: str | None = None) -> Iterator[tuple[str, dict[str, bytes]]]:
    key: str | None = None
    parts: dict[str, bytes] = {}
    for name, data in members:
        split = _split_key(name)
        if split is None:
            continue
        prefix, ext = split
        if prefix != key:
            if key is not None:
                yield key, parts
            key, parts = prefix, {}
        if ext in parts:
            stats.add(SkipReason.DUPLICATE_MEMBER, shard=url, member=name)
            continue
        parts[ext] = data
    if key is not None:
        yield key, parts


def _text(data: bytes | None) -> str | None:
    if data is None:
        return None
    text = data.decode("utf-8", errors="replace").strip()
    return text or None


def _json(data: bytes | None, stats: SkipStats, url: str, key: str) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        value = json.loads(data)
    except ValueError:
        stats.add(SkipReason.BAD_JSON, shard=url, member=f"{key}.{JSON_EXT}")
        return None
    return value if isinstance(value, dict) else None


def _label(data: bytes | None) -> int | None:
    text = _text(data)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _to_sample(url: str, key: str, parts: dict[str, bytes], row: int, stats: SkipStats) -> Sample | None:
    ext = next((e for e in IMAGE_EXTS if e in parts), None)
    if ext is None:
        stats.add(SkipReason.MISSING_IMAGE, shard=url, member=key)
        return None
    caption = _text(parts.get(CAPTION_EXT))
    if caption is None:
        stats.add(SkipReason.MISSING_CAPTION, shard=url, member=key)
    return Sample(
        shard=url,
        key=key,
        image=parts[ext],
        image_ext=ext,
        caption=caption,
        meta=_json(parts.get(JSON_EXT), stats, url, key),
        row=row,
        label=_label(parts.get(LABEL_EXT)),
        bpe=parts.get(BPE_EXT) if caption is not None else None,
    )


def iter_stream(url: str, stream: IO[bytes], stats: SkipStats, read: ShardRead | None = None) -> Iterator[Sample]:
    """Samples of an already opened tar stream (see :func:`iter_samples`)."""
    read = read if read is not None else ShardRead()
    # Members are only yielded once fully read, so even the last group before a cut holds
    # complete files; if the cut took its caption, it is flagged like any other missing caption.
    for row, (key, parts) in enumerate(_group(iter_members(stream, stats, url, read), stats, url)):
        read.rows = row + 1
        sample = _to_sample(url, key, parts, row, stats)
        if sample is not None:
            yield sample


def iter_samples(url: str, cfg: StorageConfig | None, stats: SkipStats,
                 read: ShardRead | None = None) -> Iterator[Sample]:
    """Stream the samples of one shard (S3 or local) without downloading it first.

    Samples without an image are skipped (``missing_image``); samples without a caption are
    yielded with ``caption=None`` and counted (``missing_caption``). A truncated shard yields
    its complete samples, then stops and counts ``truncated_shard``. ``read``, when given, gets the
    shard's sample count and whether it was read to its end. Storage errors (missing shard,
    rejected credentials) raise :class:`StorageError`.
    """
    with storage.open_stream(url, cfg) as stream:
        yield from iter_stream(url, stream, stats, read)


# ---------------------------------------------------------------- images


def decode_image(data: bytes, ext: str, draft_size: int | None = None) -> Image.Image:
    """Decode image bytes to RGB; raises :class:`CorruptImage` when PIL cannot.

    ``draft_size``: for JPEGs, let libjpeg decode at a reduced scale (1/2, 1/4, 1/8) that still
    covers ``draft_size`` pixels on each side -- several times faster for large images.
    Images smaller than 10 px on a side are resized up (bicubic), keeping the aspect ratio.
    """
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
        if draft_size is not None and img.format == "JPEG":
            img.draft("RGB", (draft_size, draft_size))
        img = img.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise CorruptImage(f"cannot decode .{ext} image: {exc}") from exc
    return _upsize_tiny(img)


def _upsize_tiny(img: Image.Image) -> Image.Image:
    from PIL import Image

    width, height = img.size
    short = min(width, height)
    if short >= MIN_IMAGE_SIDE:
        return img
    scale = MIN_IMAGE_SIDE / max(short, 1)
    size = (max(MIN_IMAGE_SIDE, round(width * scale)), max(MIN_IMAGE_SIDE, round(height * scale)))
    return img.resize(size, Image.Resampling.BICUBIC)


def shard_basename(url: str) -> str:
    """``s3://b/data/00012.tar`` -> ``00012`` (used to name per-shard tables)."""
    return posixpath.basename(url).split(".", 1)[0]
