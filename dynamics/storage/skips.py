"""Why samples or shards were skipped, counted by kind and named (shard URL, member key), capped."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class SkipReason(StrEnum):
    """Why a sample (or part of a shard) was skipped or flagged."""

    CORRUPT_IMAGE = "corrupt_image"
    MISSING_IMAGE = "missing_image"
    MISSING_CAPTION = "missing_caption"  # flagged, not skipped: images are embedded anyway
    TRUNCATED_SHARD = "truncated_shard"  # cut short: its complete samples are used
    EMPTY_SHARD = "empty_shard"  # zero bytes
    NOT_A_TAR = "not_a_tar"  # not a tar archive at all
    BAD_JSON = "bad_json"
    DUPLICATE_MEMBER = "duplicate_member"


class CorruptImage(ValueError):
    """Image bytes that PIL cannot decode; callers count it as ``SkipReason.CORRUPT_IMAGE``."""

    reason = SkipReason.CORRUPT_IMAGE


MAX_PROBLEMS = 100  # named problems kept per stats object; the counts stay exact beyond it


@dataclass
class SkipStats:
    """Counts of skipped/flagged items by reason; mergeable across shards, workers and parts.

    ``problems`` names the first :data:`MAX_PROBLEMS` of them: kind, shard URL and member key, so
    a user can find and fix the data.
    """

    counts: Counter[str] = field(default_factory=Counter)
    problems: list[dict[str, str]] = field(default_factory=list)

    def add(self, reason: SkipReason | str, n: int = 1, shard: str | None = None,
            member: str | None = None) -> None:
        """Count ``n`` occurrences of ``reason``; name it when ``shard`` is given."""
        self.counts[str(reason)] += n
        if shard is not None:
            self._keep([{"kind": str(reason), "shard": shard, "member": member or ""}])

    def _keep(self, problems: list[dict[str, str]]) -> None:
        self.problems += problems[: max(0, MAX_PROBLEMS - len(self.problems))]

    def merge(self, other: SkipStats | Mapping[str, int]) -> SkipStats:
        """Add another stats object (or its ``to_dict()``) into this one; returns self."""
        items = other.counts if isinstance(other, SkipStats) else other
        for reason, n in items.items():
            self.counts[str(reason)] += int(n)
        if isinstance(other, SkipStats):
            self._keep(other.problems)
        return self

    def __iadd__(self, other: SkipStats) -> SkipStats:
        return self.merge(other)

    def __getitem__(self, reason: SkipReason | str) -> int:
        return self.counts[str(reason)]

    @property
    def total(self) -> int:
        """All counted occurrences."""
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, int]:
        """Plain ``{reason: count}`` with sorted keys and no zero entries (JSON-ready)."""
        return {k: v for k, v in sorted(self.counts.items()) if v}

    @classmethod
    def from_dict(cls, data: Mapping[str, int]) -> SkipStats:
        """Inverse of :meth:`to_dict`."""
        return cls().merge(data)


# Kinds that end a shard early: the samples it should have held after that point are lost unseen.
SHARD_KINDS = frozenset({SkipReason.TRUNCATED_SHARD, SkipReason.EMPTY_SHARD, SkipReason.NOT_A_TAR})
# Kinds counted per sample that was seen but not used (flagged kinds such as a missing caption are used).
SAMPLE_KINDS = frozenset({SkipReason.CORRUPT_IMAGE, SkipReason.MISSING_IMAGE})


@dataclass
class ShardRead:
    """How much of one shard was read: its samples (key groups, skipped ones included) and whether to the end."""

    rows: int = 0
    complete: bool = True
    bytes: int = 0  # bytes read from the shard (the whole file when complete)


@dataclass(frozen=True)
class DataLoss:
    """A part's data loss counted in samples. Pure data; see :func:`data_loss`."""

    expected: int  # samples the part's shards hold (read, plus those lost)
    lost_in_shards: int  # samples an unreadable or truncated shard should have held but did not give
    skipped: int  # samples read but unusable (undecodable or missing image)
    estimated: tuple[str, ...] = ()  # shards whose loss is estimated from the part's other shards

    @property
    def lost(self) -> int:
        """Every sample the part should have given and did not."""
        return self.lost_in_shards + self.skipped

    @property
    def fraction(self) -> float:
        """``lost / expected`` (0 for an empty part)."""
        return self.lost / self.expected if self.expected else 0.0


def data_loss(reads: Mapping[str, ShardRead], known: Mapping[str, int], skipped: int) -> DataLoss:
    """Samples lost by a part whose shards read as ``reads``; ``known``: the samples a shard held when
    it was last read whole (the embed stage's index). A shard without a known count is assumed to
    hold the median of the part's shards read whole, and at least one more sample than it gave. Pure."""
    whole = sorted(r.rows for r in reads.values() if r.complete)
    typical = whole[len(whole) // 2] if whole else 0
    expected = lost = 0
    estimated = []
    for url, read in sorted(reads.items()):
        held = read.rows
        if not read.complete:
            if url in known:
                held = max(known[url], read.rows)
            else:
                held = max(typical, read.rows + 1)
                estimated.append(url)
        lost += held - read.rows
        expected += held
    return DataLoss(expected, lost, skipped, tuple(estimated))
