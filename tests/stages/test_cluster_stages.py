"""embed -> cluster-fit -> assign (two indexes) -> scale on a moto S3 server; kills and re-runs are harmless."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from specs import make_spec, write_spec

from dynamics import constants as C
from dynamics.core.sampler import ShardTable
from dynamics.demo import generate_demo_data
from dynamics.spec.fingerprint import run_paths
from dynamics.storage import objects as storage

DYNAMICS = str(Path(sys.executable).parent / "dynamics")
STAGES = [("embed", [0, 1]), ("cluster-fit", [None]), ("assign", [0, 1]), ("scale", [None])]


def _cmd(spec_path: Path, stage: str, index: int | None) -> list[str]:
    cmd = [DYNAMICS, "stage", stage, "--spec", str(spec_path)]
    return cmd + (["--index", str(index)] if index is not None else [])


def _run(spec_path: Path, stage: str, index: int | None) -> None:
    result = subprocess.run(_cmd(spec_path, stage, index), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def _artifacts(root: str) -> dict[str, bytes]:
    out = {}
    for uri in storage.list_uris(root):
        rel = uri[len(root):]
        data = storage.read_bytes(uri)
        if rel.endswith(f"/{C.RESOLVED_SPEC}"):  # the resolved spec names its own work dir
            continue
        if rel.endswith("fit.json"):  # its timings differ between runs by nature
            doc = json.loads(data)
            doc.pop("timings")
            data = json.dumps(doc).encode()
        out[rel] = data
    return out


@pytest.mark.slow
def test_pipeline_and_kill_rerun_identical(s3_bucket: str, tmp_path: Path) -> None:
    manifest = generate_demo_data(f"{s3_bucket}/demo", seed=1, n_concepts=8, n_train=480, shard_size=120,
                                  image_size=32, n_eval_per_class=1)
    pattern = manifest["train"]["pattern"]
    sections = {"embed": {"shardsPerPart": 2, "workers": 0}, "cluster": {"k": 12, "trainSamples": 400,
                                                                           "threshold": 0.95, "iterations": 8}}
    specs = {}
    for name in ("a", "b"):
        spec = make_spec(f"{s3_bucket}/{name}", pattern, approx=480, **sections)
        specs[name] = (spec, write_spec(tmp_path / f"{name}.yaml", spec))

    # a: uninterrupted.
    for stage, indexes in STAGES:
        for index in indexes:
            _run(specs["a"][1], stage, index)
    # b: every stage is killed once mid-way, then re-run; scale also loses its marker after finishing.
    rng = np.random.default_rng(7)
    for stage, indexes in STAGES:
        for index in indexes:
            proc = subprocess.Popen(_cmd(specs["b"][1], stage, index), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(float(rng.uniform(1.0, 4.0)))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            _run(specs["b"][1], stage, index)
    spec_b = specs["b"][0]
    paths_b = run_paths(spec_b)
    storage.delete(paths_b.scale_marker)
    _run(specs["b"][1], "scale", None)

    # Whole work dirs: embed/cluster artifacts live fingerprint-addressed under _shared/.
    a = _artifacts(f"{s3_bucket}/a")
    b = _artifacts(f"{s3_bucket}/b")
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []

    spec, paths = specs["a"][0], run_paths(specs["a"][0])
    kept = storage.read_npy(paths.kept)
    sizes = storage.read_npy(paths.sizes)
    probs = storage.read_npy(paths.probs)
    assert kept.shape[0] == sizes.shape[0] == probs.shape[0] <= 12
    assert sizes.sum() == 480
    np.testing.assert_allclose(np.linalg.norm(kept, axis=1), 1.0, rtol=1e-5)
    report = storage.read_json(paths.report)
    assert report["N"] == 480 and abs(report["expected_per_epoch"] - 240) < kept.shape[0]
    assert storage.read_bytes(paths.plot)[:8] == b"\x89PNG\r\n\x1a\n"
    # Per-shard tables: every sample of every shard, with its cluster's probability.
    total = 0
    for shard in range(spec.n_shards):
        table = ShardTable.from_bytes(storage.read_bytes(paths.shard_table(shard)))
        assert table.clusters is not None
        np.testing.assert_allclose(table.probs, probs[table.clusters].astype(np.float32))
        total += len(table)
    assert total == 480
    # The reference fork's format: one {__key__: probability} object covering every sample.
    out = f"{s3_bucket}/export/probs.json"
    result = subprocess.run([DYNAMICS, "export-probabilities", str(specs["a"][1]), "-o", out],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    exported = json.loads(storage.read_bytes(out))
    assert len(exported) == 480
    table0 = ShardTable.from_bytes(storage.read_bytes(paths.shard_table(0)))
    assert exported[table0.keys[0]] == round(float(probs[table0.clusters[0]]), 6)
    # By run name: the resolved spec the run left in its work directory.
    storage.write_bytes(paths.spec, specs["a"][1].read_bytes())
    by_name = subprocess.run([DYNAMICS, "export-probabilities", spec.name, "--workdir", f"{s3_bucket}/a",
                              "-o", f"{s3_bucket}/export/by-name.json"], capture_output=True, text=True, timeout=120)
    assert by_name.returncode == 0, by_name.stderr
    assert storage.read_bytes(f"{s3_bucket}/export/by-name.json") == storage.read_bytes(out)


def test_stage_before_its_input_is_a_clear_error(s3_bucket: str, tmp_path: Path) -> None:
    spec = make_spec(f"{s3_bucket}/runs", f"{s3_bucket}/data/{{00000..00001}}.tar", approx=10)
    spec_path = write_spec(tmp_path / "spec.yaml", spec)
    for stage, index in (("cluster-fit", None), ("assign", 0), ("scale", None)):
        result = subprocess.run(_cmd(spec_path, stage, index), capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert "stage is not complete: missing s3://" in result.stderr and "fix: run" in result.stderr
    assert storage.list_uris(f"{s3_bucket}/runs") == []


def test_shard_table_roundtrip_through_storage(s3_bucket: str) -> None:
    table = ShardTable.from_keys(["a", "b"], np.array([0.25, 1.5], np.float32), clusters=np.array([0, 1]))
    storage.write_bytes(f"{s3_bucket}/t.npz", table.to_bytes())
    back = ShardTable.from_bytes(storage.read_bytes(f"{s3_bucket}/t.npz"))
    assert back.keys == ("a", "b") and back.probs.tolist() == [0.25, 1.5]
    assert io.BytesIO(table.to_bytes()).getvalue() == storage.read_bytes(f"{s3_bucket}/t.npz")
