"""Per-epoch sampler: decisions are a pure function of (seed, epoch, shard_index, __key__)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamics.core import sampler
from dynamics.core.sampler import (
    ShardTable,
    export_ref_json,
    iter_ref_json,
    key_hash,
    key_hashes,
    uniform,
    uniforms,
    use_count,
    uses,
)

KEYS = [f"{i:09d}" for i in range(20_000)]
# Keys that UTF-8 can encode (hypothesis' text() may produce lone surrogates, which it cannot).
key_st = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)


def test_hash_and_mixer_test_vectors() -> None:
    # Published FNV-1a 64 vectors and the first splitmix64 output for state 0.
    assert key_hash("") == 0xCBF29CE484222325
    assert key_hash("a") == 0xAF63DC4C8601EC8C
    assert key_hash("foobar") == 0x85944171F73967E8
    assert sampler._mix64(0) == 0xE220A8397B1DCDAF


@pytest.mark.parametrize(
    ("key", "seed", "epoch", "shard", "expected"),
    [
        ("000000000", 42, 0, 0, 0.7463470142941653),
        ("000000000", 42, 3, 17, 0.7827682761551076),
        ("sample_00042", 42, 0, 0, 0.8003682271687385),
        ("sample_00042", 42, 3, 17, 0.40841044608979016),
        ("日本/ключ", 42, 0, 0, 0.8770168671019002),
    ],
)
def test_uniform_is_stable(key: str, seed: int, epoch: int, shard: int, expected: float) -> None:
    """Computed once and frozen: any change to the hash or mixer changes every run's sample."""
    assert uniform(key, seed=seed, epoch=epoch, shard_index=shard) == expected
    as_numpy = {"seed": np.int64(seed), "epoch": np.uint32(epoch), "shard_index": np.int32(shard)}
    assert uniform(key, **as_numpy) == expected
    assert uniforms([key], seed=seed, epoch=epoch, shard_index=shard)[0] == expected


@settings(max_examples=50)
@given(keys=st.lists(key_st, max_size=30), seed=st.integers(-(2**70), 2**70), epoch=st.integers(0, 10**6))
def test_vectorised_equals_scalar(keys: list[str], seed: int, epoch: int) -> None:
    assert key_hashes(keys).tolist() == [key_hash(k) for k in keys]
    u = uniforms(keys, seed=seed, epoch=epoch, shard_index=5)
    assert u.tolist() == [uniform(k, seed=seed, epoch=epoch, shard_index=5) for k in keys]
    assert np.all((u >= 0) & (u < 1))


@settings(max_examples=30, deadline=None)
@given(
    probs=st.lists(st.floats(0, 4, width=32), min_size=1, max_size=40),
    mode=st.sampled_from(["cap", "repeat"]),
    epoch=st.integers(0, 50),
)
def test_uses_equals_use_count(probs: list[float], mode: sampler.SampleMode, epoch: int) -> None:
    keys = [f"k{i}" for i in range(len(probs))]
    table = ShardTable.from_keys(keys, np.array(probs, dtype=np.float32))
    lookup = [*keys, "missing-1", "missing-2"]
    vec = uses(table, lookup, seed=1, epoch=epoch, shard_index=3, mode=mode)
    one = [use_count(table, k, seed=1, epoch=epoch, shard_index=3, mode=mode) for k in lookup]
    assert vec.tolist() == one


def long_tail_table(n: int = 60_000) -> tuple[ShardTable, np.ndarray]:
    levels = np.array([0.05, 0.3, 0.75, 1.0, 1.6, 3.25], dtype=np.float32)
    cluster = np.arange(n) % levels.size
    return ShardTable.from_keys([f"s/{i:08d}" for i in range(n)], levels[cluster]), cluster


