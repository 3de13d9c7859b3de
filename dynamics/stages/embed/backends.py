"""Image-embedding backends: DINOv2 (the method's), any open_clip image tower, and ``pixels``.

A backend splits into a picklable ``transform`` (PIL image -> tensor, run in DataLoader workers) and
``embed`` (batch -> L2-normalised float32 numpy rows, run in the main process on GPU or CPU).

``pixels`` is a model-free backend for tests and the CPU quickstart: the image downscaled to
``pixelsSize`` x ``pixelsSize`` RGB, centred and L2-normalised. It clusters synthetic data by colour and
layout in seconds. On real images raw pixel vectors have a high cosine for any pair, so a
threshold calibrated for DINOv2 means nothing there: pair it with ``cluster.whiten: pca`` (centring
and PCA whitening fitted on the k-means sample, see :mod:`dynamics.core.whiten`), and expect clusters
much coarser than a real image model's (``dynamics experiment longtail`` measures this).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from dynamics.constants import Stage
from dynamics.errors import DynamicsError
from dynamics.spec.model import Embed, EmbedBackend
from dynamics.stages.embed.modelref import LOCAL_DIR, NAME_FORMS, ModelRef, check_pin, parse_model_ref, source_spec
from dynamics.stages.gpu import stage_device
from dynamics.storage import objects as storage

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backend(Protocol):
    """What the embed stage needs from a model."""

    dim: int
    transform: Any

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        """L2-normalised float32 embeddings of a batch of transformed images."""
        ...


def l2_normalize(x: torch.Tensor) -> np.ndarray:
    """Rows scaled to unit norm, as float32 numpy (zero rows stay zero)."""
    x = x.float()
    return torch.nn.functional.normalize(x, dim=-1).cpu().numpy().astype(np.float32)


class _PixelsTransform:
    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, img: Image.Image) -> torch.Tensor:
        small = img.convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR)
        arr = np.asarray(small, dtype=np.float32) / 255.0
        return torch.from_numpy(arr.reshape(-1))


@dataclass
class PixelsBackend:
    """Downscaled pixels, centred per image, L2-normalised (tests and the CPU quickstart)."""

    size: int

    def __post_init__(self) -> None:
        self.dim = 3 * self.size * self.size
        self.transform = _PixelsTransform(self.size)

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        centred = batch - batch.mean(dim=1, keepdim=True)
        return l2_normalize(centred)


class _TorchBackend:
    """Shared GPU/CPU handling: bf16 autocast on GPU (the method runs DINOv2 in bf16)."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model = model.eval().to(device)
        self.device = device

    def _autocast(self) -> torch.autocast:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    @torch.inference_mode()
    def embed(self, batch: torch.Tensor) -> np.ndarray:
        with self._autocast():
            out = self.forward(batch.to(self.device, non_blocking=True))
        return l2_normalize(out)


def _fetch_model_dir(uri: str, cfg: storage.StorageConfig | None) -> str:
    """A local directory with the model files: S3 directories are downloaded once to a temp dir."""
    if not storage.is_s3(uri):
        return uri
    target = Path(tempfile.mkdtemp(prefix="dynamics-model-"))
    prefix = uri.rstrip("/") + "/"
    objects = [u for u in storage.list_uris(prefix, cfg) if not u.endswith("/")]
    if not objects:
        raise DynamicsError(f"no model files under {uri}", hint="upload the save_pretrained() directory there")
    for obj in objects:
        rel = obj[len(prefix):]
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(storage.read_bytes(obj, cfg))
    return str(target)


