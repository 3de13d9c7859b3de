"""The undecoded sample stream of one data reader: shard order, DynamiCS sampling, shuffle windows.

A *reader* is one data-loader worker of one rank (``reader = rank * workers + logical_worker``).
Its stream for a sampler epoch is a pure function of ``(seed, sampler epoch, reader, readers)``:

1. Pass ``p`` over the data takes every ``readers``-th shard of a permutation of all shards seeded by
   ``(seed, sampler epoch, p)``; a reader that runs out of shards starts pass ``p + 1``.
2. Each sample (webdataset key group) gets ``uses(...)`` copies from the sampler (0, 1, or more in
   ``repeat`` mode), decided from its shard's table, loaded when the shard is opened (one at a time).
3. Kept copies fill shuffle *windows* of ``window`` items; each window is emitted in a permutation
   seeded by ``(seed, sampler epoch, readers, reader, window index)``.

Decoding happens after this stream, so skipping already trained items on resume costs no decode.
A :class:`Cursor` (the source position where the current window began, the window index, and how
many of its items were consumed) restores the stream exactly by re-reading at most one window.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from dynamics.core.sampler import SampleMode, ShardTable, use_count
from dynamics.errors import DynamicsError
from dynamics.stages.train.plan import PASS_STRIDE, sampler_epoch_of_pass
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths
from dynamics.storage.objects import StorageConfig
from dynamics.storage.shards import SkipStats, iter_samples


class StreamSkip(StrEnum):
    """Counted events of the training stream (besides :class:`dynamics.storage.shards.SkipReason`)."""

    MISSING_FROM_TABLE = "missing_from_table"  # sampled with spec.sample.unknownProb


@dataclass(frozen=True)
class StreamSettings:
    """Everything a reader needs besides its identity (picklable, shared by all readers)."""

    shards: tuple[str, ...]
    paths: RunPaths
    storage: StorageConfig | None
    seed: int
    sample_seed: int
    mode: SampleMode
    unknown_prob: float
    window: int
    # Reduced-resolution copies (embed.reducedShards), read by sampler epochs below reduced_epochs.
    reduced: tuple[str, ...] = ()
    reduced_epochs: int = 0

    def shard_url(self, shard_index: int, sampler_epoch: int) -> str:
        """The copy of shard ``shard_index`` that ``sampler_epoch`` (any pass) reads."""
        if self.reduced and sampler_epoch % PASS_STRIDE < self.reduced_epochs:
            return self.reduced[shard_index]
        return self.shards[shard_index]


@dataclass(frozen=True)
class Position:
    """A point in a reader's pre-shuffle stream: before copy ``copy`` of key group ``row``."""

    pass_index: int = 0
    shard_pos: int = 0
    row: int = 0
    copy: int = 0


@dataclass(frozen=True)
class Cursor:
    """Where a reader is: the window that began at ``start`` (index ``window``), ``taken`` used."""

    start: Position
    window: int
    taken: int

    def to_list(self) -> list[int]:
        """Plain ints (safe for ``torch.load(weights_only=True)`` checkpoints)."""
        s = self.start
        return [s.pass_index, s.shard_pos, s.row, s.copy, self.window, self.taken]

    @classmethod
    def from_list(cls, values: list[int]) -> Cursor:
        """Inverse of :meth:`to_list`."""
        p, k, row, copy, window, taken = (int(v) for v in values)
        return cls(Position(p, k, row, copy), window, taken)


FRESH = Cursor(Position(), 0, 0)


@dataclass(frozen=True)
class Item:
    """One copy of a sample chosen for training, still undecoded."""

    shard_index: int
    row: int
    key: str
    copy: int
    image: bytes
    ext: str
    caption: str
    draw_epoch: int  # the epoch number the sampler decided this copy with (differs per pass)
    bpe: bytes | None = None  # the caption's stored BPE ids (reduced copies), for tokens.CaptionTokenizer

    @property
    def label(self) -> str:
        """The key as logged: ``key`` for the first copy, ``key#n`` for repeats."""
        return self.key if self.copy == 0 else f"{self.key}#{self.copy}"


