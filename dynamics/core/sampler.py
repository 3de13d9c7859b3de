"""Per-epoch sampling decisions, a pure function of ``(seed, epoch, shard_index, __key__)``.

Every read of a sample draws a fresh uniform ``u`` in ``[0, 1)`` (the method's "sample" step); here ``u`` is
not drawn from a stateful RNG but *computed*, so the decision is identical on any machine, after any
restart and for any split of shards or samples among data-loader workers::

    key_hash(key)  = FNV-1a-64(UTF-8 bytes of key)                   # offset 0xCBF29CE484222325,
                                                                     # prime 0x100000001B3
    mix64(x)       = splitmix64 output function:                     # all arithmetic mod 2**64
                     z = x + 0x9E3779B97F4A7C15
                     z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
                     z = (z ^ (z >> 27)) * 0x94D049BB133111EB
                     z ^ (z >> 31)
    stream         = mix64(mix64(mix64(seed) ^ epoch) ^ shard_index)  # ints taken mod 2**64
    u              = (mix64(stream ^ key_hash(key)) >> 11) / 2**53    # exact in float64

``shard_index`` is the shard's position in the run's full shard list (not a worker-local index), and
``epoch`` the training epoch; a shard read twice in one epoch gets the same decisions both times.

Modes (:data:`SampleMode`): ``cap`` (reference) uses a sample once iff ``u < min(p, 1)``; ``repeat`` gives
``floor(p)`` copies plus one more iff ``u < p - floor(p)``. ``p`` is the table's float32 value widened to
float64 for the comparison.

A :class:`ShardTable` holds the probabilities of ONE shard's keys, so a loader worker's memory is bounded
by the largest shard, not by N (the reference loads one ``{key: p}`` JSON of all N keys into every worker).
Keys missing from the table get ``default_prob`` (the reference silently uses 0.5) and are counted.
"""

from __future__ import annotations

import functools
import io
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from dynamics.core.scaling import PROB_DECIMALS, SampleMode
from dynamics.core.table_io import TABLE_FORMAT_VERSION, table_bytes

__all__ = [
    "DEFAULT_MISSING_PROB",
    "SampleMode",
    "ShardTable",
    "export_ref_json",
    "iter_ref_json",
    "key_hash",
    "key_hashes",
    "uniform",
    "uniforms",
    "use_count",
    "uses",
]

DEFAULT_MISSING_PROB = 0.5

_MASK64 = (1 << 64) - 1
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_GAMMA = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_TO_UNIT = 2.0**-53


# --- scalar (Python int) definitions: the specification the vectorised versions must match ---


def key_hash(key: str) -> int:
    """FNV-1a 64-bit hash of the UTF-8 bytes of ``key`` (stable across processes and platforms)."""
    h = _FNV_OFFSET
    for byte in key.encode("utf-8"):
        h = ((h ^ byte) * _FNV_PRIME) & _MASK64
    return h


def _mix64(x: int) -> int:
    z = (x + _GAMMA) & _MASK64
    z = ((z ^ (z >> 30)) * _M1) & _MASK64
    z = ((z ^ (z >> 27)) * _M2) & _MASK64
    return z ^ (z >> 31)


@functools.lru_cache(maxsize=256)
def _stream(seed: int, epoch: int, shard_index: int) -> int:
    """64-bit state shared by all keys of one (seed, epoch, shard); negative ints wrap mod 2**64."""
    # Cached: the per-sample path calls this with the same arguments for a whole shard.
    # int(): numpy integers would overflow in ``& _MASK64`` (and must give the same result).
    s = _mix64(int(seed) & _MASK64)
    s = _mix64(s ^ (int(epoch) & _MASK64))
    return _mix64(s ^ (int(shard_index) & _MASK64))


def uniform(key: str, *, seed: int, epoch: int, shard_index: int) -> float:
    """The uniform ``u`` in [0, 1) that decides ``key`` in this (seed, epoch, shard)."""
    return _unit(_mix64(_stream(seed, epoch, shard_index) ^ key_hash(key)))


def _unit(z: int) -> float:
    return (z >> 11) * _TO_UNIT


# --- vectorised (numpy uint64; wrap-around arithmetic is exactly mod 2**64) ---


def key_hashes(keys: Sequence[str]) -> np.ndarray:
    """:func:`key_hash` of every key, as uint64 (one numpy pass per byte position)."""
    encoded = [k.encode("utf-8") for k in keys]
    n = len(encoded)
    h = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    if n == 0:
        return h
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=n)
    width = int(lengths.max())
    if width == 0:
        return h
    # 'S' arrays pad with NUL; hashing only each key's own length keeps padding out. Sorting by
    # length (descending) makes the keys still active at byte j a prefix, so each step is a slice.
    order = np.argsort(-lengths, kind="stable")
    cols = np.ascontiguousarray(np.array(encoded, dtype=f"S{width}").view(np.uint8).reshape(n, width)[order].T)
    active = np.searchsorted(-lengths[order], -np.arange(width), side="left")
    hs = h.copy()
    prime = np.uint64(_FNV_PRIME)
    for j in range(width):
        m = int(active[j])
        hs[:m] = (hs[:m] ^ cols[j, :m]) * prime
    h[order] = hs
    return h


