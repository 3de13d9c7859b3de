"""Embedding backends: DINOv2 loaded from save_pretrained() directories (local and S3), open_clip, pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dynamics.errors import DynamicsError
from dynamics.spec.model import Embed
from dynamics.stages.embed.backends import load_backend
from dynamics.storage import objects as storage

HIDDEN = 48


def _save_tiny_dinov2(path: Path) -> None:
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96,
                          image_size=56, patch_size=14)
    Dinov2Model(config).save_pretrained(path)
    # DINOv2's own preprocessing (resize 256, centre-crop 224, ImageNet statistics), scaled down.
    BitImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 56, "width": 56},
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(path)


def cpu(**fields: str) -> Embed:
    """An embed section for these CPU tests (a pod asking for a GPU fails without CUDA: test_gpu.py)."""
    return Embed.model_validate({**fields, "gpusPerPod": 0})


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (40 + 7 * i, 70, 3), dtype=np.uint8)) for i in range(n)]


def _embed(backend, images: list[Image.Image]) -> np.ndarray:
    return backend.embed(torch.stack([backend.transform(im) for im in images]))


def _check(vectors: np.ndarray, dim: int, n: int) -> None:
    assert vectors.shape == (n, dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])


def test_dinov2_from_local_directory(tmp_path: Path) -> None:
    _save_tiny_dinov2(tmp_path / "model")
    backend = load_backend(cpu(backend="dinov2", model=str(tmp_path / "model")))
    assert backend.dim == HIDDEN
    assert backend.transform(_images(1)[0]).shape == (3, 56, 56)
    _check(_embed(backend, _images(3)), HIDDEN, 3)


def test_dinov2_from_s3_matches_local(tmp_path: Path, s3_bucket: str) -> None:
    local = tmp_path / "model"
    _save_tiny_dinov2(local)
    for file in local.iterdir():
        storage.upload_file(str(file), f"{s3_bucket}/models/dino/{file.name}")
    from_s3 = load_backend(cpu(backend="dinov2", model=f"{s3_bucket}/models/dino"))
    from_disk = load_backend(cpu(backend="dinov2", model=str(local)))
    images = _images(2)
    np.testing.assert_allclose(_embed(from_s3, images), _embed(from_disk, images), rtol=1e-5, atol=1e-6)


def test_dinov2_missing_model_is_a_clear_error(tmp_path: Path, s3_bucket: str) -> None:
    with pytest.raises(DynamicsError, match="no model files under s3://"):
        load_backend(cpu(backend="dinov2", model=f"{s3_bucket}/models/none"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DynamicsError, match="cannot load DINOv2 model"):
        load_backend(cpu(backend="dinov2", model=str(tmp_path / "empty")))


def test_open_clip_image_tower() -> None:
    backend = load_backend(cpu(backend="open_clip", model="ViT-S-32"))
    assert backend.dim == 384
    _check(_embed(backend, _images(2)), 384, 2)


def test_pixels_backend_is_unit_norm_and_centred() -> None:
    backend = load_backend(Embed.model_validate({"backend": "pixels", "pixelsSize": 4, "gpusPerPod": 0}))
    assert backend.dim == 48
    vectors = _embed(backend, _images(3))
    _check(vectors, 48, 3)
