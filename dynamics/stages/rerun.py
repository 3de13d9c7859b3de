"""Rerunning a run name with an edited spec: refuse, or (``--replace``) clear exactly the stale stages.

The run's recorded ``spec.yaml`` says which spec its artifacts were made for. Stages whose fingerprint
differs from the new spec's are stale; everything downstream of a change is stale too (fingerprints
chain). Embed and cluster artifacts are addressed by fingerprint, so a changed ``embed``/``cluster``
field points at new directories and nothing shared is deleted; the run's own scale, train and eval
outputs are deleted so that they are recomputed rather than resumed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import yaml

from dynamics import constants as C
from dynamics.constants import Stage
from dynamics.errors import DynamicsError, SpecError
from dynamics.spec.fingerprint import Change, describe, invalidated
from dynamics.spec.loader import resolved_dict, validate
from dynamics.spec.model import RunSpec
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths

# The run's own directories per stage (embed/cluster ones are fingerprint-addressed and never cleared).
OWN_DIRS: dict[Stage, tuple[str, ...]] = {
    Stage.SCALE: (C.DIR_SAMPLE,),
    Stage.TRAIN: (C.DIR_TRAIN,),
    Stage.EVAL: (C.DIR_EVAL,),
}


def recorded_changes(spec: RunSpec, paths: RunPaths, cfg: storage.StorageConfig,
                     stages: Iterable[Stage]) -> dict[Stage, list[Change]]:
    """Stale stages among ``stages`` (with their changed fields) against the run's recorded spec;
    empty for a new run or an unchanged spec."""
    if not storage.exists(paths.spec, cfg):
        return {}
    try:
        old = yaml.safe_load(storage.read_bytes(paths.spec, cfg))
    except yaml.YAMLError as exc:
        raise DynamicsError(f"{paths.spec} is not valid YAML: {exc}",
                            hint="delete the run's work directory, or give the run a new name") from exc
    wanted = set(stages)
    return {s: c for s, c in invalidated(_resolved(old), resolved_dict(spec)).items() if s in wanted}


def _resolved(old: object) -> dict:
    """The recorded spec with today's defaults filled in, so that a field added by a newer version of
    dynamics (at its default) is not taken for a change; as recorded when it no longer validates."""
    if not isinstance(old, dict):
        return {}
    try:
        return resolved_dict(validate(old, "recorded spec"))
    except SpecError:
        return old


def clear_stage(paths: RunPaths, stage: Stage, cfg: storage.StorageConfig) -> int:
    """Delete the run's own outputs of ``stage`` (markers first); returns how many objects."""
    uris = [u for d in OWN_DIRS.get(stage, ()) for u in storage.list_uris(f"{paths.root}/{d}", cfg)]
    # Markers go first: an interruption midway leaves the stage incomplete, never complete but partial.
    uris.sort(key=lambda u: not u.endswith(C.MARKER_SUFFIX))
    for uri in uris:
        storage.delete(uri, cfg)
    return len(uris)


def check_rerun(spec: RunSpec, paths: RunPaths, cfg: storage.StorageConfig, stages: Iterable[Stage],
                replace: bool, say: Callable[[str], None]) -> dict[Stage, list[Change]]:
    """Refuse a changed spec for an existing run, or with ``replace`` clear its stale stages."""
    changes = recorded_changes(spec, paths, cfg, stages)
    if not changes:
        return changes
    if not replace:
        raise DynamicsError(
            f"run '{spec.name}' already exists with a different spec: {describe(changes)}",
            hint="pass --replace to redo exactly those stages (the others are kept), or give the run a new "
            "name (--set name=NEW): embeddings and clusters with equal settings are reused", exit_code=2)
    for stage in changes:
        clear_stage(paths, stage, cfg)
    say(f"--replace: {describe(changes)}; redoing them")
    return changes
