"""``--set path=value``: override spec fields from the command line (a sweep without editing files). Pure."""

from __future__ import annotations

import copy
import re
from typing import Any

import yaml

from dynamics.errors import SpecError

_SEGMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)$")


def _segments(path: str, item: str) -> list[str | int]:
    """``train.phases[0].lr`` -> ['train', 'phases', 0, 'lr']."""
    out: list[str | int] = []
    for part in path.split("."):
        match = _SEGMENT.match(part)
        if not match:
            raise SpecError(f"--set {item!r}: {part!r} is not a field name",
                            hint="use dotted YAML field names, e.g. --set sample.alpha=0.5 or "
                            "--set train.phases[0].lr=1e-3")
        out.append(match.group(1))
        out += [int(i) for i in re.findall(r"\[(\d+)\]", match.group(2))]
    return out


def parse_set(item: str) -> tuple[list[str | int], Any]:
    """Split ``path=value``; the value is read as YAML (``0.5`` a number, ``true`` a boolean, ``[a, b]`` a list)."""
    path, sep, raw = item.partition("=")
    if not sep or not path.strip():
        raise SpecError(f"--set {item!r}: expected PATH=VALUE", hint="e.g. --set sample.alpha=0.5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise SpecError(f"--set {item!r}: the value is not valid YAML: {exc}",
                        hint="quote it, e.g. --set 'name=\"a05\"'") from exc
    return _segments(path.strip(), item), value


def _step(node: Any, key: str | int, item: str) -> Any:
    if isinstance(key, int):
        if not isinstance(node, list) or key >= len(node):
            raise SpecError(f"--set {item!r}: there is no item [{key}] to set",
                            hint="index an existing list item (counted from 0)")
        return node[key]
    if not isinstance(node, dict):
        raise SpecError(f"--set {item!r}: {key!r} is inside a value that is not a mapping")
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
            raise SpecError(f"--set {item!r}: {last!r} is inside a value that is not a mapping")
    return out
