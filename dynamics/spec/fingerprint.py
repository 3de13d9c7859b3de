"""Stage fingerprints: which spec a stage's artifacts were made for. Pure.

A stage's fingerprint hashes exactly the spec fields that determine its output (not scheduling
settings such as parallelism, resources or log intervals) together with its input stages'
fingerprints, so a change upstream changes every fingerprint downstream. Completion markers record
the fingerprint; a rerun compares them to refuse (or, with ``--replace``, redo) stale stages.

Embed and cluster artifacts are addressed by fingerprint (``<workdir>/_shared/embed-<fp>/``,
``<workdir>/_shared/cluster-<fp>/``): two runs whose embed and cluster settings are equal share them,
which is what makes a sweep over ``sample``/``train`` settings cheap.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from dynamics import constants as C
from dynamics.constants import Stage
from dynamics.spec.loader import resolved_dict
from dynamics.spec.model import RunSpec
from dynamics.storage.layout import RunPaths, join

# Bump when a stage's output changes for the same spec (a new algorithm), so old artifacts are not reused.
FINGERPRINT_VERSION = 1
SHORT = 16  # hex digits of a fingerprint in directory names (64 bits: no accidental collisions)

# Spec fields (camelCase paths, as in the YAML) each stage's output depends on; a section means all of it.
STAGE_FIELDS: dict[Stage, tuple[str, ...]] = {
    Stage.EMBED: ("data.shards", "embed.backend", "embed.model", "embed.pixelsSize", "embed.shardsPerPart",
                  "embed.reducedShards", "embed.reducedShortSide"),
    Stage.CLUSTER_FIT: ("cluster.k", "cluster.iterations", "cluster.trainSamples",
                        "cluster.maxPointsPerCentroid", "cluster.threshold", "cluster.seed",
                        "cluster.whiten", "cluster.whitenDim"),
    Stage.ASSIGN: (),
    Stage.SCALE: ("sample",),
    Stage.TRAIN: ("train", "data.approxSamples"),
    Stage.EVAL: ("eval.datasets",),
}
# Parts of the sections above that change how a stage runs, never what it produces.
IGNORED: frozenset[str] = frozenset({
    "train.resources", "train.shmSize", "train.hostNetwork", "train.extraResources", "train.workers",
    "train.logEvery", "train.checkpointEvery", "train.launcher", "train.keepLast", "train.wandb", "train.evalEvery",
    "train.backoffLimit", "train.activeDeadlineSeconds", "train.spreadNodes", "train.gangScheduler",
})
UPSTREAM: dict[Stage, Stage | None] = {
    Stage.EMBED: None, Stage.CLUSTER_FIT: Stage.EMBED, Stage.ASSIGN: Stage.CLUSTER_FIT,
    Stage.SCALE: Stage.ASSIGN, Stage.TRAIN: Stage.SCALE, Stage.EVAL: Stage.TRAIN,
}


@dataclass(frozen=True)
class Change:
    """One spec field whose value differs between two specs."""

    path: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.path} ({_show(self.old)} -> {_show(self.new)})"


def _show(value: Any) -> str:
    text = json.dumps(value) if value is not None else "unset"
    return text if len(text) <= 40 else text[:37] + "..."


def _lookup(data: Any, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _leaves(value: Any, prefix: str) -> dict[str, Any]:
    """Dotted path -> leaf value, without the ignored paths."""
    if prefix in IGNORED:
        return {}
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_leaves(sub, f"{prefix}.{key}"))
        return out
    return {prefix: value}


def stage_fields(data: dict[str, Any], stage: Stage) -> dict[str, Any]:
    """The leaf fields of a resolved spec (``resolved_dict``) that ``stage`` itself reads."""
    out: dict[str, Any] = {}
    for path in STAGE_FIELDS[stage]:
        out.update(_leaves(_lookup(data, path), path))
    return out


def fingerprints_of(data: dict[str, Any]) -> dict[Stage, str]:
    """Every stage's fingerprint (sha256 hex) for a resolved spec given as plain data."""
    out: dict[Stage, str] = {}
    for stage in C.PIPELINE:
        upstream = UPSTREAM[stage]
        body = {"v": FINGERPRINT_VERSION, "stage": stage.value, "fields": stage_fields(data, stage),
                "input": out[upstream] if upstream else None}
        out[stage] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return out


def fingerprints(spec: RunSpec) -> dict[Stage, str]:
    """Every stage's fingerprint for ``spec``."""
    return fingerprints_of(resolved_dict(spec))


def stage_fingerprint(spec: RunSpec, stage: Stage) -> str:
    """The fingerprint ``stage``'s completion markers must carry for ``spec``."""
    return fingerprints(spec)[stage]


def invalidated(old: dict[str, Any], new: dict[str, Any]) -> dict[Stage, list[Change]]:
    """Stages whose fingerprint differs between two resolved specs, in pipeline order, each with the
    changes of its own fields (empty for a stage invalidated only by an upstream change)."""
    old_fp, new_fp = fingerprints_of(old), fingerprints_of(new)
    out: dict[Stage, list[Change]] = {}
    for stage in C.PIPELINE:
        if old_fp[stage] == new_fp[stage]:
            continue
        before, after = stage_fields(old, stage), stage_fields(new, stage)
        out[stage] = [Change(p, before.get(p), after.get(p)) for p in sorted(set(before) | set(after))
                      if before.get(p) != after.get(p)]
    return out


def describe(changes: dict[Stage, list[Change]]) -> str:
    """One line naming the changed fields and the stages they invalidate."""
    fields = [str(c) for stage_changes in changes.values() for c in stage_changes]
    stages = ", ".join(s.value for s in changes)
    return f"changed {'; '.join(fields) or 'inputs'}: invalidates {stages}"


def run_paths(spec: RunSpec) -> RunPaths:
    """Artifact locations of ``spec``'s run, embed and cluster artifacts addressed by fingerprint."""
    fp = fingerprints(spec)
    shared = join(spec.storage.workdir, C.DIR_SHARED)
    return RunPaths(root=join(spec.storage.workdir, spec.name),
                    embed_root=join(shared, f"embed-{fp[Stage.EMBED][:SHORT]}"),
                    cluster_root=join(shared, f"cluster-{fp[Stage.CLUSTER_FIT][:SHORT]}"))
