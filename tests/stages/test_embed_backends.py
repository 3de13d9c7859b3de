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


TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
             "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1}}


def _export_tiny_clip(folder: Path) -> torch.nn.Module:
    """A tiny random open_clip model in the layout `dynamics export-model` writes (config + safetensors)."""
    import json

    import open_clip
    from safetensors.torch import save_file

    from dynamics.stages.train.export import WEIGHTS
    from dynamics.stages.train.model import register_config

    torch.manual_seed(0)
    model = open_clip.create_model(register_config(TINY_CLIP), pretrained=None)
    folder.mkdir(parents=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP,
                                                              "preprocess_cfg": {"size": 32}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / WEIGHTS))
    return model.eval()


def _tower(model: torch.nn.Module, backend, images: list[Image.Image]) -> np.ndarray:
    with torch.inference_mode():
        out = model.encode_image(torch.stack([backend.transform(im) for im in images]))
    return torch.nn.functional.normalize(out, dim=-1).numpy()


def test_open_clip_local_dir_loads_an_exported_model(tmp_path: Path) -> None:
    model = _export_tiny_clip(tmp_path / "exported")
    backend = load_backend(Embed(backend="open_clip", model=f"local-dir:{tmp_path / 'exported'}"),
                           device=torch.device("cpu"))
    assert backend.dim == 16
    images = _images(3)
    vectors = _embed(backend, images)
    _check(vectors, 16, 3)
    # The stage embeds with the exported weights, not a fresh random model of the same architecture.
    np.testing.assert_allclose(vectors, _tower(model, backend, images), rtol=1e-4, atol=1e-5)


def test_open_clip_local_dir_on_s3_matches_local(tmp_path: Path, s3_bucket: str) -> None:
    _export_tiny_clip(tmp_path / "exported")
    for file in (tmp_path / "exported").iterdir():
        storage.upload_file(str(file), f"{s3_bucket}/models/clip/{file.name}")
    from_s3 = load_backend(Embed(backend="open_clip", model=f"local-dir:{s3_bucket}/models/clip"),
                           device=torch.device("cpu"))
    local = load_backend(Embed(backend="open_clip", model=f"local-dir:{tmp_path / 'exported'}"),
                         device=torch.device("cpu"))
    images = _images(2)
    np.testing.assert_allclose(_embed(from_s3, images), _embed(local, images), rtol=1e-5, atol=1e-6)


def test_open_clip_hf_hub_reads_the_local_hub_cache_offline(tmp_path: Path, monkeypatch) -> None:
    from huggingface_hub import constants

    # The Hub cache layout (models--ORG--REPO/snapshots/REV + refs/main), as a download leaves it.
    repo = tmp_path / "hub" / "models--acme--tiny-clip"
    model = _export_tiny_clip(repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    backend = load_backend(Embed(backend="open_clip", model="hf-hub:acme/tiny-clip"), device=torch.device("cpu"))
    images = _images(2)
    np.testing.assert_allclose(_embed(backend, images), _tower(model, backend, images), rtol=1e-4, atol=1e-5)
    with pytest.raises(DynamicsError, match=r"(?s)cannot create open_clip model 'hf-hub:acme/not-cached'.*fix:"):
        load_backend(Embed(backend="open_clip", model="hf-hub:acme/not-cached"), device=torch.device("cpu"))


def test_open_clip_registered_name_with_a_weights_file(tmp_path: Path) -> None:
    from dynamics.stages.train.model import register_config

    model = _export_tiny_clip(tmp_path / "exported")  # a registered (built-in style) name, tiny
    torch.save({"state_dict": model.state_dict()}, tmp_path / "w.pt")
    backend = load_backend(Embed(backend="open_clip", model=f"{register_config(TINY_CLIP)}:{tmp_path / 'w.pt'}"),
                           device=torch.device("cpu"))
    images = _images(2)
    np.testing.assert_allclose(_embed(backend, images), _tower(model, backend, images), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("ref", "why"), [("local-dir:", "names nothing"), ("run:", "does not name a run"),
                                          ("run:a@xyz", "pin that is not"), (":tag", "no model name")])
def test_bad_open_clip_names_are_one_clear_message(ref: str, why: str) -> None:
    with pytest.raises(DynamicsError, match=why) as info:
        load_backend(Embed(backend="open_clip", model=ref), device=torch.device("cpu"))
    assert "fix:" in str(info.value)
