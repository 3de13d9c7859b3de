"""Training batches: reader streams -> crop-aware reduced-scale decode to uint8 crops -> tokens.

One :class:`EpochDataset` serves one epoch of one phase on one rank. The data loader's workers are
*logical readers*; the loader hands out batches round-robin, so step ``s`` of the epoch comes from
logical reader ``s % workers``. When a run resumes at step ``a``, loader worker ``j`` plays logical
reader ``(a + j) % workers`` and continues from that reader's checkpointed :class:`Cursor`, so the
rank sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import functools
import hashlib
import os
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from dynamics.local.lifecycle import die_with_parent
from dynamics.stages.train.decode import TrainImageTransform
from dynamics.stages.train.gpu_decode import Crop, EncodedImages
from dynamics.stages.train.plan import worker_quota
from dynamics.stages.train.stream import FRESH, Cursor, Item, StreamSettings, windows
from dynamics.stages.train.tokens import CaptionTokenizer
from dynamics.storage.shards import CorruptImage, SkipReason, SkipStats


def augmentation_seed(seed: int, item: Item) -> int:
    """Seed of one item's random crop: a pure function of the run seed, draw epoch and sample copy."""
    packed = struct.pack("<qQqqq", seed, item.draw_epoch, item.shard_index, item.row, item.copy)
    return int.from_bytes(hashlib.blake2b(packed, digest_size=8).digest(), "little") >> 1


@dataclass(frozen=True)
class EpochSpec:
    """What one rank's data loader produces for one epoch."""

    stream: StreamSettings
    sampler_epoch: int
    steps: range
    rank: int
    world_size: int
    workers: int
    batch_size: int
    draft: bool = True
    decode_on_device: bool = False  # workers only draw crop boxes; the trainer decodes (gpu_decode.py)
    cursors: Mapping[int, Cursor] = field(default_factory=dict)

    @property
    def logical_workers(self) -> int:
        """Readers per rank (at least one: ``workers = 0`` reads in the training process)."""
        return max(1, self.workers)


@dataclass
class Batch:
    """A training batch with the bookkeeping the trainer needs for checkpoints and logs.

    ``images`` are uint8 crops ``(B, 3, H, W)``, normalised on the device by the trainer; with
    ``decode_on_device`` they are ``None`` and ``encoded`` carries the JPEG bytes and crop boxes.
    """

    images: torch.Tensor | None
    texts: torch.Tensor
    reader: int
    cursor: list[int]
    keys: list[str]
    skipped: dict[str, int]
    encoded: EncodedImages | None = None

    def pin_memory(self) -> Batch:
        """Pinned copy of the tensors (the data loader calls this when ``pin_memory=True``)."""
        images = self.images.pin_memory() if self.images is not None else None
        return Batch(images, self.texts.pin_memory(), self.reader, self.cursor, self.keys, self.skipped,
                     self.encoded)


class EpochDataset(IterableDataset):
    """Iterable over one epoch's batches of one rank (see the module docstring)."""

    def __init__(self, spec: EpochSpec, transform: Callable[[Any], torch.Tensor] | TrainImageTransform,
                 tokenize: Callable[[list[str]], torch.Tensor]) -> None:
        """``transform``: open_clip's training transform (or one already wrapped); ``tokenize``: its tokenizer."""
        super().__init__()
        self.spec = spec
        # Captions of reduced shards come with stored BPE ids: no tokenising where they fit the tokenizer.
        self.tokenize = tokenize if isinstance(tokenize, CaptionTokenizer) else CaptionTokenizer(tokenize)
        if not isinstance(transform, TrainImageTransform):
            transform = TrainImageTransform(transform, draft=spec.draft)
        self.transform = transform

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        loader_worker = info.id if info is not None else 0
        spec = self.spec
        w = spec.logical_workers
        logical = (spec.steps.start + loader_worker) % w
        reader = spec.rank * w + logical
        quota = worker_quota(spec.steps, w, logical)
        if quota == 0:
            return
        stats = SkipStats()
        items = windows(spec.stream, reader, spec.world_size * w, spec.sampler_epoch,
                        spec.cursors.get(logical, FRESH), stats)
        for _ in range(quota):
            yield self._batch(items, logical, stats)

    def _batch(self, items: Iterator[tuple[Cursor, Item]], logical: int, stats: SkipStats) -> Batch:
        images: list[torch.Tensor] = []
        rows: list[bytes | torch.Tensor] = []
        crops: list[Crop | None] = []
        captions: list[str] = []
        bpe: list[bytes | None] = []
        keys: list[str] = []
        cursor = FRESH
        while len(captions) < self.spec.batch_size:
            cursor, item = next(items)
            # torchvision draws crop parameters from torch's default CPU generator (private to this
            # worker process); seeding it per item makes augmentations replay exactly on resume.
            torch.default_generator.manual_seed(augmentation_seed(self.spec.stream.seed, item))
            try:
                if self.spec.decode_on_device:
                    row, crop = self.transform.for_device(item.image, item.ext)
                    rows.append(row)
                    crops.append(crop)
                else:
                    images.append(self.transform(item.image, item.ext))
            except CorruptImage:
                stats.add(SkipReason.CORRUPT_IMAGE)
                continue
            captions.append(item.caption)
            bpe.append(item.bpe)
            keys.append(item.label)
        skipped = stats.to_dict()
        stats.counts.clear()
        if self.spec.decode_on_device:
            encoded = EncodedImages(rows, crops, self.transform.size)
            return Batch(None, self.tokenize(captions, bpe), logical, cursor.to_list(), keys, skipped, encoded)
        return Batch(torch.stack(images), self.tokenize(captions, bpe), logical, cursor.to_list(), keys, skipped)


def _identity(batch: Batch) -> Batch:
    return batch


def close_batches(batches: Iterator[Batch]) -> None:
    """Shut an epoch's loader workers down now, not whenever the iterator happens to be collected.

    An iterator kept alive past its epoch (a retained frame, e.g. through a stored exception's
    traceback) is copied into the next epoch's forked workers; collected there, its ``__del__``
    checks processes that are not the worker's children: "AssertionError: can only test a child
    process". Collected at interpreter exit, it prints ``__del__`` tracebacks. Shut down here, its
    later ``__del__`` has nothing left to do.
    """
    shutdown = getattr(batches, "_shutdown_workers", None)  # only multi-process iterators have one
    if shutdown is not None:
        shutdown()


def _worker_init(trainer: int, _worker_id: int) -> None:
    # Workers are forked from the trainer, and a fork clears the parent-death signal: re-arm it, against
    # the trainer (a trainer that died before this ran has left the worker with another parent).
    die_with_parent(parent=trainer)


def loader_seed(spec: EpochSpec) -> int:
    """Seed of an epoch's data-loader generator: a pure function of (seed, run-wide sampler epoch, i.e. phase
    and epoch, rank)."""
    return int(np.random.SeedSequence([spec.stream.seed, spec.sampler_epoch, spec.rank, 0x10AD])
               .generate_state(1)[0])


def epoch_loader(dataset: EpochDataset, pin_memory: bool) -> DataLoader:
    """Data loader over ``dataset``: one worker per logical reader, batches passed through as-is.

    Its randomness (the workers' base seed) comes from its own generator: drawn from torch's default
    generator, a resumed run would make a draw the uninterrupted run made at the epoch's start, and
    the checkpoints' ``rng_state`` would differ.
    """
    workers = dataset.spec.workers
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        generator=torch.Generator().manual_seed(loader_seed(dataset.spec)),
        collate_fn=_identity,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
        worker_init_fn=functools.partial(_worker_init, os.getpid()) if workers else None,
    )
