"""Reading a previous stage's outputs, with a clear error when that stage is not complete."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq

from dynamics import constants as C
from dynamics.constants import Stage
from dynamics.errors import DynamicsError
from dynamics.spec.checks import embed_parts
from dynamics.spec.fingerprint import stage_fingerprint
from dynamics.spec.model import RunSpec
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths


def already_done(uri: str, spec: RunSpec, stage: Stage, cfg: storage.StorageConfig) -> bool:
    """Whether ``stage``'s marker ``uri`` exists for this very spec; a marker made for another spec is an error
    (its outputs must not be mixed with new ones, nor silently reused)."""
    payload = storage.read_marker(uri, cfg)
    if payload is None:
        return False
    if payload.get(C.MARKER_FINGERPRINT) != stage_fingerprint(spec, stage):
        raise DynamicsError(f"{uri} was written for a different spec than this run's (stage {stage.value})",
                            hint="rerun with `dynamics-submit SPEC --replace` to redo the stale stages, "
                            "or give the run a new name", exit_code=2)
    return True


def marker(spec: RunSpec, stage: Stage, **payload: object) -> dict[str, object]:
    """A completion marker's payload: ``payload`` plus the fingerprint of the spec it was made for."""
    return {C.MARKER_FINGERPRINT: stage_fingerprint(spec, stage), **payload}


def require(markers: list[str], stage: str, cfg: storage.StorageConfig) -> list[dict]:
    """Payloads of ``markers``; a missing one means ``stage`` has not finished: say which and what to do."""
    payloads, missing = [], []
    for uri in markers:
        payload = storage.read_marker(uri, cfg)
        if payload is None:
            missing.append(uri)
        else:
            payloads.append(payload)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DynamicsError(f"the {stage} stage is not complete: missing {shown}",
                            hint=f"run (or finish) the {stage} stage first", exit_code=2)
    return payloads


def require_stage(spec: RunSpec, stage: Stage, markers: list[str], cfg: storage.StorageConfig) -> list[dict]:
    """:func:`require`, and every marker made for this spec: inputs are verified by fingerprint, never
    taken on their location alone."""
    payloads = require(markers, stage.value, cfg)
    want = stage_fingerprint(spec, stage)
    stale = [uri for uri, p in zip(markers, payloads, strict=True) if p.get(C.MARKER_FINGERPRINT) != want]
    if stale:
        raise DynamicsError(f"the {stage.value} outputs {stale[0]} were made for a different spec than this run's",
                            hint="rerun with `dynamics-submit SPEC --replace`, or give the run a new name",
                            exit_code=2)
    return payloads


def embed_part_rows(spec: RunSpec, paths: RunPaths, cfg: storage.StorageConfig) -> list[int]:
    """Rows per embed part, from the embed markers (all must exist)."""
    markers = [paths.embed_marker(i) for i in range(embed_parts(spec))]
    return [int(p["rows"]) for p in require_stage(spec, Stage.EMBED, markers, cfg)]


def read_vectors(paths: RunPaths, part: int, cfg: storage.StorageConfig) -> np.ndarray:
    """Embeddings of one part as float32 (stored as float16)."""
    return storage.read_npy(paths.embed_vectors(part), cfg).astype(np.float32)


def read_keys(paths: RunPaths, part: int, cfg: storage.StorageConfig) -> tuple[np.ndarray, list[str]]:
    """(shard index per row, __key__ per row) of one embed part."""
    table = pq.read_table(io.BytesIO(storage.read_bytes(paths.embed_keys(part), cfg)),
                          columns=["shard_index", "key"])
    return table.column("shard_index").to_numpy().astype(np.int64), table.column("key").to_pylist()
