"""The embed stage against a real S3 endpoint (moto server on loopback)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from specs import make_spec, write_spec

from dynamics.demo import write_test_shards
from dynamics.spec.fingerprint import run_paths
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths

DYNAMICS = str(Path(sys.executable).parent / "dynamics")


def _embed(spec_path: Path, index: int, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DYNAMICS, "stage", "embed", "--spec", str(spec_path), "--index", str(index)],
                          capture_output=True, text=True, timeout=300, env=env or dict(os.environ))


def _dataset(bucket: str, n_shards: int = 4, per_shard: int = 10) -> dict:
    return write_test_shards(f"{bucket}/data", n_shards, per_shard, seed=3)


def _part_keys(paths: RunPaths, part: int) -> list[str]:
    table = pq.read_table(io.BytesIO(storage.read_bytes(paths.embed_keys(part))))
    return table.column("key").to_pylist()


def test_embed_covers_every_good_sample_once(s3_bucket: str, tmp_path: Path) -> None:
    expected = _dataset(s3_bucket)
    spec = make_spec(f"{s3_bucket}/runs", expected["pattern"], approx=40,
                     embed={"shardsPerPart": 1, "workers": 2, "batchSize": 3})
    spec_path = write_spec(tmp_path / "spec.yaml", spec)
    paths = run_paths(spec)
    skipped: dict[str, int] = {}
    keys: list[str] = []
    for part in range(4):
        result = _embed(spec_path, part)
        assert result.returncode == 0, result.stderr
        assert "images/s" in result.stderr and "ETA" in result.stderr
        stats = storage.read_json(paths.embed_stats(part))
        for reason, n in stats["skipped"].items():
            skipped[reason] = skipped.get(reason, 0) + n
        vectors = storage.read_npy(paths.embed_vectors(part))
        part_keys = _part_keys(paths, part)
        assert vectors.dtype == np.float16 and vectors.shape == (len(part_keys), spec.embed.pixels_size ** 2 * 3)
        np.testing.assert_allclose(np.linalg.norm(vectors.astype(np.float32), axis=1), 1.0, atol=2e-3)
        assert storage.exists(paths.embed_marker(part))
        keys += part_keys
    good = [k for k in expected["keys"] if k not in expected["corrupt_keys"]]
    assert sorted(keys) == sorted(good) and len(keys) == len(set(keys))
    assert skipped == expected["stats"]


def test_killed_part_reruns_to_identical_outputs(s3_bucket: str, tmp_path: Path) -> None:
    expected = _dataset(s3_bucket, n_shards=6, per_shard=12)
    common = {"embed": {"shardsPerPart": 6, "workers": 0, "batchSize": 2}}
    a = make_spec(f"{s3_bucket}/a", expected["pattern"], approx=72, **common)
    b = make_spec(f"{s3_bucket}/b", expected["pattern"], approx=72, **common)
    pa_, pb = run_paths(a), run_paths(b)
    assert _embed(write_spec(tmp_path / "a.yaml", a), 0).returncode == 0

    env = dict(os.environ, DYNAMICS_PROGRESS_SECONDS="0", DYNAMICS_EMBED_DELAY="0.3")
    proc = subprocess.Popen([DYNAMICS, "stage", "embed", "--spec", str(write_spec(tmp_path / "b.yaml", b)),
                             "--index", "0"], stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if "images embedded" in line and "shards 0/6" not in line:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # Killed mid-part: nothing of the part is visible, so no later stage can take it as done.
    assert storage.list_uris(pb.embed_dir()) == []

    assert _embed(tmp_path / "b.yaml", 0).returncode == 0
    for name in ("embed_vectors", "embed_keys", "embed_stats", "embed_marker"):
        assert storage.read_bytes(getattr(pa_, name)(0)) == storage.read_bytes(getattr(pb, name)(0)), name


def test_rerun_of_complete_part_does_nothing(s3_bucket: str, tmp_path: Path) -> None:
    expected = _dataset(s3_bucket, n_shards=1, per_shard=6)
    spec = make_spec(f"{s3_bucket}/runs", expected["pattern"], approx=6)
    spec_path = write_spec(tmp_path / "spec.yaml", spec)
    assert _embed(spec_path, 0).returncode == 0
    paths = run_paths(spec)
    before = storage.s3_client().head_object(**dict(zip(("Bucket", "Key"), storage.split_s3(paths.embed_vectors(0)),
                                                        strict=True)))["LastModified"]
    result = _embed(spec_path, 0)
    assert result.returncode == 0 and "already complete" in result.stderr
    after = storage.s3_client().head_object(**dict(zip(("Bucket", "Key"), storage.split_s3(paths.embed_vectors(0)),
                                                       strict=True)))["LastModified"]
    assert before == after


@pytest.mark.parametrize("case", ["missing-bucket", "no-shards", "bad-credentials"])
def test_clear_errors_leave_nothing(case: str, s3_bucket: str, s3_env, tmp_path: Path) -> None:
    expected = _dataset(s3_bucket, n_shards=1, per_shard=6)
    pattern, workdir = expected["pattern"], f"{s3_bucket}/runs"
    env = dict(os.environ)
    if case == "missing-bucket":
        workdir = "s3://no-such-bucket-dynamics/runs"
        pattern = "s3://no-such-bucket-dynamics/data/{00000..00001}.tar"
    elif case == "no-shards":
        pattern = f"{s3_bucket}/nothing-here/{{00000..00003}}.tar"
    spec = make_spec(workdir, pattern, approx=6)
    spec_path = write_spec(tmp_path / "spec.yaml", spec)
    if case == "bad-credentials":
        s3_env.set_auth(True)
        env["AWS_SECRET_ACCESS_KEY"] = "wrong-secret-value"
        env["AWS_ACCESS_KEY_ID"] = "AKIAWRONGKEY0000"
    try:
        result = _embed(spec_path, 0, env)
    finally:
        if case == "bad-credentials":
            s3_env.set_auth(False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, result.stderr
    assert "s3://" in error[0]
    assert "fix:" in result.stderr
    assert "wrong-secret-value" not in result.stderr
    if case != "missing-bucket":
        assert storage.list_uris(f"{s3_bucket}/runs") == []
