"""The trainer's sample stream and batches: per-epoch DynamiCS subsets, exact resume, bad data, draft decode."""

from __future__ import annotations

import io
import math
from collections import Counter
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dynamics.core.sampler import ShardTable, uses
from dynamics.demo import write_test_shards
from dynamics.stages.train.data import EpochDataset, EpochSpec, epoch_loader
from dynamics.stages.train.decode import TrainImageTransform
from dynamics.stages.train.stream import FRESH, Cursor, StreamSettings, load_table, source, windows
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths
from dynamics.storage.pattern import expand
from dynamics.storage.shards import CorruptImage, SkipStats, iter_samples
from tests.stages.test_train_support import RUN, make_data, write_tables

SAMPLE_SEED = 11


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, RunPaths]:
    root = tmp_path_factory.mktemp("stream")
    train = make_data(str(root / "data"), n_train=300, shard_size=50)
    return train["pattern"], RunPaths.for_run(str(root / "work"), RUN)


def _settings(pattern: str, paths: RunPaths, *, mode: str = "cap", window: int = 7) -> StreamSettings:
    return StreamSettings(shards=tuple(expand(pattern)), paths=paths, storage=None, seed=5,
                          sample_seed=SAMPLE_SEED, mode=mode, unknown_prob=0.5, window=window)


def _pass0(settings: StreamSettings, sampler_epoch: int) -> Counter[tuple[int, str]]:
    """Copies per (shard, key) in the first pass of reader 0 of 1 over all shards."""
    kept: Counter[tuple[int, str]] = Counter()
    for position, item in source(settings, 0, 1, sampler_epoch, FRESH.start, SkipStats()):
        if position.pass_index > 0:
            break
        kept[(item.shard_index, item.key)] += 1
    return kept


def _expected(settings: StreamSettings, sampler_epoch: int) -> Counter[tuple[int, str]]:
    out: Counter[tuple[int, str]] = Counter()
    for index, url in enumerate(settings.shards):
        table = load_table(settings.paths.shard_table(index), None, 0.5)
        keys = [s.key for s in iter_samples(url, None, SkipStats())]
        copies = uses(table, keys, seed=SAMPLE_SEED, epoch=sampler_epoch, shard_index=index,
                      mode=settings.mode)
        out.update({(index, k): int(c) for k, c in zip(keys, copies, strict=True) if c})
    return out


def test_epoch_subsets_differ_and_follow_the_sampler(dataset: tuple[str, RunPaths]) -> None:
    pattern, paths = dataset
    probs = write_tables(pattern, paths)
    settings = _settings(pattern, paths)
    subsets = [_pass0(settings, epoch) for epoch in (0, 1, 2)]
    for epoch, kept in enumerate(subsets):
        assert kept == _expected(settings, epoch)  # exactly the sampler's decisions
    assert subsets[0] != subsets[1] != subsets[2]
    overlap = len(set(subsets[0]) & set(subsets[1])) / len(subsets[0])
    assert 0.2 < overlap < 0.95  # re-drawn each epoch, not a fixed subset

    # the expected rate: sum of p over all samples, within 4 standard deviations (per epoch)
    p = np.array([min(v, 1.0) for table in probs.values() for v in table.values()])
    mean, sd = p.sum(), math.sqrt((p * (1 - p)).sum())
    for kept in subsets:
        assert abs(sum(kept.values()) - mean) < 4 * sd
    # long tail: the biggest clusters are thinned more than the smallest ones
    assert p.min() < p.max()


def test_repeat_mode_gives_extra_copies(dataset: tuple[str, RunPaths]) -> None:
    pattern, paths = dataset
    write_tables(pattern, paths, alpha=0.0, budget=1.0)  # flat balancing: small clusters get p > 1
    settings = _settings(pattern, paths, mode="repeat")
    kept = _pass0(settings, 4)
    assert kept == _expected(settings, 4)
    assert max(kept.values()) >= 2


@pytest.mark.parametrize("mode", ["cap", "repeat"])
def test_cursor_resumes_the_stream_exactly(dataset: tuple[str, RunPaths], mode: str) -> None:
    pattern, paths = dataset
    write_tables(pattern, paths, alpha=0.0, budget=1.0)
    settings = _settings(pattern, paths, mode=mode)
    full = list(islice(windows(settings, 1, 2, 3, FRESH, SkipStats()), 260))  # > one pass of 3 shards
    assert any(item.copy for _, item in full) == (mode == "repeat")
    for cut in (1, 6, 7, 8, 50, 123, 200):
        cursor = Cursor.from_list(full[cut - 1][0].to_list())
        resumed = list(islice(windows(settings, 1, 2, 3, cursor, SkipStats()), 40))
        assert [(c, i.label) for c, i in resumed] == [(c, i.label) for c, i in full[cut:cut + 40]]


