"""Golden manifests: ``manifests/<example>.yaml`` is ``render()`` of ``examples/<example>.yaml``.

Regenerate with ``python -m dynamics.render.golden --update`` after an intended change to the renderer or
an example; a test re-renders and compares, and CI never regenerates.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dynamics.render import render
from dynamics.render.yamlio import dump_all
from dynamics.spec.loader import load_spec

ROOT = Path(__file__).resolve().parents[2]


def expected(example: Path) -> str:
    """The rendered manifests of one example spec."""
    header = f"# Rendered from examples/{example.name} by `python -m dynamics.render.golden --update`. Do not edit.\n"
    return header + dump_all(render(load_spec(example)))


def pairs(root: Path = ROOT) -> list[tuple[Path, Path]]:
    """(example spec, golden manifest) for every example."""
    return [(ex, root / "manifests" / ex.name) for ex in sorted((root / "examples").glob("*.yaml"))]


def main(argv: list[str] | None = None) -> int:
    """Check (default) or rewrite (--update) the golden manifests."""
    parser = argparse.ArgumentParser(prog="python -m dynamics.render.golden", description=__doc__)
    parser.add_argument("--update", action="store_true", help="rewrite manifests/ from examples/")
    args = parser.parse_args(argv)
    stale = []
    for example, golden in pairs():
        text = expected(example)
        if args.update:
            golden.parent.mkdir(exist_ok=True)
            golden.write_text(text, encoding="utf-8")
        elif not golden.exists() or golden.read_text(encoding="utf-8") != text:
            stale.append(golden)
    for path in stale:
        print(f"stale: {path.relative_to(ROOT)} (run: python -m dynamics.render.golden --update)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
