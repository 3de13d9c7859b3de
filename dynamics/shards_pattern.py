"""Pure brace-pattern arithmetic for shard lists (no I/O, no third-party imports).

Supports the webdataset/braceexpand forms used for shard lists: zero-padded numeric ranges
``{00000..00099}`` and comma lists ``{a,b,c}``, any number of groups. Lives apart from
:mod:`dynamics.shards` so the spec and the controller can count shards without webdataset.
"""

from __future__ import annotations

import itertools
import re

_GROUP = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.(\d+))?$")


def _alternatives(body: str) -> list[str]:
    match = _RANGE.match(body)
    if match:
        lo_s, hi_s, step_s = match.groups()
        lo, hi = int(lo_s), int(hi_s)
        step = int(step_s) if step_s else 1
        if step <= 0:
            raise ValueError(f"range step must be positive in '{{{body}}}'")
        width = max(len(lo_s), len(hi_s)) if lo_s.startswith("0") or hi_s.startswith("0") else 0
        seq = range(lo, hi + 1, step) if lo <= hi else range(lo, hi - 1, -step)
        return [str(i).zfill(width) for i in seq]
    if "," in body:
        return body.split(",")
    # braceexpand keeps a brace group without a comma or range literally
    return [f"{{{body}}}"]


def _split(pattern: str) -> tuple[list[str], list[list[str]]]:
    if pattern.count("{") != pattern.count("}"):
        raise ValueError(f"unbalanced braces in shard pattern '{pattern}'")
    literals = _GROUP.split(pattern)[0::2]
    groups = [_alternatives(body) for body in _GROUP.findall(pattern)]
    return literals, groups


def expand(pattern: str) -> list[str]:
    """Expand a brace pattern into the list of shard URLs, in order."""
    literals, groups = _split(pattern)
    out = []
    for combo in itertools.product(*groups):
        pieces = [literals[0]]
        for alt, lit in zip(combo, literals[1:], strict=True):
            pieces += [alt, lit]
        out.append("".join(pieces))
    return out


def count_pattern(pattern: str) -> int:
    """Number of shards a pattern expands to, without building the list."""
    if not pattern.strip():
        raise ValueError("shard pattern is empty")
    _, groups = _split(pattern)
    total = 1
    for alts in groups:
        total *= len(alts)
    if total == 0:
        raise ValueError(f"shard pattern '{pattern}' expands to no shards")
    return total