@pytest.mark.parametrize("mode", ["cap", "repeat"])
def test_empirical_rates_converge(mode: sampler.SampleMode) -> None:
    table, cluster = long_tail_table()
    p = table.probs.astype(np.float64)
    expect = np.minimum(p, 1.0) if mode == "cap" else p
    totals = np.zeros(p.size)
    epochs = 5
    for epoch in range(epochs):
        totals += uses(table, list(table.keys), seed=42, epoch=epoch, shard_index=0, mode=mode)
    for c in range(6):
        rows = cluster == c
        n = rows.sum() * epochs
        mean, target = totals[rows].sum() / n, expect[rows][0]
        frac = target - np.floor(target)
        sigma = np.sqrt(max(frac * (1 - frac), 1e-12) / n)
        assert abs(mean - target) <= 5 * sigma + 1e-12, (c, mean, target)
    if mode == "repeat":
        # p = 3.25 over 5 epochs: always 3 copies, plus 0..5 extra ones.
        assert totals[cluster == 5].min() >= 15 and totals[cluster == 5].max() <= 20


def test_same_inputs_same_decisions_and_worker_splits_agree() -> None:
    table = ShardTable.from_keys(KEYS, np.full(len(KEYS), 0.4, dtype=np.float32))
    full = uses(table, KEYS, seed=7, epoch=2, shard_index=11)
    again = uses(ShardTable.from_bytes(table.to_bytes()), KEYS, seed=7, epoch=2, shard_index=11)
    assert np.array_equal(full, again)
    # Three "workers" each see an interleaved third of the keys; together they decide the same.
    merged = np.empty_like(full)
    for w in range(3):
        idx = np.arange(w, len(KEYS), 3)
        merged[idx] = uses(table, [KEYS[i] for i in idx], seed=7, epoch=2, shard_index=11)
    assert np.array_equal(merged, full)


def test_decisions_change_with_epoch_seed_and_shard() -> None:
    table = ShardTable.from_keys(KEYS, np.full(len(KEYS), 0.5, dtype=np.float32))
    base = uses(table, KEYS, seed=7, epoch=0, shard_index=0)
    for kwargs in (
        {"seed": 7, "epoch": 1, "shard_index": 0},
        {"seed": 8, "epoch": 0, "shard_index": 0},
        {"seed": 7, "epoch": 0, "shard_index": 1},
    ):
        other = uses(table, KEYS, **kwargs)
        # Independent Bernoulli(0.5) draws differ half the time.
        assert 0.45 < np.mean(base != other) < 0.55
    # Epochs are independent of each other, not just different: pairwise agreement ~ 0.5.
    e = np.array([uses(table, KEYS, seed=7, epoch=i, shard_index=0) for i in range(4)])
    assert np.all(np.abs(e.mean(axis=1) - 0.5) < 0.02)


def test_uniform_has_no_visible_structure_on_sequential_keys() -> None:
    u = uniforms(KEYS, seed=0, epoch=0, shard_index=0)
    hist, _ = np.histogram(u, bins=20, range=(0, 1))
    expected = len(KEYS) / 20
    chi2 = ((hist - expected) ** 2 / expected).sum()
    assert chi2 < 60  # 19 dof: p < 1e-5 for a genuinely uniform u
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.03


def test_missing_keys_use_default_and_are_counted() -> None:
    table = ShardTable.from_keys(["a", "b"], np.array([1.0, 1.0], dtype=np.float32), default_prob=0.0)
    assert uses(table, ["a", "x", "b", "y"], seed=0, epoch=0, shard_index=0).tolist() == [1, 0, 1, 0]
    assert table.misses == 2
    assert use_count(table, "z", seed=0, epoch=0, shard_index=0) == 0
    assert table.misses == 3
    ref = ShardTable.from_keys(["a"], np.array([0.0], dtype=np.float32))
    assert ref.default_prob == 0.5  # the reference's silent default, made explicit
    strict = ShardTable.from_keys(["a"], np.array([0.0], dtype=np.float32), default_prob=None)
    with pytest.raises(KeyError):
        uses(strict, ["a", "nope"], seed=0, epoch=0, shard_index=0)
    with pytest.raises(KeyError):
        use_count(strict, "nope", seed=0, epoch=0, shard_index=0)


