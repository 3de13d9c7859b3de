"""GPU JPEG decode path: the CPU run of the same code is the reference, itself checked against PIL."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from dynamics.stages.train.gpu_decode import Crop, decode_crops, jpeg_size, normalise, random_crop
from dynamics.storage.shards import CorruptImage


def gradient_image(rng: np.random.Generator, w: int, h: int, fmt: str = "JPEG") -> bytes:
    """A smooth colour gradient with mild noise, encoded as ``fmt`` (JPEG at quality 95)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x / w * 255, y / h * 255, (x + y) / (w + h) * 255], -1) + rng.normal(0, 4, (h, w, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format=fmt, quality=95)
    return buf.getvalue()


def _pil_reference(data: bytes, c: Crop, size: int) -> np.ndarray:
    img = Image.open(io.BytesIO(data)).convert("RGB").crop((c.left, c.top, c.left + c.width, c.top + c.height))
    img = img.resize((size, size), Image.Resampling.BILINEAR)
    arr = np.asarray(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if c.flip else img)
    return arr.transpose(2, 0, 1).astype(np.int16)


def test_cpu_path_matches_pil_crop_and_resize() -> None:
    rng = np.random.default_rng(0)
    jpegs = [gradient_image(rng, 320, 240), gradient_image(rng, 200, 300)]
    gen = torch.Generator().manual_seed(1)
    crops = [random_crop(jpeg_size(j), (0.4, 1.0), gen) for j in jpegs]
    crops[1] = Crop(crops[1].top, crops[1].left, crops[1].height, crops[1].width, flip=True)
    out = decode_crops(jpegs, crops, 64, "cpu")
    assert out.shape == (2, 3, 64, 64) and out.dtype == torch.uint8
    for i, (j, c) in enumerate(zip(jpegs, crops, strict=True)):
        diff = np.abs(out[i].numpy().astype(np.int16) - _pil_reference(j, c, 64))
        assert diff.mean() < 2.0, diff.mean()


def test_crop_params_match_torchvision_draws() -> None:
    from torchvision.transforms import RandomResizedCrop

    img = torch.zeros(3, 240, 320)
    torch.manual_seed(5)
    expected = RandomResizedCrop.get_params(img, [0.4, 1.0], [3 / 4, 4 / 3])
    gen = torch.Generator().manual_seed(5)
    c = random_crop((320, 240), (0.4, 1.0), gen)
    assert (c.top, c.left, c.height, c.width) == tuple(expected)


def test_normalise_and_bad_input() -> None:
    batch = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    out = normalise(batch, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert torch.allclose(out, torch.ones_like(out))
    with pytest.raises(CorruptImage):
        jpeg_size(b"not a jpeg")
    with pytest.raises(ValueError, match="crops"):
        decode_crops([b""], [], 8, "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_path_matches_cpu_reference() -> None:
    rng = np.random.default_rng(2)
    jpegs = [gradient_image(rng, 640, 480) for _ in range(4)]
    gen = torch.Generator().manual_seed(3)
    crops = [random_crop(jpeg_size(j), (0.4, 1.0), gen) for j in jpegs]
    cpu = decode_crops(jpegs, crops, 112, "cpu").to(torch.int16)
    gpu = decode_crops(jpegs, crops, 112, "cuda").cpu().to(torch.int16)
    assert (cpu - gpu).abs().float().mean() < 2.0
