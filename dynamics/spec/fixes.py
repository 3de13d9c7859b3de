"""The ``fix:`` line of a refused spec field: what the field would accept (range, choices, pattern). Pure.

Built from the pydantic error (its type and context) and the field's declared constraints, so that a
range error names the whole range (``0 < sample.budget <= 1``), not just the bound that was crossed.
"""

from __future__ import annotations

import re
from typing import Any

import annotated_types as at

from dynamics.spec.types import DNS_LABEL, QUANTITY

_RANGE_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")
_TYPE_FIXES = {
    "missing": "add this field",
    "extra_forbidden": "remove it, or check its spelling against `dynamics schema`",
    "int_parsing": "use a whole number",
    "int_from_float": "use a whole number",
    "int_type": "use a whole number",
    "float_parsing": "use a number",
    "float_type": "use a number",
    "bool_parsing": "use true or false",
    "bool_type": "use true or false",
    "string_type": "use a string (quote it)",
    "dict_type": "use a mapping (key: value lines)",
    "list_type": "use a list (- item lines, or [a, b])",
    "model_type": "use a mapping of this section's fields (`dynamics schema` lists them)",
    "model_attributes_type": "use a mapping of this section's fields (`dynamics schema` lists them)",
}
# Patterns a person reads better in words (with an example).
_PATTERN_WORDS = {
    DNS_LABEL.pattern: "lower-case letters, digits and '-', starting and ending with a letter or digit",
    QUANTITY.pattern: "a Kubernetes quantity such as '8', '500m', '64Gi' or '1.5'",
}
# Fields checked by their own validators (dynamics/spec/model.py, train.py, kube.py): what they accept.
_VALUE_FIXES = {
    "workdir": "use 's3://bucket/prefix' or a local path such as ./runs",
    "credentialsSecret": "use the name of an existing Secret: lower-case letters, digits, '-' and '.'",
    "shards": "use a shard pattern with brace ranges, e.g. s3://bucket/shards/{00000..00099}.tar",
    "templates": "use 'openai', 'simple', or a list of templates that each contain '{c}'",
    "scale": "use [min, max] with 0 < min <= max <= 1, e.g. [0.4, 1.0]",
    "modelConfig": "give an open_clip model config: an integer embed_dim and vision_cfg and text_cfg mappings",
    "phases": "give every phase its own name",
    "podLabels": "choose label keys outside app.kubernetes.io/, dynamics.io/ and batch.kubernetes.io/",
}
_NAME_WORDS = "lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63"


_OPS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_ERROR_BOUND = {"greater_than": "gt", "greater_than_equal": "ge", "less_than": "lt", "less_than_equal": "le"}
_FLIP = {"gt": "<", "ge": "<="}


def _bound_text(low: tuple[str, float] | None, high: tuple[str, float] | None, name: str) -> str:
    """``0 < budget <= 1``, ``k >= 2`` or ``beta1 < 1``."""
    if low is not None and high is not None:
        return f"{low[1]:g} {_FLIP[low[0]]} {name} {_OPS[high[0]]} {high[1]:g}"
    kind, value = low if low is not None else high  # type: ignore[misc]
    return f"{name} {_OPS[kind]} {value:g}"


def _range(err: dict[str, Any], metadata: list[Any], whole: bool, name: str) -> str:
    """``use a number with 0 < budget <= 1``: every bound the field declares (the error's own if none)."""
    low: tuple[str, float] | None = None
    high: tuple[str, float] | None = None
    for m in metadata:
        if isinstance(m, at.Gt):
            low = ("gt", float(m.gt))
        elif isinstance(m, at.Ge):
            low = ("ge", float(m.ge))
        elif isinstance(m, at.Lt):
            high = ("lt", float(m.lt))
        elif isinstance(m, at.Le):
            high = ("le", float(m.le))
    if low is None and high is None:  # constraints not found on the field: the error's own bound
        kind = _ERROR_BOUND[err["type"]]
        bound = (kind, float(err["ctx"][kind]))
        low, high = (bound, None) if kind in ("gt", "ge") else (None, bound)
    return f"use a {'whole number' if whole else 'number'} with {_bound_text(low, high, name)}"


def _lengths(metadata: list[Any], ctx: dict[str, Any]) -> tuple[int | None, int | None]:
    low = next((m.min_length for m in metadata if isinstance(m, at.MinLen)), ctx.get("min_length"))
    high = next((m.max_length for m in metadata if isinstance(m, at.MaxLen)), ctx.get("max_length"))
    return low, high


def _length_fix(err: dict[str, Any], metadata: list[Any], what: str) -> str:
    low, high = _lengths(metadata, err.get("ctx") or {})
    if low is not None and high is not None:
        return f"use {low} to {high} {what}"
    return f"use at least {low} {what}" if low is not None else f"use at most {high} {what}"


def _example(pattern: str, value: Any) -> str:
    """``, e.g. 'my-run'`` when lower-casing ``value`` and turning other characters into '-' matches."""
    if not isinstance(value, str):
        return ""
    guess = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-")
    return f", e.g. {guess!r}" if guess and guess != value and re.fullmatch(pattern, guess) else ""


def fix_for(err: dict[str, Any], path: str) -> str:
    """What the field at ``path`` would accept, for one pydantic error (``ValidationError.errors()`` item)."""
    from dynamics.spec.suggest import field_at  # walks the model; only when there is an error

    kind = err["type"]
    ctx = err.get("ctx") or {}
    field = field_at(tuple(err["loc"]))
    metadata = list(field.metadata) if field is not None else []
    name = str(err["loc"][-1]) if err["loc"] else "value"
    if kind in _RANGE_ERRORS:
        return _range(err, metadata, field is not None and field.annotation is int, name)
    if kind in ("literal_error", "enum"):
        return f"use {ctx['expected']} (case matters)"
    if kind == "string_pattern_mismatch":
        pattern = ctx["pattern"]
        words = _PATTERN_WORDS.get(pattern, f"a value matching the pattern {pattern}")
        high = _lengths(metadata, ctx)[1]
        return f"use {words}" + (f", at most {high} characters" if high else "") + _example(pattern, err["input"])
    if kind in ("string_too_short", "string_too_long"):
        return _length_fix(err, metadata, "characters")
    if kind in ("too_short", "too_long"):
        return _length_fix(err, metadata, "items")
    if kind in _TYPE_FIXES:
        return _TYPE_FIXES[kind]
    if kind == "value_error" and name == "name" and len(err["loc"]) == 1:
        return f"use {_NAME_WORDS}" + _example(DNS_LABEL.pattern, err["input"])
    if kind == "value_error" and name in _VALUE_FIXES:
        return _VALUE_FIXES[name]
    return f"change {path} as the message says (`dynamics schema` shows what it accepts)"
