"""The embed stage: one part (= one Indexed-Job index) = a contiguous slice of shards.

Outputs per part, all written only after the whole part is embedded, the completion marker last:
``part-NNNNN.npy`` (float16, L2-normalised, rows in (shard, row) order), ``part-NNNNN.keys.parquet``
(shard url, shard index, ``__key__``, row, sha256 of the image bytes), ``part-NNNNN.stats.json``
(seen / embedded / skipped by reason) and ``part-NNNNN.done``. A killed run leaves no marker, and
each file is written atomically, so no reader ever mistakes a partial part for a finished one.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from dynamics.constants import Stage
from dynamics.errors import DynamicsError, StorageError
from dynamics.spec.model import EmbedBackend, RunSpec
from dynamics.spec.reduced import reduced_note, short_side
from dynamics.stages.embed.backends import Backend, load_backend
from dynamics.stages.embed.loss import loss_json, part_loss, shard_index_entries
from dynamics.stages.embed.reduced import ReducedShards
from dynamics.stages.inputs import already_done, marker
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths, shard_slice
from dynamics.storage.shards import CorruptImage, ShardRead, SkipStats, decode_image, iter_samples, resolve_shards
from dynamics.storage.skips import DataLoss

log = logging.getLogger("dynamics.embed")
# How often progress lines are logged; tests lower it to observe a part mid-way.
PROGRESS_SECONDS = float(os.environ.get("DYNAMICS_PROGRESS_SECONDS", "15"))
# Seconds to pause after each batch: lets tests interrupt a part mid-way (0 in real runs).
BATCH_DELAY = float(os.environ.get("DYNAMICS_EMBED_DELAY", "0"))


@dataclass
class Batch:
    """Transformed images of one worker with their identities."""

    pixels: torch.Tensor
    shard_index: list[int]
    row: list[int]
    key: list[str]
    sha256: list[str]


@dataclass
class ShardDone:
    """End-of-shard record: what the worker skipped, or the storage error that stopped it."""

    shard_index: int
    seen: int
    stats: SkipStats
    error: str | None = None
    read: ShardRead = field(default_factory=ShardRead)  # samples in the shard, and whether read to its end
    reduced_bytes: int = 0  # size of the reduced copy written, if any


class PartDataset(IterableDataset):
    """Streams a part's shards; each DataLoader worker takes every n-th shard and batches itself."""

    def __init__(self, shards: list[tuple[int, str]], transform: Any, batch_size: int,
                 cfg: storage.StorageConfig, draft_size: int | None, reduced: ReducedShards | None = None) -> None:
        self.shards = shards
        self.reduced = reduced
        self.transform = transform
        self.batch_size = batch_size
        self.cfg = cfg
        self.draft_size = draft_size

    def _mine(self) -> list[tuple[int, str]]:
        info = get_worker_info()
        if info is None:
            return self.shards
        return self.shards[info.id::info.num_workers]

    def __iter__(self) -> Iterator[Batch | ShardDone]:
        for shard_index, url in self._mine():
            yield from self._shard(shard_index, url)

    def _shard(self, shard_index: int, url: str) -> Iterator[Batch | ShardDone]:
        stats, seen, read = SkipStats(), 0, ShardRead()
        items: list[tuple[torch.Tensor, int, str, str]] = []
        copy = self.reduced.writer() if self.reduced else None
        copy_bytes = 0
        try:
            for sample in iter_samples(url, self.cfg, stats, read):
                seen += 1
                try:
                    img = decode_image(sample.image, sample.image_ext, self.draft_size)
                except CorruptImage as exc:
                    stats.add(exc.reason, shard=url, member=f"{sample.key}.{sample.image_ext}")
                    continue
                if copy is not None:
                    copy.add(sample, img)
                digest = hashlib.sha256(sample.image).hexdigest()
                items.append((self.transform(img), sample.row, sample.key, digest))
                if len(items) == self.batch_size:
                    yield self._batch(shard_index, items)
                    items = []
            if copy is not None and self.reduced is not None:
                copy_bytes = copy.write(self.reduced.url(shard_index), self.cfg)
        except StorageError as exc:
            # Reported by the main process as one clean message (no worker traceback).
            yield ShardDone(shard_index, seen, stats, error=str(exc))
            return
        if items:
            yield self._batch(shard_index, items)
        yield ShardDone(shard_index, seen, stats, read=read, reduced_bytes=copy_bytes)

    @staticmethod
    def _batch(shard_index: int, items: list[tuple[torch.Tensor, int, str, str]]) -> Batch:
        return Batch(torch.stack([i[0] for i in items]), [shard_index] * len(items),
                     [i[1] for i in items], [i[2] for i in items], [i[3] for i in items])


