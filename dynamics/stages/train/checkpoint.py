"""Training checkpoints: open_clip's layout plus what an exact resume needs.

A checkpoint is one file ``<run>/train/checkpoints/phaseNN-<name>-stepNNNNNNNNN.pt`` holding
open_clip's keys (``epoch``, ``name``, ``state_dict`` without ``module.`` prefixes, ``optimizer``,
``scaler``), so ``open_clip.load_checkpoint(model, path)`` loads it, and ours: phase index and name,
step in phase, sampler epoch, every rank's data-reader cursors and RNG states. Everything in it loads
with ``torch.load(weights_only=True)``.

Files are written atomically (:func:`dynamics.storage.objects.write_bytes`), so every listed checkpoint is
complete; a file that still fails to load is skipped in favour of the one before it. With
``train.strategy: fsdp`` a mid-phase checkpoint keeps model and optimizer state in ``<name>.dcp/``
(``sharded: true``, see :mod:`dynamics.stages.train.fsdp`); ``dynamics export-model`` consolidates it.
"""

from __future__ import annotations

import io
import logging
import pickle
import re
import sys
import zipfile
from dataclasses import dataclass
from typing import Any

import torch

from dynamics.stages.train.fsdp import delete_shards
from dynamics.stages.train.plan import PhasePlan
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths, join
from dynamics.storage.objects import StorageConfig

log = logging.getLogger(__name__)

FORMAT = "dynamics-train-v1"
KEEP_LAST = 2  # mid-phase checkpoints kept besides every phase's final one
_NAME = re.compile(r"phase(\d{2})-([a-z0-9-]+)-step(\d{9})\.pt$")
_LOAD_ERRORS = (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError)


@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint file and where it stands in the run."""

    phase: int
    phase_name: str
    step: int
    uri: str


def checkpoint_uri(paths: RunPaths, plan: PhasePlan, step: int) -> str:
    """URI of the checkpoint taken after ``step`` steps of phase ``plan``."""
    return join(paths.checkpoints_dir(), f"phase{plan.index:02d}-{plan.name}-step{step:09d}.pt")


def list_checkpoints(paths: RunPaths, cfg: StorageConfig | None) -> list[CheckpointRef]:
    """The run's checkpoints, oldest first (by phase, then step)."""
    refs = []
    for uri in storage.list_uris(paths.checkpoints_dir(), cfg):
        match = _NAME.search(uri)
        if match:
            refs.append(CheckpointRef(int(match.group(1)), match.group(2), int(match.group(3)), uri))
    return sorted(refs, key=lambda r: (r.phase, r.step))


def canonical(obj: Any) -> Any:
    """``obj`` with every string interned, containers rebuilt (tensors shared, not copied).

    pickle writes a repeated object as a back-reference, and decides by identity: a resumed run's
    optimizer state, loaded from a checkpoint, holds its own copies of strings such as 'step' that an
    uninterrupted run shares with the payload's keys, so the two files would differ in bytes while
    equal in content. Interned, equal strings are one object in every run.
    """
    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, dict):
        out = type(obj)((canonical(k), canonical(v)) for k, v in obj.items())
        meta = getattr(obj, "_metadata", None)  # state_dict versions (torch.nn.Module.state_dict)
        if meta is not None:
            out._metadata = canonical(meta)  # type: ignore[attr-defined]
        return out
    if isinstance(obj, list):
        return [canonical(v) for v in obj]
    if isinstance(obj, tuple) and type(obj) is tuple:
        return tuple(canonical(v) for v in obj)
    return obj


def save(uri: str, payload: dict[str, Any], cfg: StorageConfig | None) -> None:
    """Serialise ``payload`` (in :func:`canonical` form: equal content, equal bytes) and write it atomically."""
    buf = io.BytesIO()
    torch.save(canonical(payload), buf)
    storage.write_bytes(uri, buf.getvalue(), cfg)


def load(uri: str, cfg: StorageConfig | None) -> dict[str, Any]:
    """Load a checkpoint onto the CPU (tensors and plain containers only)."""
    data = storage.read_bytes(uri, cfg)
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def load_latest(paths: RunPaths, cfg: StorageConfig | None) -> tuple[CheckpointRef, dict[str, Any]] | None:
    """The newest checkpoint of this run that loads, or None when there is none."""
    for ref in reversed(list_checkpoints(paths, cfg)):
        try:
            payload = load(ref.uri, cfg)
        except _LOAD_ERRORS as exc:
            log.warning("skipping unreadable checkpoint %s: %s", ref.uri, exc)
            continue
        if payload.get("format") != FORMAT:
            log.warning("skipping %s: not a dynamics training checkpoint", ref.uri)
            continue
        return ref, payload
    return None


def prune(paths: RunPaths, cfg: StorageConfig | None, plans: list[PhasePlan],
          keep_last: int = KEEP_LAST) -> None:
    """Delete mid-phase checkpoints beyond the newest ``keep_last``; phase finals are always kept.

    A sharded (FSDP) checkpoint's ``.pt`` goes first, so a half-deleted one is never listed.
    """
    finals = {(p.index, p.steps) for p in plans}
    middle = [r for r in list_checkpoints(paths, cfg) if (r.phase, r.step) not in finals]
    for ref in middle[:-keep_last] if keep_last else middle:
        storage.delete(ref.uri, cfg)
        delete_shards(ref.uri, cfg)
