"""Decoding training JPEGs on the device (``train.decode: device``), with the CPU as the device here.

The loader path is the reference: the device path must see the same samples with the same crop boxes,
give nearly the same pixels, and train to nearly the same losses. Its CPU run is what the GPU run is held
to in ``test_train_gpu_decode.py``.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from torchvision.transforms import Compose, Normalize, ToTensor

from dynamics.stages.train.data import Batch, EpochDataset, EpochSpec, epoch_loader
from dynamics.stages.train.decode import TrainImageTransform
from dynamics.stages.train.gpu_decode import EncodedImages, device_crops, fill_bad_rows, normalise
from dynamics.stages.train.logs import ENV_KEYLOG
from dynamics.stages.train.stream import StreamSettings
from dynamics.storage.layout import RunPaths
from dynamics.storage.pattern import expand
from tests.stages.test_train_gpu_decode import gradient_image
from tests.stages.test_train_support import RUN, make_data, read_keylog, spec_dict, write_spec, write_tables

CPU = torch.device("cpu")


def _jpeg(seed: int, w: int = 96, h: int = 72, fmt: str = "JPEG") -> bytes:
    return gradient_image(np.random.default_rng(seed), w, h, fmt)


def test_uint8_crops_normalise_to_what_the_worker_used_to_send() -> None:
    transform = open_clip.image_transform(48, is_train=True, aug_cfg={"scale": (0.4, 1.0)})
    crops = TrainImageTransform(transform, draft=False)
    to_float = Compose([ToTensor(), Normalize(crops.mean, crops.std)])  # the transform's own last steps
    data = _jpeg(0)
    for seed in range(3):
        torch.manual_seed(seed)
        crop = crops(data, "jpg")
        assert crop.dtype == torch.uint8
        expected = to_float(Image.fromarray(crop.permute(1, 2, 0).numpy()))
        assert torch.equal(normalise(crop[None], crops.mean, crops.std)[0], expected)  # bit for bit
        torch.manual_seed(seed)
        plain = transform(Image.open(io.BytesIO(data)))  # open_clip's transform end to end (PIL's resample)
        torch.manual_seed(seed)
        pil = crops.crop(Image.open(io.BytesIO(data)))  # the same box, resampled by PIL
        # torch's bicubic kernel (a = -0.75) vs PIL's (a = -0.5): same box, a fraction of a level apart.
        assert (torch.from_numpy(np.asarray(pil)).permute(2, 0, 1).float() - crop.float()).abs().mean() < 0.5
        assert (normalise(crop[None], crops.mean, crops.std)[0] - plain).abs().mean() < 0.5 / 255 / 0.26


def test_device_decode_survives_bad_rows_and_other_formats() -> None:
    crops = TrainImageTransform(open_clip.image_transform(32, is_train=True))
    good, png = _jpeg(1), _jpeg(2, fmt="PNG")
    truncated = good[: len(good) * 2 // 3]  # the header reads fine; the pixels do not
    rows, boxes = [], []
    for data in (good, truncated, png):
        row, box = crops.for_device(data, "jpg")
        rows.append(row)
        boxes.append(box)
    assert boxes[2] is None and rows[2].dtype == torch.uint8  # decoded by the worker
    images, bad = device_crops(EncodedImages(rows, boxes, 32), CPU, crops.crop.interpolation)
    assert bad == [1] and images.shape == (3, 3, 32, 32)
    texts = torch.arange(3 * 4).view(3, 4)
    filled, filled_texts = fill_bad_rows(images, texts, bad)
    assert torch.equal(filled[1], images[0]) and torch.equal(filled_texts[1], texts[0])  # a whole pair repeats
    assert torch.equal(filled[2], images[2]) and torch.equal(filled_texts[2], texts[2])


def _epoch(settings: StreamSettings, on_device: bool) -> list[Batch]:
    spec = EpochSpec(stream=settings, sampler_epoch=0, steps=range(0, 4), rank=0, world_size=1, workers=2,
                     batch_size=6, decode_on_device=on_device)
    transform = open_clip.image_transform(32, is_train=True, aug_cfg={"scale": (0.4, 1.0)})
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=16)
    return list(epoch_loader(EpochDataset(spec, transform, tokenizer), pin_memory=False))


def test_device_batches_match_the_loaders(tmp_path: Path) -> None:
    train = make_data(str(tmp_path / "data"), n_train=96, shard_size=24)
    paths = RunPaths.for_run(str(tmp_path / "work"), RUN)
    write_tables(train["pattern"], paths)
    settings = StreamSettings(shards=tuple(expand(train["pattern"])), paths=paths, storage=None, seed=5,
                              sample_seed=3, mode="cap", unknown_prob=1.0, window=8)
    loader, device = _epoch(settings, False), _epoch(settings, True)
    interpolation = TrainImageTransform(open_clip.image_transform(32, is_train=True)).crop.interpolation
    assert len(loader) == len(device) == 4
    for a, b in zip(loader, device, strict=True):
        assert a.keys == b.keys and torch.equal(a.texts, b.texts)
        assert b.images is None and a.encoded is None and b.encoded is not None
        images, bad = device_crops(b.encoded, CPU, interpolation)
        assert bad == []
        # Same crop boxes; only the resampler differs (PIL on the worker, torchvision on the device).
        assert (images.float() - a.images.float()).abs().mean() < 3.0


def _train(tmp: Path, label: str, pattern: str, n_samples: int, decode: str) -> dict[tuple[int, int], dict[str, Any]]:
    workdir = str(tmp / label)
    write_tables(pattern, RunPaths.for_run(workdir, RUN))
    spec = spec_dict(workdir, pattern, n_samples, procsPerNode=1, workers=2, decode=decode, checkpointEvery=100)
    spec["train"]["phases"] = spec["train"]["phases"][:1]
    spec["train"]["phases"][0].update(samples=6 * 8, samplesPerEpoch=24)
    spec_path = write_spec(str(tmp / f"{label}.yaml"), spec)
    keylog = str(tmp / f"{label}-keys")
    result = subprocess.run([os.path.join(os.path.dirname(sys.executable), "dynamics"), "stage", "train",
                             "--spec", spec_path], env={**os.environ, ENV_KEYLOG: keylog}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("JPEGs are decoded on cpu" in result.stderr) == (decode == "device"), result.stderr[-3000:]
    return read_keylog(keylog, 0)


@pytest.mark.slow
def test_trainer_decoding_on_the_device_trains_like_the_loader(tmp_path: Path) -> None:
    train = make_data(str(tmp_path / "data"), n_train=96, shard_size=24)
    loader = _train(tmp_path, "loader", train["pattern"], train["n_samples"], "loader")
    device = _train(tmp_path, "device", train["pattern"], train["n_samples"], "device")
    assert sorted(loader) == sorted(device) == [(0, s) for s in range(1, 7)]
    for step, rec in loader.items():
        assert device[step]["keys"] == rec["keys"]  # the same samples, batch by batch
        # Both paths crop and resize with torch's antialiased resize; pixels can differ by the JPEG decoder
        # (PIL's reduced-scale draft vs torchvision's), so the losses stay close through six updates.
        assert device[step]["loss"] == pytest.approx(rec["loss"], abs=0.02)
