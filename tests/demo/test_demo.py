"""dynamics.demo: the synthetic long-tailed dataset is deterministic, long-tailed and readable."""

from __future__ import annotations

import inspect
import os
from collections import Counter
from typing import Any

import numpy as np
import pytest

from dynamics.demo import generate_demo_data
from dynamics.demo.images import concept_names, concept_sizes
from dynamics.storage import objects as storage
from dynamics.storage import shards
from dynamics.storage.shards import SkipStats

SMALL = {"n_concepts": 12, "n_train": 400, "n_eval_per_class": 5, "shard_size": 100, "image_size": 32}


def _files(root: str) -> dict[str, bytes]:
    return {os.path.relpath(uri, root): storage.read_bytes(uri) for uri in storage.list_uris(root)}


def _read_all(pattern: str) -> tuple[list[shards.Sample], SkipStats]:
    stats = SkipStats()
    samples = [s for url in shards.resolve_shards(pattern) for s in shards.iter_samples(url, None, stats)]
    return samples, stats


def test_same_seed_gives_byte_identical_output(tmp_path: Any) -> None:
    a = generate_demo_data(str(tmp_path / "a"), seed=7, **SMALL)
    b = generate_demo_data(str(tmp_path / "b"), seed=7, **SMALL)
    files_a, files_b = _files(str(tmp_path / "a")), _files(str(tmp_path / "b"))
    assert sorted(files_a) == sorted(files_b)
    # The manifest names its own location; everything else must match byte for byte.
    files_b["manifest.json"] = files_b["manifest.json"].replace(
        str(tmp_path / "b").encode(), str(tmp_path / "a").encode()
    )
    assert [name for name in files_a if files_a[name] != files_b[name]] == []
    assert a["train"]["class_counts"] == b["train"]["class_counts"]

    c = generate_demo_data(str(tmp_path / "c"), seed=8, **SMALL)
    files_c = _files(str(tmp_path / "c"))
    assert files_c["train/00000.tar"] != files_a["train/00000.tar"]
    assert c["train"]["class_counts"] != a["train"]["class_counts"]


def test_train_set_is_long_tailed_and_labelled(tmp_path: Any) -> None:
    manifest = generate_demo_data(str(tmp_path), seed=0, **SMALL)
    train = manifest["train"]
    samples, stats = _read_all(train["pattern"])
    assert stats.to_dict() == {}
    assert len(samples) == train["n_samples"] == SMALL["n_train"]
    assert train["n_shards"] == 4 and train["pattern"].endswith("train/{00000..00003}.tar")

    names = concept_names(SMALL["n_concepts"])
    counts = Counter(s.meta["class"] for s in samples if s.meta)
    assert [counts[c] for c in range(len(names))] == train["class_counts"]
    for sample in samples:
        assert sample.meta is not None and sample.caption is not None
        assert names[sample.meta["class"]] in sample.caption  # caption names the concept
        assert sample.meta["concept"] == sample.meta["class"]
        assert shards.decode_image(sample.image, sample.image_ext).size == (32, 32)
    ordered = sorted(train["class_counts"], reverse=True)
    assert ordered[0] >= 10 * ordered[-1], "head concepts dwarf the tail"


def test_eval_set_is_balanced_and_clip_benchmark_shaped(tmp_path: Any) -> None:
    manifest = generate_demo_data(str(tmp_path), seed=0, **SMALL)
    evalset = manifest["eval"]
    samples, stats = _read_all(evalset["pattern"])
    assert stats.to_dict() == {"missing_caption": len(samples)}  # eval shards carry .cls, no .txt
    labels = Counter(s.label for s in samples)
    assert labels == dict.fromkeys(range(SMALL["n_concepts"]), SMALL["n_eval_per_class"])
    classnames = storage.read_bytes(evalset["classnames"]).decode().splitlines()
    assert classnames == concept_names(SMALL["n_concepts"]) == manifest["classnames_list"]
    templates = storage.read_bytes(evalset["templates"]).decode().splitlines()
    assert templates and all("{c}" in t for t in templates)
    nshards = storage.read_bytes(os.path.join(evalset["root"], "test", "nshards.txt")).decode().strip()
    assert int(nshards) == evalset["n_shards"]
    # Held out: no eval image is byte-identical to a training image.
    train_images = {s.image for s in _read_all(manifest["train"]["pattern"])[0]}
    assert not train_images & {s.image for s in samples}


def test_demo_data_to_s3(s3_bucket: str) -> None:
    manifest = generate_demo_data(f"{s3_bucket}/demo", seed=1, **SMALL)
    assert manifest["train"]["pattern"].startswith(f"{s3_bucket}/demo/train/")
    assert storage.read_json(f"{s3_bucket}/demo/manifest.json") == manifest
    samples, _ = _read_all(manifest["train"]["pattern"])
    assert len(samples) == SMALL["n_train"]


def test_concept_sizes_power_law() -> None:
    sizes = concept_sizes(3000, 24)
    assert sizes.sum() == 3000
    assert np.all(np.diff(sizes) <= 0), "largest first"
    assert sizes[0] >= 500 and sizes[-1] <= 10 and sizes[-1] >= 3
    # A power law: log-size falls roughly linearly in log(rank + offset).
    slope = np.polyfit(np.log(np.arange(24) + 5.0), np.log(sizes - 3 + 1e-9), 1)[0]
    assert -3.3 < slope < -2.7
    with pytest.raises(ValueError):
        concept_sizes(10, 24)


def test_concept_names_distinct() -> None:
    names = concept_names(64)
    assert len(set(names)) == 64
    with pytest.raises(ValueError):
        concept_names(65)


def test_defaults_fit_a_cpu_quickstart() -> None:
    defaults = {
        name: p.default
        for name, p in inspect.signature(generate_demo_data).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    assert 2000 <= defaults["n_train"] <= 4000
    assert 8 <= -(-defaults["n_train"] // defaults["shard_size"]) <= 16
    assert defaults["image_size"] == 64 and defaults["n_eval_per_class"] == 20
    assert defaults["n_concepts"] == 24
