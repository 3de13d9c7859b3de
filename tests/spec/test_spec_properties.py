"""Property-based: any spec, mutated or random, either renders validly or fails with a clean SpecError.

Example counts come from the hypothesis profile (tests/conftest.py): ``HYPOTHESIS_PROFILE=fuzz`` runs
thousands instead of the suite's 150.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st

from dynamics.errors import SpecError
from dynamics.render import render
from dynamics.spec.loader import validate
from tests.k8s import assert_restricted, pod_templates, validate_any

ROOT = Path(__file__).resolve().parents[2]
BASES = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "examples").glob("*.yaml"))]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
    st.text(max_size=30), st.sampled_from(["", "0", "-1", "abc", "Gi", "s3://", "{0..0}", "pytorchjob",
                                           "indexed-job", "repeat", "64Gi", "1e400"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=10), inner, max_size=3)),
                      max_leaves=6)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _set(doc: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


def _check(data: Any) -> None:
    try:
        spec = validate(data, "spec.yaml")
    except SpecError as exc:
        msg = str(exc)
        assert msg and "Traceback" not in msg
        assert exc.exit_code == 2
        return
    for obj in render(spec):
        validate_any(obj)
        for template in pod_templates(obj):
            if not template["spec"].get("hostNetwork"):
                assert_restricted(template)


@given(base=st.sampled_from(BASES), data=st.data())
def test_mutated_specs(base: dict, data: st.DataObject) -> None:
    doc = copy.deepcopy(base)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(doc)))
        mutation = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if mutation == "replace":
            doc = _set(doc, path, data.draw(values))
        elif mutation == "delete" and path:
            parent = doc
            for key in path[:-1]:
                parent = parent[key]
            del parent[path[-1]]
        elif isinstance(doc, dict):
            doc[data.draw(st.text(min_size=1, max_size=8))] = data.draw(values)
        if not isinstance(doc, dict | list):
            break
    _check(doc)


@given(doc=values)
def test_random_documents(doc: Any) -> None:
    _check(doc)
