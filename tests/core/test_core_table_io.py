"""The array-based table writer gives the same bytes as ShardTable.to_bytes, reproducibly."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from dynamics.core.sampler import ShardTable
from dynamics.core.table_io import fixed_width_keys, table_bytes
from dynamics.stages.scale.tables import key_buffers, part_tables

KEYS = ["a", "bb/0001", "ünïcødé-κλειδί", "x" * 40, "c", "000123/00042"]


@pytest.mark.parametrize("lo,hi", [(0, 6), (1, 3), (4, 5), (2, 2)])
def test_fixed_width_keys_match_numpy_bytes(lo: int, hi: int) -> None:
    offsets, data = key_buffers(pa.chunked_array([pa.array(KEYS[:2]), pa.array(KEYS[2:])]))
    expected = np.array([k.encode() for k in KEYS[lo:hi]], dtype=np.bytes_)
    got = fixed_width_keys(offsets, data, lo, hi)
    assert got.dtype == expected.dtype
    assert got.tolist() == expected.tolist()


def test_fixed_width_fast_path_for_equal_length_keys() -> None:
    keys = [f"{i:05d}" for i in range(7)]
    offsets, data = key_buffers(pa.chunked_array([pa.array(["longer-first", *keys])]))
    got = fixed_width_keys(offsets, data, 2, 8)
    assert got.dtype == np.dtype("S5") and got.tolist() == [k.encode() for k in keys[1:]]
    assert got.flags.writeable  # a copy, not a view into Arrow's read-only buffer


def test_table_bytes_identical_to_shard_table_and_reproducible() -> None:
    rng = np.random.default_rng(3)
    probs = rng.random(len(KEYS)).astype(np.float32)
    clusters = rng.integers(0, 9, len(KEYS)).astype(np.int32)
    keys = np.array([k.encode() for k in KEYS], dtype=np.bytes_)
    fast = table_bytes(keys, probs, clusters)
    assert fast == ShardTable.from_keys(KEYS, probs, clusters=clusters).to_bytes()
    assert fast == table_bytes(keys.copy(), probs.copy(), clusters.copy())
    back = ShardTable.from_bytes(fast)
    assert back.keys == tuple(KEYS) and np.array_equal(back.clusters, clusters)
    empty = table_bytes(np.zeros(0, dtype="S1"), np.zeros(0, np.float32), np.zeros(0, np.int32))
    assert empty == ShardTable.from_keys([], np.zeros(0, np.float32), clusters=np.zeros(0, np.int32)).to_bytes()


def test_part_tables_split_by_shard_like_per_key_tables() -> None:
    rng = np.random.default_rng(5)
    shard_index = np.repeat(np.array([3, 4, 7]), [2, 3, 1])
    labels = rng.integers(0, 4, len(KEYS)).astype(np.int32)
    probs = np.array([0.1, 1.5, 0.25, 0.75], dtype=np.float32)
    offsets, data = key_buffers(pa.chunked_array([pa.array(KEYS, pa.large_string())]))
    got = part_tables(shard_index, offsets, data, labels, probs)
    assert [s for s, _ in got] == [3, 4, 7]
    for (lo, hi), (_, blob) in zip([(0, 2), (2, 5), (5, 6)], got, strict=True):
        assert blob == ShardTable.from_keys(KEYS[lo:hi], probs[labels[lo:hi]], clusters=labels[lo:hi]).to_bytes()
