"""Inputs checked before any work (``dynamics-submit``, unless ``--offline``): the thin I/O part of
validation. A shard pattern that matches nothing or a missing class-names file would otherwise be
found only when its stage runs, hours into the run.

Cheap by design: the first and last shard of each pattern (one HEAD each, not a listing of 20k
shards), and each named file.
"""

from __future__ import annotations

from dynamics.errors import DynamicsError, StorageError
from dynamics.spec.model import RunSpec
from dynamics.stages.common import storage_config
from dynamics.storage import objects as storage
from dynamics.storage.pattern import expand


def _missing(uri: str, cfg: storage.StorageConfig) -> str | None:
    try:
        return None if storage.exists(uri, cfg) else "does not exist"
    except StorageError as exc:  # no bucket, no access: say so rather than "missing"
        return f"cannot be checked: {exc}"


def _pattern_problems(field: str, pattern: str, cfg: storage.StorageConfig) -> list[str]:
    urls = expand(pattern)
    ends = [urls[0]] if len(urls) == 1 else [urls[0], urls[-1]]
    out = []
    for uri in ends:
        why = _missing(uri, cfg)
        if why:
            out.append(f"{field}: shard {uri} {why}")
    return out


def input_problems(spec: RunSpec) -> list[str]:
    """Every input of ``spec`` that cannot be found, one line each (empty when all are there)."""
    cfg = storage_config(spec)
    out = _pattern_problems("data.shards", spec.data.shards, cfg)
    files = [("train.pretrained", spec.train.pretrained)]
    for i, ds in enumerate(spec.eval.datasets if spec.eval else []):
        out += _pattern_problems(f"eval.datasets[{i}].shards", ds.shards, cfg)
        if isinstance(ds.classnames, str) and ds.classnames != "imagenet":
            files.append((f"eval.datasets[{i}].classnames", ds.classnames))
        files.append((f"eval.datasets[{i}].classCounts", ds.class_counts))
    for field, uri in files:
        why = _missing(uri, cfg) if uri else None
        if why:
            out.append(f"{field}: {uri} {why}")
    return out


def check_inputs(spec: RunSpec) -> None:
    """Raise one error listing every missing input."""
    problems = input_problems(spec)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise DynamicsError(f"{len(problems)} input{'s' if len(problems) > 1 else ''} of run '{spec.name}' "
                            f"not found:\n{lines}",
                            hint="fix the paths in the spec (relative paths are from the current directory), "
                            "or pass --offline to skip these checks (e.g. data only the cluster can reach)",
                            exit_code=2)