def _mix64_np(x: np.ndarray) -> np.ndarray:
    z = x + np.uint64(_GAMMA)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
    return z ^ (z >> np.uint64(31))


def _uniforms_from_hashes(hashes: np.ndarray, seed: int, epoch: int, shard_index: int) -> np.ndarray:
    stream = np.uint64(_stream(seed, epoch, shard_index))
    z = _mix64_np(np.asarray(hashes, dtype=np.uint64) ^ stream)
    return (z >> np.uint64(11)).astype(np.float64) * _TO_UNIT


def uniforms(keys: Sequence[str], *, seed: int, epoch: int, shard_index: int) -> np.ndarray:
    """:func:`uniform` for many keys of one shard (float64 array)."""
    return _uniforms_from_hashes(key_hashes(keys), seed, epoch, shard_index)


# --- decisions ---


def _copies(u: np.ndarray, p: np.ndarray, mode: SampleMode) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if mode == "cap":
        return (u < np.minimum(p, 1.0)).astype(np.int64)
    if mode == "repeat":
        whole = np.floor(p)
        return whole.astype(np.int64) + (u < p - whole)
    raise ValueError(f"mode must be 'cap' or 'repeat', got {mode!r}")


def _copies_one(u: float, p: float, mode: SampleMode) -> int:
    if mode == "cap":
        return int(u < min(p, 1.0))
    if mode == "repeat":
        whole = math.floor(p)
        return whole + int(u < p - whole)
    raise ValueError(f"mode must be 'cap' or 'repeat', got {mode!r}")


def _normalise_key(key: str | bytes | np.str_ | np.bytes_) -> str:
    return key.decode("utf-8") if isinstance(key, bytes) else str(key)


@dataclass(eq=False)
class ShardTable:
    """Sampling probabilities of the samples of one shard, keyed by webdataset ``__key__``.

    Build with :meth:`from_keys`; serialise with :meth:`to_bytes` / :meth:`from_bytes` (an ``.npz``
    holding the keys, float32 probabilities and optional cluster ids; key hashes are recomputed on
    load so a table can never disagree with the hash definition). ``misses`` counts lookups of keys
    absent from the table, which were given ``default_prob`` (``None``: raise ``KeyError`` instead).

    The decisions for all rows are computed in one vectorised pass on first use for a given
    (seed, epoch, shard_index, mode) and cached (one entry), so a per-sample loader pays only a dict
    lookup per sample.
    """

    keys: tuple[str, ...]
    probs: np.ndarray
    clusters: np.ndarray | None = None
    default_prob: float | None = DEFAULT_MISSING_PROB
    misses: int = 0
    hashes: np.ndarray = field(init=False, repr=False)
    _row: dict[str, int] = field(init=False, repr=False)
    _decided: tuple[tuple[int, int, int, str], np.ndarray, list[int]] | None = field(
        init=False, repr=False, default=None
    )

    def __post_init__(self) -> None:
        self.probs = np.ascontiguousarray(self.probs, dtype=np.float32)
        if self.probs.shape != (len(self.keys),):
            raise ValueError(f"{len(self.keys)} keys but probs has shape {self.probs.shape}")
        if not np.all(np.isfinite(self.probs)) or (self.probs.size and self.probs.min() < 0):
            raise ValueError("probabilities must be finite and >= 0")
        if self.clusters is not None:
            self.clusters = np.asarray(self.clusters, dtype=np.int32)
            if self.clusters.shape != self.probs.shape:
                raise ValueError("clusters must align with keys")
        dp = self.default_prob
        if dp is not None and not (math.isfinite(dp) and dp >= 0):
            raise ValueError(f"default_prob must be finite and >= 0, got {self.default_prob}")
        self._row = {k: i for i, k in enumerate(self.keys)}
        if len(self._row) != len(self.keys):
            raise ValueError("duplicate __key__ in one shard table")
        self.hashes = key_hashes(self.keys)

    @classmethod
    def from_keys(
        cls,
        keys: Iterable[str | bytes] | np.ndarray,
        probs: np.ndarray | Sequence[float],
        *,
        clusters: np.ndarray | None = None,
        default_prob: float | None = DEFAULT_MISSING_PROB,
    ) -> ShardTable:
        """Table from aligned keys (str, or UTF-8 bytes) and per-key probabilities."""
        return cls(
            tuple(_normalise_key(k) for k in keys),
            np.asarray(probs),
            clusters=clusters,
            default_prob=default_prob,
        )

    def __len__(self) -> int:
        return len(self.keys)

    def row(self, key: str) -> int | None:
        """Row of ``key`` in this table, or None."""
        return self._row.get(key)

    def rows(self, keys: Sequence[str]) -> np.ndarray:
        """Row of each key (int64), -1 where missing. Does not count misses."""
        if len(keys) == len(self.keys) and list(keys) == list(self.keys):
            # The common case: the whole shard in table order (one C-level comparison).
            return np.arange(len(keys), dtype=np.int64)
        return np.fromiter((self._row.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))

    def missing_prob(self, keys: Sequence[str]) -> float:
        """``default_prob`` for keys absent from the table, counting them (or KeyError if None)."""
        if self.default_prob is None:
            raise KeyError(f"__key__ {keys[0]!r} is not in this shard's sampling table")
        self.misses += len(keys)
        return self.default_prob

    def decide(self, *, seed: int, epoch: int, shard_index: int, mode: SampleMode = "cap") -> np.ndarray:
        """Copies (int64, read-only) for every row of the table; cached for the latest arguments."""
        return self._decisions(seed, epoch, shard_index, mode)[1]

    def _decisions(
        self, seed: int, epoch: int, shard_index: int, mode: SampleMode
    ) -> tuple[tuple[int, int, int, str], np.ndarray, list[int]]:
        args = (seed, epoch, shard_index, mode)
        if self._decided is None or self._decided[0] != args:
            u = _uniforms_from_hashes(self.hashes, seed, epoch, shard_index)
            copies = _copies(u, self.probs, mode)
            copies.setflags(write=False)
            self._decided = (args, copies, copies.tolist())
        return self._decided

    def to_bytes(self) -> bytes:
        """``.npz`` serialisation (what the scale stage writes per shard; same bytes as ``table_bytes``)."""
        # Fixed-width UTF-8 bytes load without pickle (object arrays would need allow_pickle).
        keys = np.array([k.encode("utf-8") for k in self.keys], dtype=np.bytes_)
        return table_bytes(keys, self.probs, self.clusters)

    @classmethod
    def from_bytes(cls, data: bytes, *, default_prob: float | None = DEFAULT_MISSING_PROB) -> ShardTable:
        """Inverse of :meth:`to_bytes`."""
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            version = int(z["version"])
            if version != TABLE_FORMAT_VERSION:
                raise ValueError(f"unsupported shard table version {version}")
            clusters = z["clusters"] if "clusters" in z.files else None
            return cls(
                tuple(k.decode("utf-8") for k in z["keys"].tolist()),
                z["probs"],
                clusters=clusters,
                default_prob=default_prob,
            )


