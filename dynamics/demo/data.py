"""Synthetic long-tailed image-text data for the quickstart, the tests and the benchmarks.

``generate_demo_data`` writes a small dataset in the layouts real tools expect:

- training shards as img2dataset writes them (``{key}.jpg``, ``{key}.txt``, ``{key}.json``);
- a balanced held-out set as clip_benchmark's webdataset zero-shot sets (``{key}.jpg`` +
  ``{key}.cls``, ``classnames.txt``, ``zeroshot_classification_templates.txt``);
- ``manifest.json`` with the brace patterns and class frequencies.

Each concept is a colour + shape/texture family ("red ring", "teal stripes") drawn with random
position, size, rotation, colour jitter and background noise, so a tiny CLIP learns it in minutes
on a CPU. Concept sizes follow a (Zipf-Mandelbrot) power law: a few head concepts hold hundreds
of samples, the tail a handful -- the imbalance DynamiCS is meant to correct. Everything is
deterministic in ``seed``: same seed, byte-identical shards.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from dynamics.demo.images import (
    CAPTION_TEMPLATES,
    EVAL_TEMPLATES,
    STREAM_EVAL,
    STREAM_ORDER,
    STREAM_TRAIN,
    brace,
    caption_for,
    concept_names,
    concept_sizes,
    encode_jpeg,
    json_bytes,
    out_root,
    render_concept,
    tar_bytes,
)
from dynamics.storage import objects as storage
from dynamics.storage.layout import join
from dynamics.storage.objects import StorageConfig


@dataclass(frozen=True)
class _TrainSample:
    key: str
    concept: int
    caption: str
    jpeg: bytes


def _train_members(s: _TrainSample, names: list[str], size: int) -> list[tuple[str, bytes]]:
    meta = {
        "key": s.key,
        "caption": s.caption,
        "concept": s.concept,
        "class": s.concept,
        "concept_name": names[s.concept],
        "width": size,
        "height": size,
        "status": "success",
    }
    return [
        (f"{s.key}.jpg", s.jpeg),
        (f"{s.key}.txt", s.caption.encode()),
        (f"{s.key}.json", json_bytes(meta)),
    ]


def _make_train(
    seed: int, names: list[str], sizes: np.ndarray, shard_size: int, image_size: int
) -> Iterator[tuple[int, list[_TrainSample]]]:
    rng = np.random.default_rng([seed, STREAM_TRAIN])
    labels = rng.permutation(np.repeat(np.arange(len(names)), sizes))
    for shard_start in range(0, len(labels), shard_size):
        shard = shard_start // shard_size
        samples = []
        for i, concept in enumerate(labels[shard_start : shard_start + shard_size]):
            name = names[int(concept)]
            caption = caption_for(name, int(rng.integers(len(CAPTION_TEMPLATES))))
            jpeg = encode_jpeg(render_concept(name, rng, image_size))
            samples.append(_TrainSample(f"{shard:05d}{i:04d}", int(concept), caption, jpeg))
        yield shard, samples


def _write_train(
    root: str,
    seed: int,
    names: list[str],
    sizes: np.ndarray,
    shard_size: int,
    image_size: int,
    cfg: StorageConfig | None,
) -> dict[str, Any]:
    n_shards = 0
    for shard, samples in _make_train(seed, names, sizes, shard_size, image_size):
        members = [m for s in samples for m in _train_members(s, names, image_size)]
        storage.write_bytes(join(root, "train", f"{shard:05d}.tar"), tar_bytes(members), cfg)
        n_shards += 1
    return {
        "pattern": join(root, "train", f"{brace(5, n_shards)}.tar"),
        "n_shards": n_shards,
        "n_samples": int(sizes.sum()),
        "class_counts": [int(n) for n in sizes],
    }


def _write_eval(
    root: str,
    seed: int,
    names: list[str],
    per_class: int,
    shard_size: int,
    image_size: int,
    cfg: StorageConfig | None,
) -> dict[str, Any]:
    rng = np.random.default_rng([seed, STREAM_EVAL])
    labels = rng.permutation(np.repeat(np.arange(len(names)), per_class))
    base = join(root, "eval")
    n_shards = 0
    for shard_start in range(0, len(labels), shard_size):
        members: list[tuple[str, bytes]] = []
        for i, concept in enumerate(labels[shard_start : shard_start + shard_size]):
            key = f"s{shard_start + i:07d}"
            members.append((f"{key}.jpg", encode_jpeg(render_concept(names[int(concept)], rng, image_size))))
            members.append((f"{key}.cls", str(int(concept)).encode()))
        storage.write_bytes(join(base, "test", f"{n_shards}.tar"), tar_bytes(members), cfg)
        n_shards += 1
    storage.write_bytes(join(base, "test", "nshards.txt"), f"{n_shards}\n".encode(), cfg)
    storage.write_bytes(join(base, "classnames.txt"), ("\n".join(names) + "\n").encode(), cfg)
    templates = "\n".join(EVAL_TEMPLATES) + "\n"
    storage.write_bytes(join(base, "zeroshot_classification_templates.txt"), templates.encode(), cfg)
    return {
        "root": base,
        "pattern": join(base, "test", f"{{0..{n_shards - 1}}}.tar"),
        "n_shards": n_shards,
        "n_samples": len(labels),
        "per_class": per_class,
        "classnames": join(base, "classnames.txt"),
        "templates": join(base, "zeroshot_classification_templates.txt"),
    }


def generate_demo_data(
    out_dir: str,
    *,
    seed: int = 0,
    n_concepts: int = 24,
    n_train: int = 3000,
    n_eval_per_class: int = 20,
    shard_size: int = 250,
    image_size: int = 64,
    cfg: StorageConfig | None = None,
) -> dict[str, Any]:
    """Write the demo dataset under ``out_dir`` (local path or ``s3://``); returns the manifest.

    Layout: ``train/{00000..N}.tar``, ``eval/test/{0..M}.tar`` with ``eval/classnames.txt`` and
    ``eval/zeroshot_classification_templates.txt``, and ``manifest.json``. Which concept is the
    head depends on the seed; class ids index ``classnames.txt``.
    """
    root = out_root(out_dir)
    names = concept_names(n_concepts)
    # Shuffle which concept gets which size, so class id 0 is not always the head.
    order = np.random.default_rng([seed, STREAM_ORDER]).permutation(n_concepts)
    sizes = np.empty(n_concepts, dtype=np.int64)
    sizes[order] = concept_sizes(n_train, n_concepts)
    manifest = {
        "name": "dynamics-demo",
        "seed": seed,
        "image_size": image_size,
        "classnames_list": names,
        "train": _write_train(root, seed, names, sizes, shard_size, image_size, cfg),
        "eval": _write_eval(root, seed, names, n_eval_per_class, shard_size, image_size, cfg),
    }
    storage.write_json(join(root, "manifest.json"), manifest, cfg)
    return manifest


# ---------------------------------------------------------------- defective shards for tests


