""""Did you mean": the closest names for a misspelt spec field or value, and the field an error points at. Pure."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from dynamics.spec.model import RunSpec
from dynamics.spec.similar import close_matches


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``Eval | None`` or ``list[EvalDataset]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _aliases(model: type[BaseModel]) -> dict[str, Any]:
    return {(f.alias or name): f.annotation for name, f in model.model_fields.items()}


def field_names_at(loc: tuple[Any, ...]) -> list[str]:
    """The field names valid where ``loc`` (a pydantic error location) points; [] when unknown."""
    model: type[BaseModel] | None = RunSpec
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if model is None:
            return []
        model = _model_in(_aliases(model).get(str(part)))
    return sorted(_aliases(model)) if model is not None else []


def did_you_mean(loc: tuple[Any, ...]) -> str | None:
    """``"did you mean 'alpha'?"`` for an unknown field at ``loc``, when a known one is close."""
    close = close_matches(str(loc[-1]), field_names_at(loc), n=2)
    return f"did you mean {' or '.join(repr(c) for c in close)}?" if close else None


def field_at(loc: tuple[Any, ...]) -> FieldInfo | None:
    """The spec field a pydantic error location points at (``('sample', 'budget')``); None when unknown."""
    model: type[BaseModel] | None = RunSpec
    found: FieldInfo | None = None
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None:
            return None
        fields = {(f.alias or name): f for name, f in model.model_fields.items()}
        found = fields.get(str(part))
        if found is None:
            return None
        model = _model_in(found.annotation)
    return found
