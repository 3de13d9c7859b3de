"""Per-shard sampling tables written from the assign outputs' arrays, concurrently.

Parts are contiguous shard slices with rows in (shard, row) order, so each shard is one run of rows of
one part. Keys stay in Arrow's buffers (no Python string per key) and each table's bytes come from
:func:`dynamics.core.table_io.table_bytes`, identical to ``ShardTable.to_bytes``. Writes (one fsync per
file locally, one PUT on S3) run on a thread pool: they wait on I/O, not the GIL.
"""

from __future__ import annotations

import io
import itertools
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dynamics.core.table_io import fixed_width_keys, table_bytes
from dynamics.spec.checks import embed_parts
from dynamics.spec.model import RunSpec
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths

WRITE_THREADS = 16


def key_buffers(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, data) of a string/binary column: row i is ``data[offsets[i]:offsets[i + 1]]``."""
    arr = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_string(arr.type):
        arr = arr.cast(pa.binary())
    elif pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.large_binary())
    width = np.int64 if pa.types.is_large_binary(arr.type) else np.int32
    _, off_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(off_buf, dtype=width)[arr.offset:arr.offset + len(arr) + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    return offsets, data


def read_part_keys(paths: RunPaths, part: int, cfg: storage.StorageConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(shard index per row, key offsets, key bytes) of one embed part."""
    table = pq.read_table(io.BytesIO(storage.read_bytes(paths.embed_keys(part), cfg)),
                          columns=["shard_index", "key"])
    offsets, data = key_buffers(table.column("key"))
    return table.column("shard_index").to_numpy().astype(np.int64), offsets, data


def part_tables(shard_index: np.ndarray, offsets: np.ndarray, data: np.ndarray, labels: np.ndarray,
                probs: np.ndarray) -> list[tuple[int, bytes]]:
    """(shard, table bytes) for every shard present in one part."""
    n = len(shard_index)
    starts = np.flatnonzero(np.r_[True, shard_index[1:] != shard_index[:-1]]) if n else []
    out = []
    for lo, hi in itertools.pairwise([*map(int, starts), n]):
        shard_labels = labels[lo:hi]
        keys = fixed_width_keys(offsets, data, lo, hi)
        out.append((int(shard_index[lo]), table_bytes(keys, probs[shard_labels], shard_labels)))
    return out


def write_shard_tables(spec: RunSpec, paths: RunPaths, probs: np.ndarray, cfg: storage.StorageConfig,
                       threads: int = WRITE_THREADS) -> int:
    """Write one table per shard (its keys with their cluster and probability); returns how many."""
    written: set[int] = set()
    probs32 = probs.astype(np.float32)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: list[Future] = []
        for part in range(embed_parts(spec)):
            shard_index, offsets, data = read_part_keys(paths, part, cfg)
            labels = storage.read_npy(paths.assign_labels(part), cfg)
            tables = part_tables(shard_index, offsets, data, labels, probs32)
            # At most two parts' tables in memory: wait for the previous part before queueing more.
            _wait(pending)
            pending = [pool.submit(storage.write_bytes, paths.shard_table(s), b, cfg) for s, b in tables]
            written.update(s for s, _ in tables)
        # Shards with no embedded sample (all corrupt, or empty) still get a table: an empty one.
        empty = table_bytes(np.zeros(0, dtype="S1"), np.zeros(0, np.float32), np.zeros(0, np.int32))
        pending += [pool.submit(storage.write_bytes, paths.shard_table(s), empty, cfg)
                    for s in sorted(set(range(spec.n_shards)) - written)]
        _wait(pending)
    return spec.n_shards


def _wait(futures: list[Future]) -> None:
    for fut in futures:
        fut.result()  # re-raises the first write error in the caller
