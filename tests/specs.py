"""Small run specs for tests, built from the quickstart example so they stay valid as it evolves."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from dynamics.spec.loader import dump_spec, validate
from dynamics.spec.model import RunSpec

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def spec_dict(workdir: str, shards: str, approx: int = 100, **sections: Any) -> dict[str, Any]:
    """The quickstart spec pointed at ``workdir`` and ``shards``, with sections deep-merged in."""
    data = copy.deepcopy(QUICKSTART)
    data["storage"] = {"workdir": workdir}
    data["data"] = {"shards": shards, "approxSamples": approx}
    data.pop("eval", None)
    # Small enough for a handful of samples in one shard; sections can override.
    data["cluster"].update({"k": 4, "trainSamples": max(approx, 4)})
    data["train"]["procsPerNode"] = 1
    return _merge(data, sections)


def make_spec(workdir: str, shards: str, approx: int = 100, **sections: Any) -> RunSpec:
    """Validated :class:`RunSpec` (see :func:`spec_dict`)."""
    return validate(spec_dict(workdir, shards, approx, **sections))


def write_spec(path: Path, spec: RunSpec) -> Path:
    """Write the resolved spec where a stage command can read it."""
    path.write_text(dump_spec(spec), encoding="utf-8")
    return path
