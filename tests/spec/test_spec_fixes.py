"""Every validation error the run spec's schema can raise says what the field would accept (its ``fix:``)."""

from __future__ import annotations

import copy
import enum
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import annotated_types as at
import pytest
import yaml
from pydantic import BaseModel

from dynamics.errors import SpecError
from dynamics.spec.loader import validate
from dynamics.spec.model import RunSpec
from dynamics.spec.similar import close_matches

EXAMPLE = Path(__file__).parents[2] / "examples" / "quickstart.yaml"
GENERIC = "as the message says"
# Minimal valid items for lists of models that the example leaves empty.
LIST_ITEMS: dict[str, dict[str, Any]] = {"Toleration": {}, "EnvVar": {"name": "A", "value": "b"}}


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _models(a)]


def _choices(annotation: Any) -> list[str]:
    if typing.get_origin(annotation) is typing.Literal:
        return [str(a) for a in typing.get_args(annotation)]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [str(m.value) for m in annotation]
    return [c for a in typing.get_args(annotation) for c in _choices(a)]


def _is_list(annotation: Any) -> bool:
    return typing.get_origin(annotation) is list or any(_is_list(a) for a in typing.get_args(annotation))


def _bad_values(annotation: Any, metadata: list[Any]) -> Iterator[tuple[str, Any, list[str]]]:
    """(constraint, a value that breaks it, words the fix must contain) for each constraint of a field."""
    number = 1 if annotation is int or int in typing.get_args(annotation) else 0.5
    for m in metadata:
        if isinstance(m, at.Gt | at.Ge):
            bound = m.gt if isinstance(m, at.Gt) else m.ge
            yield "lower bound", bound - number, [f"{bound:g}"]
        elif isinstance(m, at.Lt | at.Le):
            bound = m.lt if isinstance(m, at.Lt) else m.le
            yield "upper bound", bound + number, [f"{bound:g}"]
        elif isinstance(m, at.MaxLen):
            too_long: Any = ["x"] * (m.max_length + 1) if _is_list(annotation) else "a" * (m.max_length + 1)
            yield "max length", too_long, [str(m.max_length)]
        elif isinstance(m, at.MinLen):
            yield "min length", [] if _is_list(annotation) else "", [str(m.min_length)]
        elif getattr(m, "pattern", None):
            yield "pattern", "Bad Value!", ["use "]
    if choices := _choices(annotation):
        yield "choices", "no-such-choice", [repr(c) for c in choices]


def _constrained_fields() -> Iterator[tuple[tuple[Any, ...], Any, list[Any], str]]:
    """(loc, annotation, metadata, owning model name) of every field reachable from RunSpec."""
    def walk(model: type[BaseModel], loc: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Any, list[Any], str]]:
        for name, f in model.model_fields.items():
            here = (*loc, f.alias or name)
            yield here, f.annotation, list(f.metadata), model.__name__
            for sub in _models(f.annotation):
                yield from walk(sub, (*here, 0) if _is_list(f.annotation) else here)
    yield from walk(RunSpec, ())


def _set(data: dict[str, Any], loc: tuple[Any, ...], value: Any, owners: dict[tuple[Any, ...], str]) -> None:
    node: Any = data
    for i, part in enumerate(loc[:-1]):
        nxt = loc[i + 1]
        if isinstance(part, int):
            if not node:
                node.append(copy.deepcopy(LIST_ITEMS.get(owners.get(loc[: i + 1], ""), {})))
            node = node[part]
            continue
        if node.get(part) is None:
            node[part] = [] if isinstance(nxt, int) else {}
        node = node[part]
    node[loc[-1]] = value


def _path(loc: tuple[Any, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))


def _list_items() -> dict[tuple[Any, ...], str]:
    """Model name of the items of every list of models, by the first item's loc."""
    owners: dict[tuple[Any, ...], str] = {}

    def walk(model: type[BaseModel], loc: tuple[Any, ...]) -> None:
        for name, f in model.model_fields.items():
            here = (*loc, f.alias or name)
            for sub in _models(f.annotation):
                if _is_list(f.annotation):
                    owners[(*here, 0)] = sub.__name__
                walk(sub, (*here, 0) if _is_list(f.annotation) else here)
    walk(RunSpec, ())
    return owners


def _cases() -> list[tuple[str, tuple[Any, ...], Any, list[str], dict[tuple[Any, ...], str]]]:
    owners = _list_items()
    return [(f"{_path(loc)}:{constraint}", loc, value, words, owners)
            for loc, annotation, metadata, _ in _constrained_fields()
            for constraint, value, words in _bad_values(annotation, metadata)]


