"""Corrupt data is named: kind, shard URL and member key in stats.json, the stage log and the report;
``data.maxCorruptFraction`` fails the stage above a threshold."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from specs import make_spec, write_spec

from dynamics.demo import write_test_shards
from dynamics.errors import DynamicsError
from dynamics.local.report import data_problem_lines
from dynamics.spec.fingerprint import run_paths
from dynamics.stages.common import storage_config
from dynamics.stages.embed.run import embed_part
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths

DYNAMICS = str(Path(sys.executable).parent / "dynamics")


@pytest.fixture
def shards(tmp_path: Path) -> dict:
    """Shard 0: a bad JPEG and a missing caption; 1: cut mid-member; 2: zero bytes; 3: not a tar."""
    data = write_test_shards(str(tmp_path / "data"), 2, 6, seed=5)
    (tmp_path / "data" / "00002.tar").write_bytes(b"")
    (tmp_path / "data" / "00003.tar").write_text("<html>403 Forbidden</html>\n" * 40)
    urls = [str(tmp_path / "data" / f"{i:05d}.tar") for i in range(4)]
    return {**data, "urls": urls, "pattern": str(tmp_path / "data" / "{00000..00003}.tar")}


def _embed(tmp_path: Path, shards: dict, **data: object) -> tuple[subprocess.CompletedProcess[str], RunPaths]:
    spec = make_spec(str(tmp_path / "runs"), shards["pattern"], approx=24, embed={"shardsPerPart": 4},
                     data=data)
    path = write_spec(tmp_path / "spec.yaml", spec)
    result = subprocess.run([DYNAMICS, "stage", "embed", "--spec", str(path), "--index", "0"],
                            capture_output=True, text=True, timeout=300, env=dict(os.environ))
    return result, run_paths(spec)


def test_each_problem_is_named_with_its_kind(tmp_path: Path, shards: dict) -> None:
    result, paths = _embed(tmp_path, shards)
    assert result.returncode == 0, result.stderr
    stats = storage.read_json(paths.embed_stats(0))
    named = {(p["kind"], p["shard"]) for p in stats["problems"]}
    urls = shards["urls"]
    assert {("corrupt_image", urls[0]), ("missing_caption", urls[0]), ("truncated_shard", urls[1]),
            ("empty_shard", urls[2]), ("not_a_tar", urls[3])} == named
    members = {p["kind"]: p["member"] for p in stats["problems"]}
    assert members["corrupt_image"] == f"{shards['corrupt_keys'][0]}.jpg"
    assert members["missing_caption"] == shards["missing_caption_keys"][0]
    assert members["truncated_shard"].startswith("after 00001")
    assert stats["skipped"] == {"corrupt_image": 1, "empty_shard": 1, "missing_caption": 1, "not_a_tar": 1,
                                "truncated_shard": 1}
    assert 0 < stats["corrupt_fraction"] < 1
    assert f"not_a_tar in {urls[3]}" in result.stderr and f"empty_shard in {urls[2]}" in result.stderr

    report = "\n".join(data_problem_lines(paths, None))
    assert "1 corrupt_image" in report and "1 not_a_tar" in report
    for kind, url in named:
        assert f"{kind}: {url}" in report


def test_corrupt_fraction_above_the_limit_fails_the_stage(tmp_path: Path, shards: dict) -> None:
    result, paths = _embed(tmp_path, shards, maxCorruptFraction=0.05)
    assert result.returncode != 0
    assert "data.maxCorruptFraction" in result.stderr and "Traceback" not in result.stderr
    assert not storage.exists(paths.embed_marker(0)) and not storage.exists(paths.embed_stats(0))


@pytest.fixture
def cut_part(tmp_path: Path) -> dict:
    """Five shards of 20 samples; the last is cut in the middle of its 11th sample (10 samples lost)."""
    data = write_test_shards(str(tmp_path / "data"), 5, 20, corrupt_image=False, missing_caption=False, seed=3)
    return {**data, "pattern": str(tmp_path / "data" / "{00000..00004}.tar")}


def _embed_part(tmp_path: Path, data: dict, **spec_data: object) -> RunPaths:
    """Embed part 0 in this process (a subprocess would import torch again: seconds on a busy CI)."""
    spec = make_spec(str(tmp_path / "runs"), data["pattern"], approx=100, embed={"shardsPerPart": 5},
                     data=spec_data)
    paths = run_paths(spec)
    embed_part(spec, paths, 0, storage_config(spec))
    return paths


def test_a_truncated_shard_counts_the_samples_it_lost(tmp_path: Path, cut_part: dict,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Issue 21 item 5: one shard cut at half lost 10 of the part's 100 samples (10%); it used to count as
    one sample (1.1%) and pass a 5% limit."""
    with pytest.raises(DynamicsError, match=r"10 of 100 samples \(10.0%\).*data.maxCorruptFraction"):
        _embed_part(tmp_path, cut_part, maxCorruptFraction=0.05)

    paths = _embed_part(tmp_path, cut_part)  # no limit: both counts reported
    assert "part 0: 10 of 100 samples lost" in caplog.text
    stats = storage.read_json(paths.embed_stats(0))
    assert stats["skipped"] == {"truncated_shard": 1}
    assert stats["samples"] == {"expected": 100, "lost": 10, "lost_in_unreadable_shards": 10, "skipped": 0,
                                "estimated_from_other_shards": [cut_part["urls"][4]]}
    assert stats["corrupt_fraction"] == pytest.approx(0.1)
    assert stats["shard_samples"] == {url: 20 for url in cut_part["urls"][:4]}  # the index: shards read whole
    report = "\n".join(data_problem_lines(paths, None))
    assert "1 truncated_shard" in report and "samples lost: 10 of 100 (10.0%" in report
