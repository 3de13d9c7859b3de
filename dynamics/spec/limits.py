"""YAML parsing with limits, so a hostile or broken spec file fails fast with one clear message.

A run spec is a few KB. Limits checked before anything is built from the text: its size, the nesting
depth, explicit tags (only the plain types: ``!!binary``, ``!!set``, ``!!python/...`` and custom tags are
refused), and the number of nodes after aliases are expanded (an "alias bomb" of a few lines expands to
billions: the parsed data shares them, but validating, rendering and dumping it would not). While
building: integers longer than any real setting, and duplicate keys (YAML's last-wins hides typos).
Every check is linear in the text; the event pass is iterative, so deep nesting cannot recurse.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml import events

from dynamics.errors import SpecError

# libyaml when PyYAML has it: the pure-Python scanner needs seconds for a large or deeply nested file.
_BASE: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_BYTES = 256 * 1024  # real specs are 2-6 KB
MAX_DEPTH = 64
MAX_NODES = 20_000  # real specs have a few hundred values
MAX_INT_DIGITS = 40
_FIX_ALIAS = "write the values out, or use fewer/shallower anchors and aliases"
_FIX_SIZE = "a run spec has a few hundred values: keep long lists (keys, class names) in files it points at"
# Explicit tags a spec may carry: the plain JSON-like types (None: no tag; "!": the non-specific tag).
_PLAIN_TAGS = frozenset({None, "!", *(f"tag:yaml.org,2002:{t}" for t in
                                      ("str", "int", "float", "bool", "null", "seq", "map"))})


def _where(mark: yaml.Mark | None) -> str:
    return f"line {mark.line + 1}" if mark is not None else "unknown line"


def check_size(size: int, source: str) -> None:
    """Refuse a spec larger than :data:`MAX_BYTES` before reading it."""
    if size > MAX_BYTES:
        raise SpecError(f"{source}: the spec is {size:,} bytes; at most {MAX_BYTES:,} are accepted",
                        hint="a run spec is a few KB: check that this is the right file")


def _check_tag(event: events.NodeEvent, source: str) -> None:
    tag = getattr(event, "tag", None)
    if tag not in _PLAIN_TAGS:
        shown = tag.replace("tag:yaml.org,2002:", "!!") if isinstance(tag, str) else tag
        raise SpecError(f"{source}: the tag {shown} at {_where(event.start_mark)} is not accepted; a run "
                        "spec holds plain values (text, numbers, true/false, lists, mappings)",
                        hint="remove the tag and write the value out as plain text")


def check_structure(text: str, source: str, max_depth: int = MAX_DEPTH) -> None:
    """Nesting depth (at most ``max_depth``), tags and expanded node count, from the parser's events
    (no recursion, no objects)."""
    anchors: dict[str, int] = {}
    stack: list[tuple[str | None, int]] = []  # (anchor, nodes so far) of each open collection
    total = 0
    aliased = False  # only aliases multiply values: the message blames them only when there are some

    def add(count: int, event: events.Event) -> None:
        nonlocal total
        total += count
        if stack:
            anchor, nodes = stack[-1]
            stack[-1] = (anchor, nodes + count)
        if total > MAX_NODES:
            why = "; anchors and aliases multiply" if aliased else ""
            raise SpecError(f"{source}: the spec expands to more than {MAX_NODES:,} values (at "
                            f"{_where(event.start_mark)}{why})", hint=_FIX_ALIAS if aliased else _FIX_SIZE)

    for event in yaml.parse(text, Loader=_BASE):
        if isinstance(event, events.NodeEvent) and not isinstance(event, events.AliasEvent):
            _check_tag(event, source)
        if isinstance(event, events.CollectionStartEvent):
            if len(stack) >= max_depth:
                raise SpecError(f"{source}: maximum nesting depth ({MAX_DEPTH}) exceeded at "
                                f"{_where(event.start_mark)}", hint="a run spec nests a few levels only")
            stack.append((event.anchor, 1))
        elif isinstance(event, events.CollectionEndEvent):
            anchor, nodes = stack.pop()
            if anchor is not None:
                anchors[anchor] = nodes
            add(nodes, event)
        elif isinstance(event, events.ScalarEvent):
            if event.anchor is not None:
                anchors[event.anchor] = 1
            add(1, event)
        elif isinstance(event, events.AliasEvent):
            aliased = True
            add(anchors.get(event.anchor or "", 1), event)


class LimitedLoader(_BASE):  # type: ignore[misc,valid-type]
    """The safe loader, refusing duplicate keys and overlong integers."""

    source = "spec"

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """As SafeLoader's, but a key given twice is an error naming both lines."""
        seen: dict[Any, yaml.Node] = {}
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<:` merges are allowed to repeat keys they bring in
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: SafeLoader reports it below
            if first is not None:
                raise SpecError(f"{self.source}: key {key!r} appears twice, at "
                                f"{_where(first.start_mark)} and {_where(key_node.start_mark)}",
                                hint="keep one of them (YAML would silently use the last)")
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        """As SafeLoader's, for integers of at most :data:`MAX_INT_DIGITS` characters."""
        if len(node.value) > MAX_INT_DIGITS:
            raise SpecError(f"{self.source}: the integer at {_where(node.start_mark)} has "
                            f"{len(node.value):,} digits; at most {MAX_INT_DIGITS} are accepted",
                            hint="use a realistic number")
        return int(super().construct_yaml_int(node))


LimitedLoader.add_constructor("tag:yaml.org,2002:int", LimitedLoader.construct_yaml_int)


def load_limited(text: str, source: str, max_depth: int = MAX_DEPTH) -> Any:
    """``yaml.safe_load`` with every limit of this module (nesting at most ``max_depth`` levels);
    YAML errors propagate as yaml's."""
    check_size(len(text.encode("utf-8", errors="surrogatepass")), source)
    check_structure(text, source, max_depth)
    loader = LimitedLoader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
