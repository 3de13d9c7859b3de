"""``dynamics export-model`` / ``export-checkpoint``: a run's model as open_clip loads it.

``export-model`` writes a folder:
it holds ``open_clip_config.json`` (the architecture at the last phase's resolution and the
run's context length) and ``open_clip_model.safetensors`` (the weights), which is what
``open_clip.create_model_and_transforms("local-dir:DIR")`` and ``open_clip.get_tokenizer("local-dir:DIR")``
read. It is written to a temporary folder beside DIR and renamed, so DIR is complete or absent.
``export-checkpoint`` writes one open_clip checkpoint file (``open_clip.load_checkpoint``) from any
training checkpoint. Both consolidate FSDP shards.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from dynamics import constants as C
from dynamics.constants import Stage
from dynamics.errors import DynamicsError
from dynamics.spec.model import RunSpec
from dynamics.stages.inputs import require_stage
from dynamics.stages.train import checkpoint as ckpt
from dynamics.stages.train.fsdp import consolidate
from dynamics.stages.train.model import open_clip_config
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths

log = logging.getLogger("dynamics.export")
WEIGHTS = "open_clip_model.safetensors"
OPEN_CLIP_KEYS = ("epoch", "name", "state_dict")


def _final_checkpoint(spec: RunSpec, paths: RunPaths, cfg: storage.StorageConfig) -> str:
    marker = require_stage(spec, Stage.TRAIN, [paths.train_marker], cfg)[0]
    final = marker.get("final_checkpoint")
    if not final:
        raise DynamicsError(f"{paths.train_marker} names no final checkpoint", hint="re-run the train stage")
    return str(final)


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def _as_umask_allows(folder: Path) -> None:
    """Give ``folder`` and its files the modes any new folder and file of the user gets (mkdtemp makes
    0700, and a model folder is often shared with teammates)."""
    mask = _umask()
    for f in folder.iterdir():
        f.chmod(0o666 & ~mask)
    folder.chmod(0o777 & ~mask)


def export_model(spec: RunSpec, paths: RunPaths, out_dir: Path, cfg: storage.StorageConfig) -> Path:
    """Write the final model of a finished run to ``out_dir`` (a new local folder); returns it."""
    if out_dir.exists() and any(out_dir.iterdir()):
        raise DynamicsError(f"{out_dir} exists and is not empty", hint="give a new folder", exit_code=2)
    uri = _final_checkpoint(spec, paths, cfg)
    state = {k.removeprefix("module."): v.contiguous() for k, v in open_clip_checkpoint(uri, cfg)["state_dict"].items()}
    # The config saved beside the checkpoints is what the weights were trained as; older runs lack it.
    config = (storage.read_json(paths.model_config, cfg) if storage.exists(paths.model_config, cfg)
              else open_clip_config(spec.train))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        (tmp / C.OPEN_CLIP_CONFIG).write_text(json.dumps(config, indent=2), encoding="utf-8")
        save_file(state, str(tmp / WEIGHTS), metadata={"checkpoint": uri, "run": spec.name})
        _as_umask_allows(tmp)
        if out_dir.exists():
            out_dir.rmdir()
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.debug("exported %s to %s", uri, out_dir)
    return out_dir


def open_clip_checkpoint(uri: str, cfg: storage.StorageConfig | None) -> dict[str, Any]:
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


def export_checkpoint(uri: str, output: str, cfg: storage.StorageConfig | None) -> dict[str, Any]:
    """Write the open_clip checkpoint of ``uri`` to ``output`` (local or s3://); returns it."""
    out = open_clip_checkpoint(uri, cfg)
    buf = io.BytesIO()
    torch.save(out, buf)
    storage.write_bytes(output, buf.getvalue(), cfg)
    return out
