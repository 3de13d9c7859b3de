"""``write_test_shards``: tiny shards with known defects (truncated tars, corrupt images, no caption)."""

from __future__ import annotations

import io
import tarfile
from typing import Any

import numpy as np

from dynamics.demo.images import (
    STREAM_TEST,
    brace,
    caption_for,
    concept_names,
    encode_jpeg,
    json_bytes,
    out_root,
    render_concept,
    tar_bytes,
)
from dynamics.storage import objects as storage
from dynamics.storage.layout import join
from dynamics.storage.objects import StorageConfig


def _tar_cut_inside(raw: bytes, member: str) -> int:
    """A byte offset in the middle of ``member``'s data: cutting there truncates the tar."""
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        info = tar.getmember(member)
        return info.offset_data + max(1, info.size // 2)


def _test_members(
    key: str, name: str, rng: np.random.Generator, size: int, *, image: bytes | None, caption: bool, png: bool
) -> list[tuple[str, bytes]]:
    img = render_concept(name, rng, size)
    if image is None and png:
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        members = [(f"{key}.png", buf.getvalue())]
    else:
        members = [(f"{key}.jpg", image if image is not None else encode_jpeg(img))]
    if caption:
        members.append((f"{key}.txt", caption_for(name, 0).encode()))
    members.append((f"{key}.json", json_bytes({"key": key, "concept_name": name})))
    return members


def write_test_shards(
    out_dir: str,
    n_shards: int,
    per_shard: int,
    *,
    corrupt_image: bool = True,
    missing_caption: bool = True,
    truncated: bool = True,
    seed: int = 0,
    image_size: int = 32,
    cfg: StorageConfig | None = None,
) -> dict[str, Any]:
    """Write ``n_shards`` shards of ``per_shard`` samples with known defects; returns what to expect.

    Defects: shard 0 sample 1 has undecodable image bytes (``corrupt_image``), shard 0 sample 2
    has no ``.txt`` (``missing_caption``), shard 0 sample 3 is a PNG, and the last shard is cut
    in the middle of an image (``truncated``), losing that sample and all after it.

    Returned keys: ``pattern``, ``urls``, ``n_written``, ``n_readable`` (samples
    :func:`dynamics.storage.shards.iter_samples` yields), ``n_decodable``, ``iter_stats`` (what
    iter_samples counts), ``stats`` (plus ``corrupt_image``, counted by the decoding caller),
    ``keys`` (readable keys in order), ``corrupt_keys``, ``missing_caption_keys``, ``lost_keys``.
    """
    if n_shards < 1 or per_shard < 6:
        raise ValueError("write_test_shards needs n_shards >= 1 and per_shard >= 6")
    root = out_root(out_dir)
    names = concept_names(8)
    rng = np.random.default_rng([seed, STREAM_TEST])
    out: dict[str, Any] = {
        "urls": [],
        "keys": [],
        "corrupt_keys": [],
        "missing_caption_keys": [],
        "lost_keys": [],
    }
    for shard in range(n_shards):
        members: list[tuple[str, bytes]] = []
        keys = [f"{shard:05d}{i:04d}" for i in range(per_shard)]
        for i, key in enumerate(keys):
            bad = corrupt_image and shard == 0 and i == 1
            no_caption = missing_caption and shard == 0 and i == 2
            image = b"corrupt" + rng.bytes(64) if bad else None
            members += _test_members(
                key,
                names[i % 8],
                rng,
                image_size,
                image=image,
                caption=not no_caption,
                png=shard == 0 and i == 3,
            )
            out["corrupt_keys" if bad else "missing_caption_keys" if no_caption else "keys"].append(key)
        raw = tar_bytes(members)
        if truncated and shard == n_shards - 1:
            cut_at = max(4, per_shard // 2)
            raw = raw[: _tar_cut_inside(raw, f"{keys[cut_at]}.jpg")]
            out["lost_keys"] = keys[cut_at:]
        url = join(root, f"{shard:05d}.tar")
        storage.write_bytes(url, raw, cfg)
        out["urls"].append(url)
    return _test_summary(out, root, n_shards, per_shard, corrupt_image, missing_caption, truncated)


def _test_summary(
    out: dict[str, Any],
    root: str,
    n_shards: int,
    per_shard: int,
    corrupt: bool,
    missing: bool,
    truncated: bool,
) -> dict[str, Any]:
    lost = set(out["lost_keys"])
    readable = sorted(set(out["keys"] + out["corrupt_keys"] + out["missing_caption_keys"]) - lost)
    iter_stats = {"missing_caption": int(missing), "truncated_shard": int(truncated)}
    return {
        **out,
        "keys": readable,
        "pattern": join(root, f"{brace(5, n_shards)}.tar"),
        "n_written": n_shards * per_shard,
        "n_readable": len(readable),
        "n_decodable": len(readable) - int(corrupt),
        "iter_stats": {k: v for k, v in iter_stats.items() if v},
        "stats": {k: v for k, v in {**iter_stats, "corrupt_image": int(corrupt)}.items() if v},
    }
