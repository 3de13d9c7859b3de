"""The FSDP2 strategy: sharded model and optimizer, sharded checkpoints, and their consolidation.

With ``train.strategy: fsdp`` every transformer block, then the whole model, is wrapped with
``torch.distributed.fsdp.fully_shard`` over all processes. A mid-phase checkpoint is then a
``torch.distributed.checkpoint`` (DCP) directory ``<checkpoint>.dcp/`` (one file per rank plus
``.metadata``, written by each rank to a local staging directory and uploaded) beside the usual
``<checkpoint>.pt``, which holds everything else and is written last, by rank 0, once every rank's
files are in place: a listed ``.pt`` always has its shards. A phase's final checkpoint gathers the
full weights instead, so it is an ordinary open_clip checkpoint. :func:`consolidate` turns a sharded
checkpoint into one open_clip ``state_dict`` without any process group.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any

import torch

from dynamics.storage import objects as storage
from dynamics.storage.layout import join
from dynamics.storage.objects import StorageConfig

SHARD_SUFFIX = ".dcp"
_BLOCKS = ("ResidualAttentionBlock", "CustomResidualAttentionBlock")
# fully_shard cannot shard 0-d parameters: while sharded they are 1-element vectors (the losses
# broadcast them alike); every full state dict handed out has open_clip's scalar shape again.
_SCALARS = ("logit_scale", "logit_bias")


def shard_dir(checkpoint_uri: str) -> str:
    """Where the DCP shards of the checkpoint ``<name>.pt`` live."""
    return checkpoint_uri.removesuffix(".pt") + SHARD_SUFFIX


def shard_model(model: torch.nn.Module, world_size: int, device: torch.device) -> torch.nn.Module:
    """Apply FSDP2 in place: each transformer block is a unit (its parameters gathered just in time)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    for name in _SCALARS:
        param = getattr(model, name, None)
        if isinstance(param, torch.nn.Parameter) and param.ndim == 0:
            setattr(model, name, torch.nn.Parameter(param.detach().reshape(1), requires_grad=param.requires_grad))
    mesh = init_device_mesh(device.type, (world_size,))
    for module in list(model.modules()):
        if type(module).__name__ in _BLOCKS:
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded weights on every rank, on the CPU (a collective: every rank must call it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    return _open_clip_shapes({k: v.detach().cpu().clone() for k, v in full.items()})


def _open_clip_shapes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.reshape(()) if k in _SCALARS and v.ndim == 1 else v) for k, v in state.items()}


def _upload_dir(local: str, uri: str, cfg: StorageConfig | None) -> None:
    for name in sorted(os.listdir(local)):
        storage.upload_file(os.path.join(local, name), join(uri, name), cfg)


def _download_dir(uri: str, local: str, cfg: StorageConfig | None) -> None:
    for src in storage.list_uris(uri, cfg):
        storage.download_file(src, os.path.join(local, src.rstrip("/").rsplit("/", 1)[-1]), cfg)


def save_sharded(checkpoint_uri: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 cfg: StorageConfig | None) -> None:
    """Every rank writes its shards of model and optimizer state to ``shard_dir(checkpoint_uri)``."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    with tempfile.TemporaryDirectory(prefix="dynamics-dcp-") as tmp:
        dcp.save({"model": model_sd, "optimizer": optim_sd}, checkpoint_id=tmp)
        _upload_dir(tmp, shard_dir(checkpoint_uri), cfg)


def load_sharded(checkpoint_uri: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 cfg: StorageConfig | None) -> None:
    """Load a sharded checkpoint into the (already sharded) model and its optimizer, on every rank."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optimizer": optim_sd}
    with tempfile.TemporaryDirectory(prefix="dynamics-dcp-") as tmp:
        _download_dir(shard_dir(checkpoint_uri), tmp, cfg)
        dcp.load(state, checkpoint_id=tmp)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def consolidate(checkpoint_uri: str, cfg: StorageConfig | None) -> dict[str, torch.Tensor]:
    """The full model ``state_dict`` of a sharded checkpoint (no process group needed)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    with tempfile.TemporaryDirectory(prefix="dynamics-dcp-") as tmp:
        shards = os.path.join(tmp, "shards")
        os.makedirs(shards)
        _download_dir(shard_dir(checkpoint_uri), shards, cfg)
        out = os.path.join(tmp, "full.pt")
        dcp_to_torch_save(shards, out)
        full: dict[str, Any] = torch.load(out, map_location="cpu", weights_only=True)
    return _open_clip_shapes(dict(full["model"]))


def delete_shards(checkpoint_uri: str, cfg: StorageConfig | None) -> None:
    """Delete a checkpoint's shard directory, if it has one."""
    for uri in storage.list_uris(shard_dir(checkpoint_uri), cfg):
        storage.delete(uri, cfg)
    if not storage.is_s3(checkpoint_uri):  # S3 has no directories; a local one would stay behind empty
        with contextlib.suppress(OSError):
            os.rmdir(storage.local_path(shard_dir(checkpoint_uri)))
