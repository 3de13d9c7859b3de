"""Which stages of a run are complete, read from the completion markers in the work directory.

Markers are written last by every stage, so "all markers of a stage exist" means its outputs are
complete. ``--local`` uses this to skip finished stages; ``dynamics status`` to show progress.
"""

from __future__ import annotations

from dataclasses import dataclass

from dynamics import constants as C
from dynamics.constants import Stage
from dynamics.spec.checks import embed_parts
from dynamics.spec.fingerprint import stage_fingerprint
from dynamics.spec.model import RunSpec
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths


def stage_markers(spec: RunSpec, paths: RunPaths, stage: Stage) -> list[str]:
    """Every completion marker ``stage`` writes (one per part for the indexed stages). Pure."""
    parts = range(embed_parts(spec))
    match stage:
        case Stage.EMBED:
            return [paths.embed_marker(i) for i in parts]
        case Stage.CLUSTER_FIT:
            return [paths.cluster_marker]
        case Stage.ASSIGN:
            return [paths.assign_marker(i) for i in parts]
        case Stage.SCALE:
            return [paths.scale_marker]
        case Stage.TRAIN:
            return [paths.train_marker]
        case Stage.EVAL:
            return [paths.eval_marker]


@dataclass(frozen=True)
class StageProgress:
    """Markers present out of expected for one stage."""

    stage: Stage
    done: int
    total: int

    @property
    def complete(self) -> bool:
        """All markers are present."""
        return self.done == self.total


def _parent(uri: str) -> str:
    return uri.rsplit("/", 1)[0]


def stage_progress(spec: RunSpec, paths: RunPaths, stage: Stage,
                   cfg: storage.StorageConfig | None = None) -> StageProgress:
    """Count the stage's markers with one listing per directory (not one request per part)."""
    markers = stage_markers(spec, paths, stage)
    present: set[str] = set()
    for directory in sorted({_parent(m) for m in markers}):
        present.update(storage.list_uris(directory, cfg))
    return StageProgress(stage, sum(m in present for m in markers), len(markers))


def stage_complete(spec: RunSpec, paths: RunPaths, stage: Stage, cfg: storage.StorageConfig | None = None) -> bool:
    """All of ``stage``'s markers exist and were written for this spec (fingerprints match), so its
    outputs can be used as they are: verified by fingerprint, never by location alone."""
    if not stage_progress(spec, paths, stage, cfg).complete:
        return False
    want = stage_fingerprint(spec, stage)
    return all((storage.read_marker(m, cfg) or {}).get(C.MARKER_FINGERPRINT) == want
               for m in stage_markers(spec, paths, stage))
