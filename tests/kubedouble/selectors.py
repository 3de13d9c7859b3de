"""Label and field selectors, as kube-apiserver parses them (test double).

Label selectors: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k`` (exists),
``!k`` (does not exist), comma-separated requirements ANDed together. Field selectors: ``path=v``,
``path==v``, ``path!=v`` on dotted paths (``metadata.name``, ``status.phase``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Op(StrEnum):
    """Selector operators."""

    EQ = "="
    NE = "!="
    IN = "in"
    NOTIN = "notin"
    EXISTS = "exists"
    NOT_EXISTS = "!"


class SelectorError(ValueError):
    """A selector string could not be parsed (the server answers 400 BadRequest)."""


@dataclass(frozen=True)
class Requirement:
    """One requirement of a selector."""

    key: str
    op: Op
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy this requirement."""
        present = self.key in labels
        value = labels.get(self.key)
        if self.op is Op.EXISTS:
            return present
        if self.op is Op.NOT_EXISTS:
            return not present
        if self.op in (Op.EQ, Op.IN):
            return present and value in self.values
        # != and notin also match objects that lack the key, as in Kubernetes.
        return not present or value not in self.values


_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\(([^)]*)\)\s*$")
_CMP_RE = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*([-A-Za-z0-9_.]*)\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    terms, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(char)
    terms.append("".join(current))
    return [t for t in terms if t.strip()]


def _parse_term(term: str) -> Requirement:
    if m := _SET_RE.match(term):
        values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
        return Requirement(m.group(1), Op.IN if m.group(2) == "in" else Op.NOTIN, values)
    if m := _CMP_RE.match(term):
        op = Op.NE if m.group(2) == "!=" else Op.EQ
        return Requirement(m.group(1), op, frozenset({m.group(3)}))
    if m := _EXISTS_RE.match(term):
        return Requirement(m.group(2), Op.NOT_EXISTS if m.group(1) else Op.EXISTS)
    raise SelectorError(f"unable to parse requirement: {term.strip()!r}")


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse a label selector; an empty or missing selector matches everything."""
    return [_parse_term(t) for t in _split_terms(text or "")]


def parse_field_selector(text: str | None) -> list[Requirement]:
    """Parse a field selector: only ``=``, ``==`` and ``!=`` are allowed, as in Kubernetes."""
    reqs = parse_label_selector(text)
    for req in reqs:
        if req.op not in (Op.EQ, Op.NE):
            raise SelectorError(f"invalid field selector operator in {req.key!r}")
    return reqs


def _field_value(obj: Mapping[str, Any], path: str) -> str | None:
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return None if node is None else str(node)


def object_filter(labels: list[Requirement], fields: list[Requirement]) -> Callable[[Mapping[str, Any]], bool]:
    """A predicate on whole objects combining label and field requirements."""

    def matches(obj: Mapping[str, Any]) -> bool:
        obj_labels = obj.get("metadata", {}).get("labels") or {}
        if not all(r.matches(obj_labels) for r in labels):
            return False
        for req in fields:
            value = _field_value(obj, req.key)
            equal = value is not None and value in req.values
            if equal != (req.op is Op.EQ):
                return False
        return True

    return matches