CASES = _cases()


def test_the_walk_reaches_every_kind_of_constraint() -> None:
    kinds = {case[0].rsplit(":", 1)[1] for case in CASES}
    assert kinds == {"lower bound", "upper bound", "max length", "min length", "pattern", "choices"}
    assert len(CASES) > 60  # the spec has dozens of constrained fields


@pytest.mark.parametrize(("case", "loc", "value", "words", "owners"), CASES, ids=[c[0] for c in CASES])
def test_every_refused_field_says_what_it_accepts(case: str, loc: tuple[Any, ...], value: Any, words: list[str],
                                                   owners: dict[tuple[Any, ...], str]) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    _set(data, loc, value, owners)
    with pytest.raises(SpecError) as info:
        validate(data, "spec.yaml")
    lines = str(info.value).splitlines()
    path = _path(loc)
    at_field = [i for i, line in enumerate(lines) if line.startswith(f"  - {path}: ")]
    assert at_field, f"{case}: no error at {path}:\n{info.value}"
    fix = lines[at_field[0] + 1]
    assert fix.startswith("      fix: ") and GENERIC not in fix, f"{case}: {fix}"
    assert all(w in fix for w in words), f"{case}: {fix} lacks {words}"


def test_the_four_reported_errors(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["name"] = "My_Run"
    data["sample"].update(budget=-0.5, alpha=5, mode="repeatt")
    with pytest.raises(SpecError) as info:
        validate(data, "spec.yaml")
    msg = str(info.value)
    assert "fix: use a number with 0 < budget <= 1" in msg
    assert "fix: use a number with 0 <= alpha <= 1" in msg
    assert "fix: use 'cap' or 'repeat'" in msg
    assert "e.g. 'my-run'" in msg
    assert msg.count("fix: ") == 4


def test_suggestions_ignore_case() -> None:
    assert close_matches("vit-b-16", ["ViT-S-16", "ViT-M-16", "ViT-L-16", "ViT-B-16"])[0] == "ViT-B-16"
    assert close_matches("ALPHA", ["alpha", "budget"]) == ["alpha"]
    from dynamics.spec.registry import model_names, unknown_model

    if model_names() is None:
        pytest.skip("open_clip is not installed: its registry cannot be read")
    assert "did you mean 'ViT-B-16'" in (unknown_model("vit-b-16") or "")


# Every field with a validator of its own, and a value it refuses.
VALIDATED = [
    (("name",), "My_Run", "e.g. 'my-run'"),
    (("storage", "workdir"), "gs://bucket/x", "s3://bucket/prefix"),
    (("storage", "credentialsSecret"), "Bad_Secret", "name of an existing Secret"),
    (("data", "shards"), "s3://b/{0..3.tar", "brace ranges"),
    (("eval", "datasets", 0, "shards"), "s3://b/{0..3.tar", "brace ranges"),
    (("eval", "datasets", 0, "templates"), "fancy", "'openai', 'simple'"),
    (("train", "augmentation", "scale"), [0.9, 0.2], "0 < min <= max <= 1"),
    (("train", "modelConfig"), {"embed_dim": 8}, "vision_cfg and text_cfg"),
    (("kubernetes", "podLabels"), {"dynamics.io/run": "x"}, "outside app.kubernetes.io/"),
]


@pytest.mark.parametrize(("loc", "value", "words"), VALIDATED, ids=[_path(v[0]) for v in VALIDATED])
def test_fields_with_their_own_validators_say_what_they_accept(loc: tuple[Any, ...], value: Any, words: str) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    _set(data, loc, value, _list_items())
    if loc[-1] == "modelConfig":
        data["train"].pop("model", None)
    with pytest.raises(SpecError) as info:
        validate(data, "spec.yaml")
    lines = str(info.value).splitlines()
    at_field = [i for i, line in enumerate(lines) if line.startswith(f"  - {_path(loc)}: ")]
    assert at_field, str(info.value)
    fix = lines[at_field[0] + 1]
    assert fix.startswith("      fix: ") and words in fix and GENERIC not in fix, fix


def test_duplicate_phase_names_say_what_to_do() -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["train"]["phases"].append(dict(data["train"]["phases"][0]))
    with pytest.raises(SpecError) as info:
        validate(data, "spec.yaml")
    assert "fix: give every phase its own name" in str(info.value)
