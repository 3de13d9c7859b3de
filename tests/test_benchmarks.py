"""Every benchmark runs to its one summary line at a tiny size, so none can break silently."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = {
    "bench_sampler.py": ["--n", "2000", "--shards", "4", "--k", "20"],
    "bench_scale.py": ["--n", "3000", "--k", "50", "--shard-size", "500", "--shards-per-part", "2"],
    "bench_cluster.py": ["--k", "300", "--d", "16", "--fit-n", "2000", "--fit-k", "10", "--niter", "2",
                         "--assign-n", "500"],
    "bench_embed.py": ["--images", "96", "--workers", "0", "--pixels-only"],
    "bench_loader.py": ["--sets", "384", "--shards", "2", "--per-shard", "8", "--batch", "4", "--repeats", "1"],
    "bench_train_step.py": ["--device", "cpu", "--model-config", "tiny", "--batch", "2", "--steps", "1",
                            "--warmup", "0", "--resolutions", "32", "--decode-images", "6"],
}
EXPECT = {
    "bench_sampler.py": "sampling epoch",
    "bench_scale.py": "bytes identical: True",
    "bench_cluster.py": "assign at K=",
    "bench_embed.py": "images/s",
    "bench_loader.py": "reduced_budget",
    "bench_train_step.py": "decode on device at 32 px",
}


def test_every_benchmark_is_listed() -> None:
    assert sorted(p.name for p in (ROOT / "benchmarks").glob("bench_*.py")) == sorted(TINY)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(TINY))
def test_benchmark_runs_at_tiny_size(script: str, tmp_path: Path) -> None:
    if script == "bench_loader.py":
        pytest.importorskip("open_clip_train.data", reason="bench_loader compares with open_clip_train (+ pandas)")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *TINY[script]], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and EXPECT[script] in lines[0], proc.stdout
