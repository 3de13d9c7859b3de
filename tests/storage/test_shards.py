"""dynamics.storage.shards: patterns, existence checks, streaming iteration, decoding, webdataset URLs."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import braceexpand
import pytest
import webdataset as wds
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from webdataset.gopen import gopen_schemes
from webdataset.shardlists import expand_urls

from dynamics.demo import write_test_shards
from dynamics.demo.images import encode_jpeg, tar_bytes
from dynamics.errors import StorageError
from dynamics.stages.embed.loss import known_shard_samples
from dynamics.storage import objects as storage
from dynamics.storage import shards
from dynamics.storage.shards import CorruptImage, ShardRead, SkipReason, SkipStats, iter_samples
from dynamics.storage.skips import data_loss
from dynamics.storage.wds_s3 import register_s3_handler

# ---------------------------------------------------------------- patterns

PATTERNS = [
    "s3://bucket/datacomp/{00000000..00020068}.tar",
    "/data/shard-{000..009}.tar",
    "s3://b/{train,val}/{0..3}.tar",
    "s3://b/{a,b,c}-{07..11}-{x,y}.tar",
    "local/no-braces.tar",
    "s3://b/x-{0..10..5}.tar",
    "s3://b/x-{10..8}.tar",
    "s3://b/a-{0..2}.tar::s3://b/b-{00..01}.tar",
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_expand_pattern_matches_webdataset(pattern: str) -> None:
    assert shards.expand_pattern(pattern) == expand_urls(pattern)


def test_expand_pattern_size_of_target_dataset() -> None:
    urls = shards.expand_pattern("s3://dfn/shards/{00000000..00020068}.tar")
    assert len(urls) == 20069
    assert urls[0] == "s3://dfn/shards/00000000.tar" and urls[-1] == "s3://dfn/shards/00020068.tar"


_word = st.text(alphabet="abcxyz_-/.", min_size=0, max_size=6)
# (start, signed length, zero padding): keeps expansions small so 100 examples run in < 1 s.
_range = st.tuples(st.integers(0, 120), st.integers(-4, 4), st.integers(1, 6)).map(
    lambda t: f"{{{t[0]:0{t[2]}d}..{max(0, t[0] + t[1]):0{t[2]}d}}}"
)
_list = st.lists(st.text(alphabet="abc01", min_size=1, max_size=3), min_size=1, max_size=4).map(
    lambda xs: "{" + ",".join(xs) + "}"
)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(_word, _range, _list), min_size=1, max_size=4))
def test_expand_pattern_property(parts: list[str]) -> None:
    pattern = "s3://b/" + "".join(parts)
    assert shards.expand_pattern(pattern) == list(braceexpand.braceexpand(pattern))


# ---------------------------------------------------------------- resolve


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "local":
        return str(tmp_path / "data")
    return request.getfixturevalue("s3_bucket") + "/data"


def _touch_shards(root: str, n: int) -> None:
    for i in range(n):
        storage.write_bytes(f"{root}/{i:05d}.tar", b"x")


def test_resolve_shards_lists_once(root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _touch_shards(root, 20)
    storage.write_bytes(f"{root}/unrelated.txt", b"x")
    calls: list[str] = []
    real_list = storage.list_uris

    def counting_list(prefix: str, cfg: Any = None) -> list[str]:
        calls.append(prefix)
        return real_list(prefix, cfg)

    monkeypatch.setattr(storage, "list_uris", counting_list)
    monkeypatch.setattr(storage, "exists", lambda *a, **k: pytest.fail("no per-shard HEAD"))
    urls = shards.resolve_shards(f"{root}/{{00000..00019}}.tar")
    assert urls == [f"{root}/{i:05d}.tar" for i in range(20)]
    assert calls == [root]


def test_resolve_shards_reports_missing(root: str) -> None:
    _touch_shards(root, 5)
    pattern = f"{root}/{{00000..00007}}.tar"
    with pytest.raises(StorageError) as err:
        shards.resolve_shards(pattern)
    text = str(err.value)
    assert "3 of 8 shards" in text and pattern in text and f"{root}/00005.tar" in text
    assert "data.shards" in (err.value.hint or "")

    nothing = f"{root}/other-{{0..3}}.tar"
    with pytest.raises(StorageError, match="matches no existing shards") as err:
        shards.resolve_shards(nothing)
    assert nothing in str(err.value)


# ---------------------------------------------------------------- iteration


def test_iter_samples_counts_defects(root: str) -> None:
    info = write_test_shards(root, n_shards=3, per_shard=8, seed=1)
    stats = SkipStats()
    samples = [s for url in info["urls"] for s in shards.iter_samples(url, None, stats)]
    assert [s.key for s in samples] == info["keys"]
    assert len(samples) == info["n_readable"] == 3 * 8 - len(info["lost_keys"])
    assert stats.to_dict() == info["iter_stats"] == {"missing_caption": 1, "truncated_shard": 1}

    by_key = {s.key: s for s in samples}
    assert [k for k, s in by_key.items() if s.caption is None] == info["missing_caption_keys"]
    assert by_key["000000003"].image_ext == "png"
    assert all(s.meta and s.meta["key"] == s.key for s in samples)
    assert [s.row for s in samples if s.shard == info["urls"][0]] == list(range(8))
    assert info["lost_keys"] and not set(info["lost_keys"]) & set(by_key)

    decoded = 0
    for sample in samples:
        try:
            image = shards.decode_image(sample.image, sample.image_ext)
        except CorruptImage as exc:
            stats.add(exc.reason)
            assert sample.key in info["corrupt_keys"]
            continue
        assert image.mode == "RGB"
        decoded += 1
    assert decoded == info["n_decodable"]
    assert stats.to_dict() == info["stats"]


def test_iter_samples_without_defects(tmp_path: Any) -> None:
    info = write_test_shards(str(tmp_path), 2, 6, corrupt_image=False, missing_caption=False, truncated=False, seed=2)
    stats = SkipStats()
    samples = [s for url in info["urls"] for s in shards.iter_samples(url, None, stats)]
    assert len(samples) == info["n_decodable"] == 12
    assert stats.to_dict() == {}
    assert all(s.caption for s in samples)


def _members(n: int) -> list[tuple[str, bytes]]:
    jpeg = encode_jpeg(Image.new("RGB", (16, 16), (200, 10, 10)))
    return [m for i in range(n) for m in ((f"{i:03d}.jpg", jpeg), (f"{i:03d}.txt", f"caption {i}".encode()))]


def _iter_bytes(raw: bytes) -> tuple[list[str], SkipStats]:
    stats = SkipStats()
    keys = [s.key for s in shards.iter_stream("mem.tar", io.BytesIO(raw), stats)]
    return keys, stats


def test_truncation_at_member_boundary_is_detected() -> None:
    raw = tar_bytes(_members(3))
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        header_of_third = tar.getmember("002.jpg").offset
    keys, stats = _iter_bytes(raw[:header_of_third])  # tarfile alone would end silently here
    assert keys == ["000", "001"]
    assert stats.to_dict() == {"truncated_shard": 1}

    keys, stats = _iter_bytes(raw)
    assert keys == ["000", "001", "002"] and stats.total == 0


@pytest.mark.parametrize(("cut", "kind"), [(0, "empty_shard"), (100, "truncated_shard"), (700, "truncated_shard")])
def test_truncated_head_yields_nothing(cut: int, kind: str) -> None:
    keys, stats = _iter_bytes(tar_bytes(_members(2))[:cut])
    assert keys == []
    assert stats.to_dict() == {kind: 1}


def test_not_a_tar_is_told_from_a_cut_tar() -> None:
    keys, stats = _iter_bytes(b"<html>403 Forbidden</html>\n" * 40)
    assert keys == [] and stats.to_dict() == {"not_a_tar": 1}


def test_grouping_matches_webdataset(tmp_path: Any) -> None:
    jpeg = encode_jpeg(Image.new("RGB", (12, 12)))
    members = [
        ("__index__", b"meta"),
        ("dir/a.jpg", jpeg),
        ("dir/a.txt", b"in a dir"),
        ("b.JPG", jpeg),
        ("b.json", b'{"x": 1}'),
        ("c.seg.png", jpeg),  # extension "seg.png": not an image for either reader
        ("c.txt", b"no image"),
        ("d.webp.txt", b"x"),
        ("e.jpeg", jpeg),
        ("e.txt", b"  "),  # blank caption counts as missing
    ]
    path = tmp_path / "odd.tar"
    path.write_bytes(tar_bytes(members))
    stats = SkipStats()
    ours = {s.key: s for s in shards.iter_samples(str(path), None, stats)}
    theirs = list(wds.WebDataset([str(path)], shardshuffle=False))
    assert [s["__key__"] for s in theirs] == ["dir/a", "b", "c", "d", "e"]
    with_image = [s["__key__"] for s in theirs if any(e in s for e in shards.IMAGE_EXTS)]
    assert list(ours) == with_image == ["dir/a", "b", "e"]
    assert ours["b"].image_ext == "jpg" and ours["b"].meta == {"x": 1} and ours["b"].caption is None
    assert ours["dir/a"].caption == "in a dir"
    assert stats.to_dict() == {"missing_caption": 2, "missing_image": 2}


# ---------------------------------------------------------------- webdataset over s3://


def test_webdataset_streams_s3_urls(s3_bucket: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    kwargs = {"corrupt_image": False, "missing_caption": False, "truncated": False, "seed": 3}
    remote = write_test_shards(f"{s3_bucket}/wds", 3, 6, **kwargs)
    local = write_test_shards(str(tmp_path), 3, 6, **kwargs)
    register_s3_handler()
    # Prove the bytes come from boto3, not from a CLI or a cached download.
    for scheme in ("pipe", "http", "https"):
        monkeypatch.setitem(gopen_schemes, scheme, lambda *a, **k: pytest.fail("not through boto3"))
    monkeypatch.setenv("PATH", "/nonexistent")  # no aws CLI to fall back on

    remote_samples = list(wds.WebDataset(remote["urls"], shardshuffle=False))
    local_samples = list(wds.WebDataset(local["urls"], shardshuffle=False))
    assert [s["__key__"] for s in remote_samples] == [s["__key__"] for s in local_samples] == remote["keys"]
    for r, lo in zip(remote_samples, local_samples, strict=True):
        assert r.get("jpg", r.get("png")) == lo.get("jpg", lo.get("png")) is not None
    assert remote_samples[0]["__url__"].startswith("s3://")

    # The brace pattern works too, as open_clip passes it.
    assert len(list(wds.WebDataset(remote["pattern"], shardshuffle=False))) == 18


def test_webdataset_s3_missing_shard_raises_storage_error(s3_bucket: str) -> None:
    register_s3_handler()
    with pytest.raises(StorageError, match="not found"):
        list(wds.WebDataset([f"{s3_bucket}/nope.tar"], shardshuffle=False))


# ---------------------------------------------------------------- decoding


def _jpeg(size: int) -> bytes:
    return encode_jpeg(Image.new("RGB", (size, size), (10, 200, 30)))


def test_decode_with_draft_reduces_scale() -> None:
    data = _jpeg(256)
    assert shards.decode_image(data, "jpg").size == (256, 256)
    assert shards.decode_image(data, "jpg", draft_size=64).size == (64, 64)
    assert shards.decode_image(data, "jpg", draft_size=100).size == (128, 128)  # never below target


def test_decode_upsizes_tiny_images() -> None:
    buf = io.BytesIO()
    Image.new("L", (4, 7)).save(buf, format="PNG")
    image = shards.decode_image(buf.getvalue(), "png")
    assert image.mode == "RGB" and min(image.size) == shards.MIN_IMAGE_SIDE
    assert image.size == (10, 18)


@pytest.mark.parametrize("data", [b"", b"not an image at all", _jpeg(64)[:300]])
def test_decode_corrupt_raises_corrupt_image(data: bytes) -> None:
    with pytest.raises(CorruptImage) as err:
        shards.decode_image(data, "jpg")
    assert err.value.reason == SkipReason.CORRUPT_IMAGE == "corrupt_image"


# ---------------------------------------------------------------- stats


def test_skip_stats_merge_and_round_trip() -> None:
    a = SkipStats()
    a.add(SkipReason.CORRUPT_IMAGE)
    a.add("missing_caption", 2)
    b = SkipStats.from_dict({"corrupt_image": 3, "truncated_shard": 1})
    a += b
    assert a.to_dict() == {"corrupt_image": 4, "missing_caption": 2, "truncated_shard": 1}
    assert a[SkipReason.CORRUPT_IMAGE] == 4 and a.total == 7
    assert SkipStats.from_dict(a.to_dict()) == a
    assert list(a.to_dict()) == sorted(a.to_dict())


def test_data_loss_counts_the_samples_a_damaged_shard_should_have_held() -> None:
    """Issue 21 item 5: a cut or unreadable shard loses samples, not one."""
    reads = {"a": ShardRead(100), "b": ShardRead(90), "c": ShardRead(110), "cut": ShardRead(40, complete=False),
             "empty": ShardRead(0, complete=False)}
    loss = data_loss(reads, known={}, skipped=3)
    assert (loss.expected, loss.lost_in_shards, loss.lost) == (500, 160, 163)  # median 100 for both
    assert loss.estimated == ("cut", "empty") and loss.fraction == pytest.approx(163 / 500)
    # The embed index knows the cut shard held 70: that wins over the estimate.
    known = data_loss(reads, known={"cut": 70}, skipped=0)
    assert (known.expected, known.lost) == (470, 130) and known.estimated == ("empty",)
    # Nothing read whole and nothing known: each damaged shard lost at least one sample.
    alone = data_loss({"x": ShardRead(5, complete=False)}, known={}, skipped=0)
    assert (alone.expected, alone.lost) == (6, 1)
    assert data_loss({}, {}, 0).fraction == 0.0


def test_shard_read_reports_rows_and_completeness(tmp_path: Path) -> None:
    data = write_test_shards(str(tmp_path), 2, 8, corrupt_image=False, missing_caption=False, seed=1)
    reads = [ShardRead(), ShardRead()]
    for url, read in zip(data["urls"], reads, strict=True):
        list(iter_samples(url, None, SkipStats(), read))
    assert (reads[0].rows, reads[0].complete) == (8, True)
    assert (reads[1].rows, reads[1].complete) == (4, False)  # cut inside its 5th sample


def test_known_shard_samples_reads_the_embed_index(tmp_path: Path) -> None:
    workdir = str(tmp_path / "runs")
    storage.write_json(f"{workdir}/_shared/embed-aaaa/embed/part-00000.stats.json",
                       {"shard_samples": {"s3://b/0.tar": 120, "s3://b/1.tar": 80}})
    storage.write_json(f"{workdir}/_shared/cluster-bbbb/fit.json", {"shard_samples": {"s3://b/1.tar": 1}})
    assert known_shard_samples(workdir, {"s3://b/1.tar", "s3://b/2.tar"}, None) == {"s3://b/1.tar": 80}
    assert known_shard_samples(str(tmp_path / "none"), {"s3://b/1.tar"}, None) == {}