def _epoch(settings: StreamSettings, steps: range, cursors: dict[int, Cursor] | None = None,
           workers: int = 2, batch: int = 4) -> EpochDataset:
    import open_clip

    spec = EpochSpec(stream=settings, sampler_epoch=0, steps=steps, rank=0, world_size=1, workers=workers,
                     batch_size=batch, cursors=cursors or {})
    transform = open_clip.image_transform(32, is_train=True)
    return EpochDataset(spec, transform, open_clip.get_tokenizer("ViT-B-32", context_length=16))


def test_loader_workers_resume_mid_epoch(dataset: tuple[str, RunPaths]) -> None:
    pattern, paths = dataset
    write_tables(pattern, paths)
    settings = _settings(pattern, paths)
    full = list(epoch_loader(_epoch(settings, range(0, 7)), pin_memory=False))
    assert [b.reader for b in full] == [0, 1, 0, 1, 0, 1, 0]
    assert full[0].images.shape == (4, 3, 32, 32) and full[0].texts.shape == (4, 16)
    for start in (3, 4):
        cursors = {b.reader: Cursor.from_list(b.cursor) for b in full[:start]}
        resumed = list(epoch_loader(_epoch(settings, range(start, 7), cursors), pin_memory=False))
        assert [b.keys for b in resumed] == [b.keys for b in full[start:]]
        assert [b.reader for b in resumed] == [b.reader for b in full[start:]]
        for a, b in zip(resumed, full[start:], strict=True):
            assert torch.equal(a.images, b.images)  # augmentations replay too
    selected = _expected(settings, 0)
    assert {k for b in full for k in b.keys} <= {k for _, k in selected}


def test_bad_samples_are_skipped_and_counted(tmp_path: Path) -> None:
    info = write_test_shards(str(tmp_path / "bad"), n_shards=2, per_shard=8)
    paths = RunPaths.for_run(str(tmp_path / "work"), RUN)
    for index, url in enumerate(info["urls"]):
        keys = [s.key for s in iter_samples(url, None, SkipStats())]
        table = ShardTable.from_keys(keys, np.ones(len(keys)))
        storage.write_bytes(paths.shard_table(index), table.to_bytes())  # the sampler's own format
    settings = _settings(info["pattern"], paths, window=3)
    batches = list(epoch_loader(_epoch(settings, range(0, 6), workers=0), pin_memory=False))
    seen = {k.split("#")[0] for b in batches for k in b.keys}
    assert seen.isdisjoint(info["corrupt_keys"]) and seen.isdisjoint(info["missing_caption_keys"])
    assert seen.isdisjoint(info["lost_keys"])
    skipped = Counter()
    for b in batches:
        skipped.update(b.skipped)
    assert skipped["corrupt_image"] >= 1
    assert all(b.images.shape[0] == 4 for b in batches)


def _jpeg(width: int, height: int) -> bytes:
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, (x * y) % 255], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def test_draft_decode_keeps_crops_and_output(monkeypatch: pytest.MonkeyPatch) -> None:
    import open_clip
    from PIL import JpegImagePlugin

    drafted: list[tuple[int, int]] = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self: JpegImagePlugin.JpegImageFile, mode: str, size: tuple[int, int]) -> object:
        result = original(self, mode, size)
        drafted.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    transform = open_clip.image_transform(112, is_train=True, aug_cfg={"scale": (0.4, 1.0)})
    fast, full = TrainImageTransform(transform, draft=True), TrainImageTransform(transform, draft=False)
    data = _jpeg(1600, 1200)
    for seed in range(5):
        torch.default_generator.manual_seed(seed)
        a = fast(data, "jpg")
        torch.default_generator.manual_seed(seed)
        b = full(data, "jpg")
        assert a.shape == b.shape == (3, 112, 112) and a.dtype == b.dtype == torch.uint8
        # Same crop, resampled from a DCT-reduced decode: within a few of 255 levels on average.
        assert (a.float() - b.float()).abs().mean() < 3.5
    assert len(drafted) == 5 and all(w <= 800 and h <= 600 for w, h in drafted)  # >= 2x fewer pixels/side
    with pytest.raises(CorruptImage):
        fast(b"not an image", "jpg")