def load_table(uri: str, cfg: StorageConfig | None, default_prob: float) -> ShardTable:
    """Load one shard's sampling table (``.npz`` with ``keys``, ``probs`` and optional clusters).

    Accepts keys stored as unicode or UTF-8 bytes (the sampler's own serialisation).
    """
    data = storage.read_bytes(uri, cfg)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            keys, probs = z["keys"].tolist(), z["probs"]
    except (ValueError, KeyError, OSError) as exc:
        raise DynamicsError(f"{uri} is not a valid shard sampling table: {exc}",
                            hint="delete it and re-run the scale stage") from exc
    return ShardTable.from_keys(keys, probs, default_prob=default_prob)


def reader_shards(n_shards: int, seed: int, sampler_epoch: int, pass_index: int,
                  reader: int, readers: int) -> list[int]:
    """Shard indices reader ``reader`` of ``readers`` reads in pass ``pass_index``, in order."""
    rng = np.random.default_rng([seed, sampler_epoch, pass_index, 0x5A4D])
    return rng.permutation(n_shards)[reader::readers].tolist()


def _shard_items(cfg: StreamSettings, shard_index: int, sampler_epoch: int, start_row: int,
                 start_copy: int, stats: SkipStats) -> Iterator[Item]:
    url = cfg.shard_url(shard_index, sampler_epoch)
    table: ShardTable | None = None
    for sample in iter_samples(url, cfg.storage, stats):
        if sample.row < start_row:
            continue
        if sample.caption is None:
            continue  # counted as missing_caption by iter_samples
        if table is None:
            table = load_table(cfg.paths.shard_table(shard_index), cfg.storage, cfg.unknown_prob)
        copies = use_count(table, sample.key, seed=cfg.sample_seed, epoch=sampler_epoch,
                           shard_index=shard_index, mode=cfg.mode)
        first = start_copy if sample.row == start_row else 0
        for copy in range(first, copies):
            yield Item(shard_index, sample.row, sample.key, copy, sample.image, sample.image_ext,
                       sample.caption, sampler_epoch, sample.bpe)
    if table is not None and table.misses:
        stats.add(StreamSkip.MISSING_FROM_TABLE, table.misses)


def source(cfg: StreamSettings, reader: int, readers: int, sampler_epoch: int, start: Position,
           stats: SkipStats) -> Iterator[tuple[Position, Item]]:
    """Infinite pre-shuffle stream of ``(position before the item, item)`` from ``start``."""
    pass_index, shard_pos, row, copy = start.pass_index, start.shard_pos, start.row, start.copy
    while True:
        from_beginning = (shard_pos, row, copy) == (0, 0, 0)
        order = reader_shards(len(cfg.shards), cfg.seed, sampler_epoch, pass_index, reader, readers)
        if not order:
            raise DynamicsError(f"reader {reader} of {readers} has no shard",
                                hint="use fewer data-loader workers or processes, or more shards")
        found = False
        epoch = sampler_epoch_of_pass(sampler_epoch, pass_index)
        for k in range(shard_pos, len(order)):
            for item in _shard_items(cfg, order[k], epoch, row, copy, stats):
                found = True
                yield Position(pass_index, k, item.row, item.copy), item
            row = copy = 0
        if not found and from_beginning:
            raise DynamicsError(
                f"a full pass over {len(order)} shards selected no sample (reader {reader})",
                hint="check the scale stage's probabilities (all zero?) and the shards' captions")
        pass_index, shard_pos = pass_index + 1, 0


def windows(cfg: StreamSettings, reader: int, readers: int, sampler_epoch: int, cursor: Cursor,
            stats: SkipStats) -> Iterator[tuple[Cursor, Item]]:
    """Shuffled stream of ``(cursor after this item, item)``, resuming exactly at ``cursor``."""
    size = max(1, cfg.window)
    src = source(cfg, reader, readers, sampler_epoch, cursor.start, stats)
    window, skip = cursor.window, cursor.taken
    while True:
        buf: list[Item] = []
        start: Position | None = None
        for position, item in src:
            if start is None:
                start = position
            buf.append(item)
            if len(buf) == size:
                break
        assert start is not None  # the source is infinite
        rng = np.random.default_rng([cfg.seed, sampler_epoch, readers, reader, window, 0x5B])
        order = rng.permutation(size)
        for taken in range(skip, size):
            yield Cursor(start, window, taken + 1), buf[order[taken]]
        window, skip = window + 1, 0

