"""Shard patterns in webdataset's notation, without I/O (the spec and the controller count shards here).

``{00000..00099}`` zero-padded ranges, ``{a,b}`` lists, several groups, and ``::`` between alternative
patterns -- expanded exactly as ``webdataset.shardlists.expand_urls`` does (via braceexpand), except
that ``${VAR}`` is not substituted: a spec means the same thing on every machine.
"""

from __future__ import annotations

import functools

import braceexpand


def expand(pattern: str) -> list[str]:
    """The shard URLs a pattern names, in order."""
    out: list[str] = []
    for part in pattern.split("::"):
        try:
            out.extend(braceexpand.braceexpand(part))
        except braceexpand.UnbalancedBracesError as exc:
            raise ValueError(f"unbalanced braces in shard pattern '{pattern}'") from exc
    return out


# Cached: the spec counts shards on every render, and the controller renders each stage several times per
# pass; expanding the recipe's 20,069-shard pattern takes ~0.1 s each time.
@functools.lru_cache(maxsize=64)
def count_pattern(pattern: str) -> int:
    """Number of shards a pattern expands to; a ValueError says why a pattern is unusable."""
    if not pattern.strip():
        raise ValueError("shard pattern is empty")
    urls = expand(pattern)
    if not urls or any(not u for u in urls):
        raise ValueError(f"shard pattern '{pattern}' expands to an empty shard name")
    return len(urls)
