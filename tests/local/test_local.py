"""`dynamics-submit --local`: the quickstart end to end, killed mid-training and resumed; failures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from localrun import SUBMIT, local_env

from dynamics.demo import generate_demo_data

ROOT = Path(__file__).resolve().parents[2]


def _quickstart(tmp_path: Path) -> Path:
    generate_demo_data(str(tmp_path / "demo-data"), seed=0)
    shutil.copy(ROOT / "examples" / "quickstart.yaml", tmp_path / "quickstart.yaml")
    return tmp_path / "quickstart.yaml"


def _wait_for_checkpoint(run_dir: Path, proc: subprocess.Popen[str], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    ckpts = run_dir / "train" / "checkpoints"
    while time.monotonic() < deadline:
        if ckpts.is_dir() and any(ckpts.glob("*.pt")):
            return
        assert proc.poll() is None, "the run ended before the trainer wrote a checkpoint"
        time.sleep(0.5)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.slow
def test_quickstart_killed_in_training_resumes_and_completes(tmp_path: Path) -> None:
    spec = _quickstart(tmp_path)
    run_dir = tmp_path / "runs" / "quickstart"
    first = subprocess.Popen([SUBMIT, str(spec), "--local"], cwd=tmp_path, env=local_env(), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    _wait_for_checkpoint(run_dir, first)
    os.killpg(first.pid, signal.SIGKILL)  # the runner, torchrun and its workers, all at once
    first.wait()
    assert not (run_dir / "train" / "train.done").exists()

    second = subprocess.run([SUBMIT, str(spec), "--local"], cwd=tmp_path, env=local_env(), text=True,
                            capture_output=True, timeout=1200)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out
    for stage in ("embed", "cluster-fit", "assign", "scale"):
        assert f"- {stage}: already complete, skipped" in out
    train_log = (run_dir / "logs" / "train-0.log").read_text()  # logs live in the (local) work dir
    assert not (tmp_path / ".dynamics").exists()
    assert "resum" in train_log.lower(), train_log[-2000:]

    for marker in ("sample/scale.done", "train/train.done", "eval/eval.done"):
        assert (run_dir / marker).exists(), marker
    shared = tmp_path / "runs" / "_shared"  # embed/cluster artifacts, addressed by fingerprint
    assert len(list(shared.glob("embed-*/embed/part-00000.done"))) == 1
    assert len(list(shared.glob("cluster-*/cluster/fit.done"))) == 1
    report = json.loads((run_dir / "sample" / "report.json").read_text())
    assert report["N"] == 3000
    # Beside the checkpoints: the model as trained last (phase 2's 48 px, not the config's 32).
    config = json.loads((run_dir / "train" / "checkpoints" / "open_clip_config.json").read_text())["model_cfg"]
    assert config["vision_cfg"]["image_size"] == 48 and config["text_cfg"]["context_length"] == 16
    assert (run_dir / "sample" / "cluster_sizes.png").read_bytes()[:4] == b"\x89PNG"
    results = json.loads((run_dir / "eval" / "results.json").read_text())["datasets"]["demo"]
    assert results["n"] == 480
    assert results["top1"] > 3 * results["chance"], results["top1"]
    assert results["head_top1"] is not None and results["tail_top1"] is not None
    assert "zero-shot evaluation" in out and "top-1" in out and "samples seen" in out


def test_failing_stage_stops_with_its_log(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    data["data"]["shards"] = "nowhere/{00000..00003}.tar"
    data["train"]["procsPerNode"] = 1
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(data))
    early = subprocess.run([SUBMIT, "spec.yaml", "--local"], cwd=tmp_path, env=local_env(), text=True,
                           capture_output=True, timeout=300)
    # Missing shards are found before any work...
    assert early.returncode == 2 and "nowhere/00000.tar does not exist" in early.stderr, early.stderr
    assert not (tmp_path / "runs").exists()
    # ...and, checks skipped, by the stage, whose summary starts with the cause.
    result = subprocess.run([SUBMIT, "spec.yaml", "--local", "--offline"], cwd=tmp_path, env=local_env(), text=True,
                            capture_output=True, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "stage 'embed' failed" in out
    assert "cause: error: shard pattern 'nowhere/" in out, out
    assert "Last log lines" in out and "error:" in out and "nowhere/" in out
    assert "Traceback" not in out
    assert not any((tmp_path / "runs").rglob("embed/*.done"))