def _dinov2_transform(model_dir: str) -> T.Compose:
    """The model's own preprocessing (resize 256, centre-crop 224, ImageNet mean/std by default)."""
    from transformers import AutoImageProcessor

    resize, crop, mean, std = 256, 224, IMAGENET_MEAN, IMAGENET_STD
    try:
        proc = AutoImageProcessor.from_pretrained(model_dir)
    except OSError:
        log.info("no preprocessor config in %s; using DINOv2's defaults (256/224, ImageNet stats)", model_dir)
    else:
        size = getattr(proc, "size", {}) or {}
        resize = size.get("shortest_edge", resize)
        crop_size = getattr(proc, "crop_size", {}) or {}
        crop = crop_size.get("height", crop)
        mean, std = tuple(proc.image_mean), tuple(proc.image_std)
    return T.Compose([
        T.Lambda(lambda im: im.convert("RGB")),
        T.Resize(resize, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(crop),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


class Dinov2Backend(_TorchBackend):
    """Hugging Face DINOv2: CLS token of the last hidden state (as the published method)."""

    def __init__(self, model_ref: str, device: torch.device, cfg: storage.StorageConfig | None) -> None:
        from transformers import AutoModel

        model_dir = _fetch_model_dir(model_ref, cfg)
        try:
            model = AutoModel.from_pretrained(model_dir)
        except (OSError, ValueError) as exc:
            raise DynamicsError(f"cannot load DINOv2 model '{model_ref}': {exc}",
                                hint="set embed.model to a Hugging Face id or a save_pretrained() directory "
                                "(local or s3://)") from exc
        super().__init__(model, device)
        self.dim = int(model.config.hidden_size)
        self.transform = _dinov2_transform(model_dir)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=batch).last_hidden_state[:, 0]


def _open_clip_args(model_ref: str, workdir: str | None, cfg: storage.StorageConfig | None) -> tuple[str, str | None]:
    """(model_name, pretrained) for ``open_clip.create_model_and_transforms`` (see :mod:`.modelref`)."""
    ref = parse_model_ref(model_ref)
    match ref.kind:
        case "hf-hub":
            return ref.name, None
        case "local-dir":
            return LOCAL_DIR + _fetch_model_dir(ref.name, cfg), None
        case "run":
            return LOCAL_DIR + str(_export_run_model(ref, workdir, cfg)), None
        case _:
            return ref.name, ref.pretrained


def _export_run_model(ref: ModelRef, workdir: str | None, cfg: storage.StorageConfig | None) -> Path:
    """The final model of the run ``ref`` names, exported (as ``dynamics export-model``) to a temp folder."""
    from dynamics.spec.fingerprint import run_paths, stage_fingerprint
    from dynamics.stages.train.export import export_model

    if workdir is None:
        raise DynamicsError(f"embed.model run:{ref.name} needs the spec's work directory",
                            hint="load the backend with workdir=spec.storage.workdir")
    source = source_spec(workdir, ref.name, cfg)
    train_fp = stage_fingerprint(source, Stage.TRAIN)
    check_pin(ref, train_fp)
    log.info("embedding with the final model of run '%s' (train fingerprint %s)", ref.name, train_fp[:16])
    out = Path(tempfile.mkdtemp(prefix="dynamics-run-model-")) / ref.name
    return export_model(source, run_paths(source), out, cfg or storage.StorageConfig())


class OpenClipBackend(_TorchBackend):
    """Any open_clip image tower, named in any form :func:`.modelref.parse_model_ref` takes."""

    def __init__(self, model_ref: str, device: torch.device, cfg: storage.StorageConfig | None = None,
                 workdir: str | None = None) -> None:
        import open_clip

        name, pretrained = _open_clip_args(model_ref, workdir, cfg)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
        except (RuntimeError, ValueError, OSError) as exc:
            raise DynamicsError(f"cannot create open_clip model '{model_ref}': {exc}",
                                hint=f"embed.model takes {NAME_FORMS} (see open_clip.list_models(); "
                                "hf-hub: needs the Hub or its cache, HF_HUB_OFFLINE=1 reads only the cache)") from exc
        super().__init__(model, device)
        self.transform = preprocess
        self.dim = int(model.visual.output_dim)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(batch)


def load_backend(cfg: Embed, storage_cfg: storage.StorageConfig | None = None,
                 device: torch.device | None = None, workdir: str | None = None) -> Backend:
    """The backend the spec's ``embed`` section names, on ``device`` (default: the GPU when
    ``embed.gpusPerPod`` asks for one, failing fast when CUDA is unusable; else the CPU). ``workdir``: where
    ``run:RUN`` models are found."""
    match cfg.backend:
        case EmbedBackend.PIXELS:
            return PixelsBackend(cfg.pixels_size)
    device = device or stage_device("embed.gpusPerPod", cfg.gpus_per_pod)
    match cfg.backend:
        case EmbedBackend.DINOV2:
            return Dinov2Backend(cfg.model, device, storage_cfg)
        case EmbedBackend.OPEN_CLIP:
            return OpenClipBackend(cfg.model, device, storage_cfg, workdir)