def uses(
    table: ShardTable,
    keys: Sequence[str],
    *,
    seed: int,
    epoch: int,
    shard_index: int,
    mode: SampleMode = "cap",
) -> np.ndarray:
    """Copies (int64, 0 = skip) of each key of shard ``shard_index`` to train on in ``epoch``."""
    rows = table.rows(keys)
    found = rows >= 0
    out = np.empty(rows.size, dtype=np.int64)
    out[found] = table.decide(seed=seed, epoch=epoch, shard_index=shard_index, mode=mode)[rows[found]]
    missing = np.flatnonzero(~found)
    if missing.size:
        missing_keys = [keys[int(i)] for i in missing]
        p = np.full(missing.size, table.missing_prob(missing_keys))
        u = uniforms(missing_keys, seed=seed, epoch=epoch, shard_index=shard_index)
        out[missing] = _copies(u, p, mode)
    return out


def use_count(
    table: ShardTable,
    key: str,
    *,
    seed: int,
    epoch: int,
    shard_index: int,
    mode: SampleMode = "cap",
) -> int:
    """Per-sample form of :func:`uses` (same result), for a loader that sees one sample at a time."""
    row = table.row(key)
    if row is not None:
        return table._decisions(seed, epoch, shard_index, mode)[2][row]
    p = table.missing_prob([key])
    return _copies_one(uniform(key, seed=seed, epoch=epoch, shard_index=shard_index), p, mode)


# --- the reference format ---


def iter_ref_json(keys: Iterable[str], probs: Iterable[float], *, decimals: int = PROB_DECIMALS) -> Iterator[bytes]:
    """Stream the reference ``{__key__: probability}`` JSON object in chunks (constant memory)."""
    yield b"{"
    sep = b""
    for key, p in zip(keys, probs, strict=True):
        value = round(float(p), decimals)
        if not math.isfinite(value):
            raise ValueError(f"probability of {key!r} is not finite")
        yield sep + json.dumps(str(key)).encode("utf-8") + b":" + repr(value).encode("ascii")
        sep = b","
    yield b"}"


def export_ref_json(keys: Iterable[str], probs: Iterable[float], *, decimals: int = PROB_DECIMALS) -> bytes:
    """The reference ``{__key__: probability}`` JSON as one bytes object (see :func:`iter_ref_json`)."""
    return b"".join(iter_ref_json(keys, probs, decimals=decimals))
