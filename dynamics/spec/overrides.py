"""``--set path=value``: override spec fields from the command line (a sweep without editing files). Pure."""

from __future__ import annotations

import copy
import re
from typing import Any

from dynamics.errors import SpecError
from dynamics.spec.limits import MAX_BYTES, MAX_DEPTH
from dynamics.spec.yamlsafe import parse_value

# A list index has at most 9 digits: int() of a 100,000-digit one would raise, and no list is that long.
_SEGMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)((?:\[\d{1,9}\])*)$")
_FIX_PATH = "use dotted YAML field names, e.g. --set sample.alpha=0.5 or --set train.phases[0].lr=1e-3"


def _segments(path: str, item: str) -> list[str | int]:
    """``train.phases[0].lr`` -> ['train', 'phases', 0, 'lr']."""
    out: list[str | int] = []
    for part in path.split("."):
        match = _SEGMENT.match(part)
        if not match:
            raise SpecError(f"--set {_short(item)}: {_short(part)} is not a field name", hint=_FIX_PATH)
        out.append(match.group(1))
        out += [int(i) for i in re.findall(r"\[(\d+)\]", match.group(2))]
        if len(out) > MAX_DEPTH:
            raise SpecError(f"--set {_short(item)}: maximum nesting depth ({MAX_DEPTH}) exceeded by the path",
                            hint="a run spec nests a few levels only")
    return out


def _short(text: str, limit: int = 80) -> str:
    """``text`` quoted, cut to ``limit`` characters (a hostile value must not flood the terminal)."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text):,} characters)"


def parse_set(item: str) -> tuple[list[str | int], Any]:
    """Split ``path=value``; the value is read as YAML (``0.5`` a number, ``true`` a boolean, ``[a, b]`` a list)."""
    path, sep, raw = item.partition("=")
    if not sep or not path.strip():
        raise SpecError(f"--set {_short(item)}: expected PATH=VALUE", hint="e.g. --set sample.alpha=0.5")
    if len(path) > MAX_BYTES:
        raise SpecError(f"--set {_short(item)}: the path is {len(path):,} characters", hint=_FIX_PATH)
    keys = _segments(path.strip(), item)
    # The same loader and limits as a spec file, so a value is refused with the same message.
    return keys, parse_value(raw, f"--set {_short(path.strip())}", depth_used=len(keys))


def _step(node: Any, key: str | int, item: str) -> Any:
    if isinstance(key, int):
        if not isinstance(node, list) or key >= len(node):
            raise SpecError(f"--set {_short(item)}: there is no item [{key}] to set",
                            hint="index an existing list item (counted from 0)")
        return node[key]
    if not isinstance(node, dict):
        raise SpecError(f"--set {_short(item)}: {key!r} is inside a value that is not a mapping")
    return node.setdefault(key, {})


def apply_sets(data: dict[str, Any], items: list[str]) -> dict[str, Any]:
    """A copy of the parsed spec ``data`` with every ``--set`` applied in order (validation comes after,
    so a misspelt field is reported like one in the file)."""
    out = copy.deepcopy(data)
    for item in items:
        keys, value = parse_set(item)
        node: Any = out
        for key in keys[:-1]:
            node = _step(node, key, item)
        last = keys[-1]
        if isinstance(last, int):
            _step(node, last, item)
            node[last] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise SpecError(f"--set {_short(item)}: {last!r} is inside a value that is not a mapping")
    return out
