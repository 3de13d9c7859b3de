"""A part's data loss in samples: unreadable or truncated shards count the samples they should have held.

How many a damaged shard should have held comes from the embed stage's own index -- the
``shard_samples`` every committed part writes into its ``stats.json`` (shards read whole), found in
any embed directory of the work directory -- or, for a shard never read whole, from the median of
the part's other shards (:func:`dynamics.storage.skips.data_loss`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from dynamics import constants as C
from dynamics.errors import StorageError
from dynamics.storage import objects as storage
from dynamics.storage.layout import join
from dynamics.storage.skips import SAMPLE_KINDS, DataLoss, ShardRead, SkipStats, data_loss

log = logging.getLogger("dynamics.embed")


def shard_index_entries(reads: Mapping[str, ShardRead]) -> dict[str, int]:
    """The index a committed part writes: samples held by each shard it read whole."""
    return {url: r.rows for url, r in sorted(reads.items()) if r.complete}


def known_shard_samples(workdir: str, urls: set[str], cfg: storage.StorageConfig | None) -> dict[str, int]:
    """Samples each of ``urls`` held when an earlier embed pass read it whole (any embed directory
    under ``<workdir>/_shared``); only called for a part with a damaged shard, so the listing is rare."""
    known: dict[str, int] = {}
    shared = join(workdir, C.DIR_SHARED)
    try:
        stats = [u for u in storage.list_uris(shared, cfg)
                 if u.endswith(".stats.json") and f"/{C.DIR_EMBED}/part-" in u]
        for uri in stats:
            entries: Any = (storage.read_json(uri, cfg) or {}).get("shard_samples") or {}
            known.update({u: int(n) for u, n in entries.items() if u in urls})
    except StorageError as exc:  # the index is a help, not a requirement: fall back to the estimate
        log.warning("cannot read the embed stage's shard index under %s (%s); estimating losses from the "
                    "part's other shards", shared, exc)
    return known


def part_loss(reads: Mapping[str, ShardRead], stats: SkipStats, workdir: str,
              cfg: storage.StorageConfig | None) -> DataLoss:
    """The part's :class:`DataLoss`, looking damaged shards up in the embed index first."""
    damaged = {url for url, r in reads.items() if not r.complete}
    known = known_shard_samples(workdir, damaged, cfg) if damaged else {}
    return data_loss(reads, known, sum(stats[kind] for kind in SAMPLE_KINDS))


def loss_json(loss: DataLoss) -> dict[str, Any]:
    """The ``samples`` entry of a part's stats.json."""
    return {"expected": loss.expected, "lost": loss.lost, "lost_in_unreadable_shards": loss.lost_in_shards,
            "skipped": loss.skipped, "estimated_from_other_shards": list(loss.estimated)}
