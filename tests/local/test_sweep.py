"""A sweep with ``--local``: an edited spec is refused, ``--replace`` redoes only the stale stages, and a
second run with ``--set`` reuses the first run's embeddings and clusters (verified by fingerprint)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from localrun import SUBMIT, local_env
from specs import spec_dict

from dynamics.demo import generate_demo_data


def _tiny_spec(tmp_path: Path) -> Path:
    m = generate_demo_data(str(tmp_path / "demo"), seed=0, n_concepts=6, n_train=240, shard_size=60,
                           image_size=32, n_eval_per_class=2)
    data = spec_dict("runs", m["train"]["pattern"], approx=240,
                     embed={"shardsPerPart": 4}, cluster={"k": 8, "trainSamples": 240})
    data["train"]["phases"] = [{"name": "p", "resolution": 32, "samples": 128, "batchPerGpu": 32, "lr": 1e-3}]
    data["eval"] = {"datasets": [{"name": "demo", "shards": m["eval"]["pattern"],
                                  "classnames": m["eval"]["classnames"], "templates": ["a {c}."]}],
                    "batchSize": 32, "gpus": 0}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _submit(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = subprocess.run([SUBMIT, "spec.yaml", "--local", *args], cwd=tmp_path, env=local_env(), text=True,
                            capture_output=True, timeout=600)
    return result.returncode, result.stdout + result.stderr


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_edit_refused_replace_redoes_downstream_and_sweep_reuses(tmp_path: Path) -> None:
    spec = _tiny_spec(tmp_path)
    code, out = _submit(tmp_path)
    assert code == 0, out
    run, shared = tmp_path / "runs" / "quickstart", tmp_path / "runs" / "_shared"
    before = _mtimes(shared)
    assert any(k.endswith("fit.done") for k in before) and any(k.endswith("part-00000.done") for k in before)

    data = yaml.safe_load(spec.read_text())
    data["sample"]["alpha"] = 0.5
    spec.write_text(yaml.safe_dump(data))
    code, out = _submit(tmp_path)
    assert code == 2, out
    assert "sample.alpha (0.2 -> 0.5)" in out and "invalidates scale, train, eval" in out and "--replace" in out
    assert "Traceback" not in out
    assert json.loads((run / "sample" / "report.json").read_text())["alpha"] == 0.2

    code, out = _submit(tmp_path, "--replace")
    assert code == 0, out
    for stage in ("embed", "cluster-fit", "assign"):
        assert f"- {stage}: already complete, skipped" in out
    for stage in ("scale", "train", "eval"):
        assert f"  {stage} complete in" in out
    assert _mtimes(shared) == before  # embeddings and clusters untouched
    assert json.loads((run / "sample" / "report.json").read_text())["alpha"] == 0.5
    assert (run / "train" / "checkpoints" / "open_clip_config.json").exists()
    assert "alpha: 0.5" in (run / "spec.yaml").read_text()

    code, out = _submit(tmp_path, "--set", "sample.alpha=1.0", "--set", "name=a10")
    assert code == 0, out
    for stage in ("embed", "cluster-fit", "assign"):
        assert f"- {stage}: already complete, skipped" in out
    assert _mtimes(shared) == before
    assert "alpha=1.0" in out
    assert json.loads((tmp_path / "runs" / "a10" / "sample" / "report.json").read_text())["alpha"] == 1.0
