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
from dynamics.local.report import data_problem_lines
from dynamics.spec.fingerprint import run_paths
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