def test_repeat_mode_copies() -> None:
    table = ShardTable.from_keys(["a", "b", "c"], np.array([0.0, 2.0, 3.0], dtype=np.float32))
    for epoch in range(5):
        assert uses(table, ["a", "b", "c"], seed=0, epoch=epoch, shard_index=0, mode="repeat").tolist() == [
            0,
            2,
            3,
        ]
        assert uses(table, ["a", "b", "c"], seed=0, epoch=epoch, shard_index=0, mode="cap").tolist() == [0, 1, 1]
    with pytest.raises(ValueError):
        uses(table, ["a"], seed=0, epoch=0, shard_index=0, mode="bogus")  # type: ignore[arg-type]


def test_table_round_trip_and_validation() -> None:
    keys = ["日本/1", "plain", "with space"]
    table = ShardTable.from_keys(np.array([k.encode() for k in keys]), [0.1, 0.2, 3.0], clusters=np.array([4, 5, 6]))
    back = ShardTable.from_bytes(table.to_bytes(), default_prob=None)
    assert back.keys == tuple(keys)
    assert back.probs.dtype == np.float32 and np.array_equal(back.probs, table.probs)
    assert back.clusters is not None and back.clusters.tolist() == [4, 5, 6]
    assert np.array_equal(back.hashes, key_hashes(keys))
    with pytest.raises(ValueError):
        ShardTable.from_keys(["a", "a"], [0.1, 0.2])
    with pytest.raises(ValueError):
        ShardTable.from_keys(["a"], [0.1, 0.2])
    with pytest.raises(ValueError):
        ShardTable.from_keys(["a"], [-0.1])


def test_reference_json_export() -> None:
    keys = ['a"quoted"', "日本", "plain"]
    probs = [0.12345678, 1.5, np.float32(0.3)]
    data = export_ref_json(keys, probs)
    assert json.loads(data) == {'a"quoted"': 0.123457, "日本": 1.5, "plain": 0.3}
    assert b"".join(iter_ref_json(iter(keys), iter(probs))) == data
    assert json.loads(export_ref_json([], [])) == {}
    with pytest.raises(ValueError):
        export_ref_json(["a"], [float("nan")])


@pytest.mark.parametrize("mode", ["cap", "repeat"])
def test_decisions_follow_the_documented_formula(mode: sampler.SampleMode) -> None:
    probs = np.random.default_rng(3).uniform(0, 3, 500).astype(np.float32)
    keys = [f"key-{i}" for i in range(500)]
    table = ShardTable.from_keys(keys, probs)
    got = uses(table, keys, seed=9, epoch=4, shard_index=2, mode=mode)
    for key, p32, copies in zip(keys, probs.tolist(), got.tolist(), strict=True):
        u = uniform(key, seed=9, epoch=4, shard_index=2)
        want = int(u < min(p32, 1.0)) if mode == "cap" else int(p32) + int(u < p32 - int(p32))
        assert copies == want


def test_cached_decisions_follow_the_arguments() -> None:
    table = ShardTable.from_keys(KEYS[:2000], np.full(2000, 1.5, dtype=np.float32))
    fresh = ShardTable.from_keys(KEYS[:2000], np.full(2000, 1.5, dtype=np.float32))
    for epoch, mode in [(0, "cap"), (1, "cap"), (1, "repeat"), (0, "cap"), (0, "repeat")]:
        one = [use_count(table, k, seed=1, epoch=epoch, shard_index=0, mode=mode) for k in KEYS[:2000:7]]
        ref = uses(fresh, KEYS[:2000:7], seed=1, epoch=epoch, shard_index=0, mode=mode).tolist()
        assert one == ref
    assert not table.decide(seed=1, epoch=0, shard_index=0).flags.writeable