@dataclass
class PartOutput:
    """Accumulated results of one part."""

    vectors: list[np.ndarray] = field(default_factory=list)
    shard_index: list[int] = field(default_factory=list)
    row: list[int] = field(default_factory=list)
    key: list[str] = field(default_factory=list)
    sha256: list[str] = field(default_factory=list)
    stats: SkipStats = field(default_factory=SkipStats)
    seen: int = 0
    shards_done: int = 0
    reads: dict[str, ShardRead] = field(default_factory=dict)  # by shard URL
    reduced_bytes: int = 0  # reduced copies written

    def add(self, batch: Batch, vectors: np.ndarray) -> None:
        self.vectors.append(vectors)
        self.shard_index += batch.shard_index
        self.row += batch.row
        self.key += batch.key
        self.sha256 += batch.sha256

    def ordered(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(float16 vectors, order) sorted by (shard, row): independent of worker interleaving."""
        vecs = np.concatenate(self.vectors) if self.vectors else np.zeros((0, dim), np.float32)
        order = np.lexsort((np.asarray(self.row, np.int64), np.asarray(self.shard_index, np.int64)))
        return vecs[order].astype(np.float16), order


def _keys_table(out: PartOutput, urls: dict[int, str], order: np.ndarray) -> bytes:
    shard_index = np.asarray(out.shard_index, np.int32)[order]
    table = pa.table({
        "shard": pa.array([urls[int(i)] for i in shard_index], pa.string()),
        "shard_index": pa.array(shard_index, pa.int32()),
        "key": pa.array(np.asarray(out.key, dtype=object)[order], pa.string()),
        "row": pa.array(np.asarray(out.row, np.int32)[order], pa.int32()),
        "sha256": pa.array(np.asarray(out.sha256, dtype=object)[order], pa.string()),
    })
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


class Progress:
    """Progress lines for `kubectl logs`: shards done, images/s, ETA, skips."""

    def __init__(self, part: int, n_shards: int) -> None:
        self.part, self.n_shards = part, n_shards
        self.start = self.last = time.monotonic()

    def update(self, out: PartOutput, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < PROGRESS_SECONDS:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = len(out.key) / elapsed
        done = out.shards_done
        eta = elapsed / done * (self.n_shards - done) if done else float("nan")
        log.info("part %d: shards %d/%d, %d images embedded, %.1f images/s, ETA %s, skipped %s",
                 self.part, done, self.n_shards, len(out.key), rate,
                 "?" if eta != eta else f"{eta:.0f}s", out.stats.to_dict() or "none")


def _draft_size(backend: Backend) -> int | None:
    # Reduced-scale JPEG decoding must still cover the model's input; 256 covers DINOv2's resize.
    size = getattr(backend, "size", None)
    return 2 * size if isinstance(size, int) else 256


def embed_part(spec: RunSpec, paths: RunPaths, part: int, cfg: storage.StorageConfig) -> bool:
    """Embed one part; returns False when it was already complete (marker present)."""
    if already_done(paths.embed_marker(part), spec, Stage.EMBED, cfg):
        log.info("part %d already complete (%s exists); nothing to do", part, paths.embed_marker(part))
        return False
    # first: a pod that cannot use its GPUs fails at once
    backend = load_backend(spec.embed, cfg, workdir=spec.storage.workdir)
    all_shards = resolve_shards(spec.data.shards, cfg)
    indices = shard_slice(len(all_shards), spec.embed.shards_per_part, part)
    if not len(indices):
        raise StorageError(f"part {part} is beyond the last shard ({len(all_shards)} shards)",
                           hint="the Job's completions must match the shard count; re-render the run")
    urls = {i: all_shards[i] for i in indices}
    log.info("part %d: %d shards (%s .. %s), backend %s, dim %d", part, len(urls), urls[indices[0]],
             urls[indices[-1]], spec.embed.backend.value, backend.dim)
    side = short_side(spec)
    reduced = ReducedShards(side, paths) if side is not None else None
    if reduced is not None:
        log.info("part %d: writing reduced copies at short side %d px (%s)", part, side, reduced_note(spec))
    # The reduced copy is cut from the decoded image, so decode at least that large.
    draft = _draft_size(backend) if side is None else max(_draft_size(backend) or 0, side)
    dataset = PartDataset(list(urls.items()), backend.transform, spec.embed.batch_size, cfg, draft, reduced)
    workers = min(spec.embed.workers, len(urls))
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, persistent_workers=False,
                        pin_memory=torch.cuda.is_available(), prefetch_factor=2 if workers else None)
    out, progress = PartOutput(), Progress(part, len(urls))
    for item in loader:
        if isinstance(item, ShardDone):
            if item.error:
                raise StorageError(f"part {part}: {item.error}")
            out.stats.merge(item.stats)
            out.seen += item.seen
            out.shards_done += 1
            out.reads[urls[item.shard_index]] = item.read
            out.reduced_bytes += item.reduced_bytes
        else:
            out.add(item, backend.embed(item.pixels))
            if BATCH_DELAY:
                time.sleep(BATCH_DELAY)
        progress.update(out)
    progress.update(out, force=True)
    loss = part_loss(out.reads, out.stats, spec.storage.workdir, cfg)
    check_corrupt(spec, part, out, loss)
    _commit(paths, part, out, urls, backend.dim, spec, cfg, loss)
    return True


def _commit(paths: RunPaths, part: int, out: PartOutput, urls: dict[int, str], dim: int, spec: RunSpec,
            cfg: storage.StorageConfig, loss: DataLoss) -> None:
    vectors, order = out.ordered(dim)
    # "skipped" counts problems by kind (an unreadable shard is one); "samples" counts the samples lost.
    stats = {"part": part, "shards": [urls[i] for i in sorted(urls)], "seen": out.seen,
             "embedded": int(vectors.shape[0]), "skipped": out.stats.to_dict(), "samples": loss_json(loss),
             "problems": out.stats.problems, "corrupt_fraction": loss.fraction,
             "shard_samples": shard_index_entries(out.reads), "dim": dim,
             "backend": spec.embed.backend.value,
             "model": None if spec.embed.backend is EmbedBackend.PIXELS else spec.embed.model}
    side = short_side(spec)
    if side is not None:  # what the copies cost, for the run's report
        stats["reduced"] = {"short_side": side, "bytes": out.reduced_bytes,
                            "original_bytes": sum(r.bytes for r in out.reads.values())}
    storage.write_npy(paths.embed_vectors(part), vectors, cfg)
    storage.write_bytes(paths.embed_keys(part), _keys_table(out, urls, order), cfg)
    storage.write_json(paths.embed_stats(part), stats, cfg)
    # The marker goes last: its presence means every file above is complete.
    storage.write_marker(paths.embed_marker(part), marker(spec, Stage.EMBED, rows=int(vectors.shape[0]), dim=dim),
                         cfg)
    log.info("part %d committed: %d rows, skipped %s", part, vectors.shape[0], out.stats.to_dict() or "none")


def _log_problems(part: int, out: PartOutput) -> None:
    for p in out.stats.problems:
        log.warning("part %d: %s in %s%s", part, p["kind"], p["shard"], f" ({p['member']})" if p["member"] else "")
    if out.stats.total > len(out.stats.problems):
        log.warning("part %d: %d problems in all (the first %d named)", part, out.stats.total,
                    len(out.stats.problems))


def check_corrupt(spec: RunSpec, part: int, out: PartOutput, loss: DataLoss) -> None:
    """Log every named problem; fail the part when the share of its samples lost (unreadable or truncated
    shards count the samples they should have held) exceeds the spec's ``data.maxCorruptFraction``."""
    _log_problems(part, out)
    if loss.lost:
        guessed = f" (estimated from the part's other shards for {len(loss.estimated)})" if loss.estimated else ""
        log.warning("part %d: %d of %d samples lost%s", part, loss.lost, loss.expected, guessed)
    limit, frac = spec.data.max_corrupt_fraction, loss.fraction
    if limit is not None and frac > limit:
        raise DynamicsError(f"part {part}: {loss.lost} of {loss.expected} samples ({100 * frac:.1f}%) are corrupt "
                            f"or in unreadable shards, above data.maxCorruptFraction ({100 * limit:.1f}%): "
                            f"{out.stats.to_dict()}",
                            hint="fix or remove the shards named above, or raise data.maxCorruptFraction")
