"""The OpenCLIP model of a run: creation by name or inline config, weights, transforms, param groups."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import open_clip
import torch
from open_clip.model import resize_pos_embed, resize_text_pos_embed
from open_clip.transform import AugmentationCfg, PreprocessCfg, image_transform_v2

from dynamics.errors import DynamicsError
from dynamics.spec.model import Precision, Train
from dynamics.stages.train.step import siglip_init
from dynamics.storage import objects as storage
from dynamics.storage.objects import StorageConfig

log = logging.getLogger(__name__)

INLINE_PREFIX = "dynamics-inline-"
_REQUIRED_KEYS = ("embed_dim", "vision_cfg", "text_cfg")
_registered: dict[str, str] = {}


def model_name(train: Train) -> str:
    """open_clip name of the run's model: ``train.model``, or a registered inline config.

    An inline config (``train.modelConfig``) is registered with open_clip's own
    ``add_model_config`` under a name derived from its content, so ``create_model`` and
    ``get_tokenizer`` treat it like a built-in model.
    """
    if train.model_config_ is None:
        if train.model not in open_clip.list_models():
            raise DynamicsError(f"unknown open_clip model {train.model!r}",
                                hint="use a name from open_clip.list_models() or set train.modelConfig")
        return train.model
    return register_config(train.model_config_)


def register_config(config: Mapping[str, Any]) -> str:
    """Register an inline open_clip model config (once per process); returns its model name."""
    missing = [k for k in _REQUIRED_KEYS if k not in config]
    if missing:
        raise DynamicsError(f"train.modelConfig lacks {', '.join(missing)}",
                            hint="an open_clip config has embed_dim, vision_cfg and text_cfg")
    text = json.dumps(dict(config), sort_keys=True)
    name = INLINE_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:12]
    if name not in _registered:
        directory = tempfile.mkdtemp(prefix="dynamics-model-")
        path = os.path.join(directory, f"{name}.json")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        open_clip.add_model_config(path)
        _registered[name] = path
    return name


def open_clip_config(train: Train) -> dict[str, Any]:
    """The ``open_clip_config.json`` of the run's final model: its architecture at the LAST phase's
    resolution and the spec's context length, so that loading it needs no resizing and no spec.

    ``open_clip.create_model_and_transforms("local-dir:DIR")`` reads this file (with the weights beside it).
    """
    cfg = copy.deepcopy(dict(train.model_config_) if train.model_config_ is not None
                        else open_clip.get_model_config(model_name(train)))
    cfg["vision_cfg"] = {**cfg.get("vision_cfg", {}), "image_size": train.phases[-1].resolution}
    cfg["text_cfg"] = {**cfg.get("text_cfg", {}), "context_length": train.context_length}
    return {"model_cfg": cfg, "preprocess_cfg": {"size": train.phases[-1].resolution}}


def model_precision(precision: Precision) -> str:
    """open_clip ``create_model`` precision for a spec precision (AMP keeps fp32 weights)."""
    return "bf16" if precision is Precision.BF16 else "fp32"


@contextmanager
def _quiet_open_clip() -> Iterator[None]:
    # open_clip logs every creation step at INFO on the root logger; keep `kubectl logs` readable.
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def create_model(train: Train, resolution: int, device: torch.device) -> torch.nn.Module:
    """A randomly initialised model at ``resolution`` px with the spec's context length."""
    with _quiet_open_clip():
        return open_clip.create_model(
            model_name(train),
            pretrained=None,
            precision=model_precision(train.precision),
            device=device,
            force_image_size=resolution,
            force_context_length=train.context_length,
            output_dict=True,
            **(siglip_init() if train.loss == "siglip" else {}),
        )


def load_weights(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load ``state_dict`` strictly, resizing position embeddings to the model's image size."""
    state = {k.removeprefix("module."): v for k, v in state_dict.items()}
    resize_pos_embed(state, model)
    resize_text_pos_embed(state, model)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise DynamicsError(
            f"weights do not fit the model: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}",
            hint="train.pretrained must be a checkpoint of the same model architecture")


def load_pretrained(model: torch.nn.Module, uri: str, cfg: StorageConfig | None) -> None:
    """Load a starting checkpoint (local path or ``s3://``) via open_clip's checkpoint loader."""
    with tempfile.TemporaryDirectory(prefix="dynamics-pretrained-") as tmp:
        local = uri
        if storage.is_s3(uri):
            local = os.path.join(tmp, os.path.basename(uri) or "checkpoint.pt")
            storage.download_file(uri, local, cfg)
        elif not os.path.isfile(uri):
            raise DynamicsError(f"train.pretrained {uri!r} does not exist",
                                hint="give a local checkpoint file or an s3:// URI")
        try:
            open_clip.load_checkpoint(model, local, strict=True)
        except RuntimeError as exc:
            raise DynamicsError(f"cannot load train.pretrained {uri}: {exc}",
                                hint="it must be an open_clip checkpoint of the same model") from exc
    log.info("loaded starting weights from %s", uri)


def train_transform(model: torch.nn.Module, scale: tuple[float, float]) -> Callable[[Any], torch.Tensor]:
    """open_clip's training transform (RandomResizedCrop with ``scale``, normalisation)."""
    preprocess = PreprocessCfg(**model.visual.preprocess_cfg)
    return image_transform_v2(preprocess, is_train=True, aug_cfg=AugmentationCfg(scale=scale))


def tokenizer(train: Train) -> Callable[[list[str]], torch.Tensor]:
    """The model's tokenizer at the spec's context length."""
    with _quiet_open_clip():
        return open_clip.get_tokenizer(model_name(train), context_length=train.context_length)


def _no_decay(name: str, param: torch.nn.Parameter) -> bool:
    # open_clip_train.main's rule: gains, biases, norms, logit scale and 1-d embeddings.
    return param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: no weight decay on gains/biases/logit scale, as open_clip trains."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in named if _no_decay(n, p)], "weight_decay": 0.0},
        {"params": [p for n, p in named if not _no_decay(n, p)], "weight_decay": weight_decay},
    ]
