"""The JPEG fast path of the training transform (header walk + torchvision's libjpeg) changes nothing:
same crop draws, same pixels as the PIL path, the same errors for damaged files."""

from __future__ import annotations

import io

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from dynamics.stages.train.decode import TrainImageTransform
from dynamics.stages.train.gpu_decode import JpegHeader, jpeg_header
from dynamics.storage.shards import CorruptImage


def _transform(size: int = 112) -> TrainImageTransform:
    pp = open_clip.transform.PreprocessCfg(size=size)
    aug = open_clip.transform.AugmentationCfg(scale=(0.4, 1.0))
    return TrainImageTransform(open_clip.transform.image_transform_v2(pp, is_train=True, aug_cfg=aug))


def _jpeg(rng: np.random.Generator, size: tuple[int, int], mode: str = "RGB", **save: object) -> bytes:
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // w, y * 255 // h, (x + y) * 127 // (w + h)], -1)
    noisy = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).convert(mode).save(buf, format="JPEG", quality=90, **save)
    return buf.getvalue()


def _images() -> list[bytes]:
    rng = np.random.default_rng(7)
    return [_jpeg(rng, (208, 277)), _jpeg(rng, (277, 208)), _jpeg(rng, (900, 640)),  # copies, and draft-size
            _jpeg(rng, (384, 384), "L"), _jpeg(rng, (300, 220), progressive=True),
            _jpeg(rng, (260, 300), exif=Image.Exif().tobytes())]


def test_header_walk_reads_what_pil_reads() -> None:
    for data in _images():
        with Image.open(io.BytesIO(data)) as img:
            assert jpeg_header(data) == JpegHeader(img.size[0], img.size[1], len(img.getbands()))
    assert jpeg_header(b"\x89PNG\r\n") is None and jpeg_header(b"\xff\xd8\xff\xe0\x00") is None


def test_fast_path_gives_the_pil_paths_crops_and_draws() -> None:
    tf = _transform()
    for seed in range(4):
        for data in _images():
            torch.manual_seed(seed)
            fast = tf(data, "jpg")
            after_fast = torch.rand(1)
            torch.manual_seed(seed)
            slow = tf.crop.tensor(Image.open(io.BytesIO(data)))  # the PIL path: open, draft, np.array
            assert torch.equal(fast, slow) and torch.equal(after_fast, torch.rand(1))
            assert fast.dtype == torch.uint8 and fast.shape == (3, 112, 112)


@pytest.mark.parametrize("cut", [0.5, 0.99])
def test_damaged_jpegs_are_still_corrupt_images(cut: float) -> None:
    data = _images()[0]
    with pytest.raises(CorruptImage):
        _transform()(data[: int(len(data) * cut)], "jpg")
    with pytest.raises(CorruptImage):
        _transform()(data[:2] + b"\xff\xc0\x00\x11\x08" + bytes(40), "jpg")  # a frame header and no data


def test_images_pil_calls_bombs_still_go_through_pil_and_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _images()[0]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 208 x 277 is over twice that: PIL refuses it
    with pytest.raises(CorruptImage, match="decompression bomb"):
        _transform()(data, "jpg")
