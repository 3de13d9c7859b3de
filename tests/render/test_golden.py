"""manifests/ is the rendered output of examples/; regenerate with `python -m dynamics.render.golden --update`."""

from __future__ import annotations

import pytest

from dynamics.render.golden import expected, pairs

PAIRS = pairs()


def test_every_example_has_a_manifest() -> None:
    assert len(PAIRS) >= 2
    assert all(golden.exists() for _, golden in PAIRS)


@pytest.mark.parametrize(("example", "golden"), PAIRS, ids=lambda p: p.name)
def test_manifest_is_current(example, golden) -> None:
    assert golden.read_text(encoding="utf-8") == expected(example), (
        f"{golden} is stale: run `python -m dynamics.render.golden --update` and review the diff"
    )
