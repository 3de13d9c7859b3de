"""Issue 21 item 6 (local): two sweep points started together share their embeddings and clusters through
claims: one run computes each shared stage, the other says so and waits for its markers; both succeed."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from localrun import SUBMIT, local_env
from specs import spec_dict

from dynamics.demo import generate_demo_data
from dynamics.local.runner import ENV_UNTIL
from dynamics.storage import claims


def _spec(tmp_path: Path) -> Path:
    m = generate_demo_data(str(tmp_path / "demo"), seed=0, n_concepts=4, n_train=96, shard_size=24,
                           image_size=16, n_eval_per_class=1)
    data = spec_dict("runs", m["train"]["pattern"], approx=96, embed={"shardsPerPart": 4},
                     cluster={"k": 4, "trainSamples": 96, "iterations": 3})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow  # ~10 s on an idle box, ~50 s on a loaded one: two runners and one embed process
def test_two_runs_started_together_compute_each_shared_stage_once(tmp_path: Path) -> None:
    _spec(tmp_path)
    # Only the embed stage (cluster-fit and assign are claimed the same way); slowed a little so the second
    # run surely finds it claimed.
    env = {**local_env(), ENV_UNTIL: "embed", "DYNAMICS_EMBED_DELAY": "0.5"}
    runs = [subprocess.Popen([SUBMIT, "spec.yaml", "--local", "--set", f"name=p{i}", "--set",
                              f"sample.alpha={0.2 + i / 10}"], cwd=tmp_path, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in runs]
    for p, out in zip(runs, outs, strict=True):
        assert p.returncode == 0, out
        assert "Traceback" not in out
    embedded = [i for i in range(2) if (tmp_path / "runs" / f"p{i}" / "logs" / "embed-0.log").exists()]
    assert len(embedded) == 1, outs  # one embedding pass
    waiter = outs[1 - embedded[0]]
    assert "- embed: being computed by another run" in waiter and "waiting for its markers" in waiter, waiter
    assert "- embed: completed by another run, skipped" in waiter or "- embed: already complete" in waiter
    assert not any((tmp_path / "runs" / f"p{i}" / "logs" / "cluster-fit.log").exists() for i in range(2))
    shared = tmp_path / "runs" / "_shared"
    assert not list(shared.rglob(claims.CLAIM_NAME))  # released by their owners


def test_a_dead_runs_claim_is_taken_over_when_stale(tmp_path: Path) -> None:
    """A claim whose owner stopped renewing is taken over by the next run (here: after its lease)."""
    folder = str(tmp_path / "_shared" / "embed-x")
    dead = claims.try_claim(folder, claims.new_owner("dead-run"), now=time.time() - claims.LEASE_S - 5)
    assert dead is not None
    mine = claims.try_claim(folder, claims.new_owner("next-run"))
    assert mine is not None and claims.owner_label(mine.owner) == "next-run"
    # A rerun of the same run (it holds the run lock) takes its own dead attempt's claim at once.
    again = claims.try_claim(folder, claims.new_owner("next-run"))
    assert again is not None and again.owner != mine.owner
    assert os.path.exists(claims.claim_uri(folder))
