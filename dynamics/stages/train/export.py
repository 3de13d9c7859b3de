"""One open_clip checkpoint from a training checkpoint, sharded (FSDP) or not."""

from __future__ import annotations

import io
from typing import Any

import torch

from dynamics.errors import DynamicsError
from dynamics.stages.train import checkpoint as ckpt
from dynamics.stages.train.fsdp import consolidate
from dynamics.storage import objects as storage
from dynamics.storage.objects import StorageConfig

OPEN_CLIP_KEYS = ("epoch", "name", "state_dict")


def open_clip_checkpoint(uri: str, cfg: StorageConfig | None) -> dict[str, Any]:
    """``{"epoch", "name", "state_dict"}`` of the training checkpoint ``uri`` (shards consolidated)."""
    if not storage.exists(uri, cfg):
        raise DynamicsError(f"checkpoint {uri} does not exist",
                            hint="give a .pt file under <run>/train/checkpoints/", exit_code=2)
    payload = ckpt.load(uri, cfg)
    if payload.get("format") != ckpt.FORMAT:
        raise DynamicsError(f"{uri} is not a dynamics training checkpoint",
                            hint="give a .pt file under <run>/train/checkpoints/", exit_code=2)
    state = consolidate(uri, cfg) if payload.get("sharded") else payload["state_dict"]
    return {"epoch": payload["epoch"], "name": payload["name"], "state_dict": state}


def export_checkpoint(uri: str, output: str, cfg: StorageConfig | None) -> dict[str, Any]:
    """Write the open_clip checkpoint of ``uri`` to ``output`` (local or s3://); returns it."""
    out = open_clip_checkpoint(uri, cfg)
    buf = io.BytesIO()
    torch.save(out, buf)
    storage.write_bytes(output, buf.getvalue(), cfg)
    return out
