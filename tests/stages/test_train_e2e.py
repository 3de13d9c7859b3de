"""End to end: ``torchrun --nproc-per-node 2`` on CPU, shards and work directory in a moto S3 server.

A tiny open_clip model (inline config) trains through two phases (32 px, then 48 px) on demo shards
with long-tailed per-shard probabilities. One module-scoped reference run is shared by the tests.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import open_clip
import pytest
import torch

from dynamics.spec.loader import load_spec
from dynamics.stages.train import checkpoint as ckpt
from dynamics.stages.train.logs import ENV_KEYLOG
from dynamics.stages.train.model import register_config
from dynamics.stages.train.plan import plan_phases
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths
from tests.s3server import MotoServer
from tests.stages.test_train_support import (
    RUN,
    TINY_MODEL,
    keys_in_order,
    kill_tree,
    make_data,
    read_keylog,
    spec_dict,
    torchrun,
    write_spec,
    write_tables,
)

pytestmark = pytest.mark.slow

PHASE1_STEPS, PHASE2_STEPS = 24, 6  # 384 and 96 samples at global batch 16
RUN_TIMEOUT_S = 240


@dataclass(frozen=True)
class Bucket:
    """A bucket with demo shards, and the environment that reaches it."""

    uri: str
    env: dict[str, str]
    pattern: str
    n_samples: int


@dataclass(frozen=True)
class Run:
    """A finished training run."""

    workdir: str
    spec_path: str
    keylog: str
    log: str
    returncode: int

    @property
    def paths(self) -> RunPaths:
        return RunPaths.for_run(self.workdir, RUN)

    def final_uri(self, phase: int) -> str:
        plan = plan_phases(load_spec(self.spec_path), world_size=2)[phase]
        return ckpt.checkpoint_uri(self.paths, plan, plan.steps)


@pytest.fixture(scope="module")
def bucket(s3_server: MotoServer) -> Iterator[Bucket]:
    env = {
        "AWS_ENDPOINT_URL": s3_server.endpoint_url, "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            mp.delenv(name, raising=False)
        storage.clear_client_cache()
        name = f"train-{uuid.uuid4().hex[:12]}"
        storage.s3_client().create_bucket(Bucket=name)
        train = make_data(f"s3://{name}/data")
        yield Bucket(f"s3://{name}", env, train["pattern"], train["n_samples"])
    storage.clear_client_cache()


def _prepare(bucket: Bucket, tmp: Path, label: str) -> tuple[str, str, str]:
    workdir = f"{bucket.uri}/{label}"
    write_tables(bucket.pattern, RunPaths.for_run(workdir, RUN))
    # 2 loader workers per rank; checkpoints every 3 steps fall inside epochs (5 and 2 steps), so
    # a resume restores mid-epoch reader cursors and the worker <-> logical-reader rotation.
    spec = spec_dict(workdir, bucket.pattern, bucket.n_samples, workers=2, checkpointEvery=3)
    spec["train"]["phases"][0].update(samples=PHASE1_STEPS * 16, samplesPerEpoch=80, lr=1.0e-3)
    spec["train"]["phases"][1].update(samples=PHASE2_STEPS * 16, samplesPerEpoch=32, lr=5.0e-4)
    spec_path = write_spec(str(tmp / f"{label}.yaml"), spec)
    return workdir, spec_path, str(tmp / f"{label}-keys")


def _finish(proc: subprocess.Popen[bytes], log_path: str) -> str:
    try:
        proc.wait(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
    return Path(log_path).read_text(errors="replace")


def _run(bucket: Bucket, spec_path: str, keylog: str, log_path: str) -> tuple[int, str]:
    proc = torchrun(spec_path, 2, {**bucket.env, ENV_KEYLOG: keylog}, log_path=log_path,
                    start_new_session=True)
    text = _finish(proc, log_path)
    return proc.returncode, text


@pytest.fixture(scope="module")
def reference(bucket: Bucket, tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp = tmp_path_factory.mktemp("train-ref")
    workdir, spec_path, keylog = _prepare(bucket, tmp, "ref")
    rc, text = _run(bucket, spec_path, keylog, str(tmp / "ref.log"))
    return Run(workdir, spec_path, keylog, text, rc)


def _fresh_model(resolution: int) -> torch.nn.Module:
    return open_clip.create_model(register_config(TINY_MODEL), force_image_size=resolution,
                                  force_context_length=16)


def test_two_phase_run_trains_and_checkpoints(reference: Run, bucket: Bucket, tmp_path: Path) -> None:
    assert reference.returncode == 0, reference.log[-4000:]
    # Loader workers are shut down at each epoch's end: no "__del__" / "can only test a child process".
    assert "Traceback" not in reference.log, reference.log[-4000:]
    refs = ckpt.list_checkpoints(reference.paths, None)
    names = {(r.phase, r.step) for r in refs}
    assert {(0, PHASE1_STEPS), (1, PHASE2_STEPS)} <= names  # every phase's final is kept
    assert len([r for r in refs if (r.phase, r.step) not in {(0, PHASE1_STEPS), (1, PHASE2_STEPS)}]) \
        <= ckpt.KEEP_LAST

    marker = storage.read_json(reference.paths.train_marker)
    final = marker["final_checkpoint"]
    assert final == reference.final_uri(1)
    local = tmp_path / "final.pt"
    storage.download_file(final, str(local))
    model = _fresh_model(48)
    incompatible = open_clip.load_checkpoint(model, str(local))
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    payload = torch.load(local, map_location="cpu", weights_only=True)
    assert payload["phase"] == 1 and payload["step"] == PHASE2_STEPS and payload["samples_seen"] == 96

    # phase 1 ends with a 4x4 patch grid (+ class token), phase 2 with 6x6: weights carried over, resized
    first = ckpt.load(reference.final_uri(0), None)
    assert first["state_dict"]["visual.positional_embedding"].shape[0] == 17
    assert payload["state_dict"]["visual.positional_embedding"].shape[0] == 37

    events = storage.list_uris(reference.paths.tensorboard_dir())
    assert any("tfevents" in uri for uri in events)
    assert "step 24/24" in reference.log and "samples/s" in reference.log and "eta" in reference.log


def test_loss_decreases(reference: Run) -> None:
    assert reference.returncode == 0, reference.log[-4000:]
    losses = [rec["loss"] for rank in (0, 1) for (phase, _), rec in sorted(read_keylog(reference.keylog,
                                                                                       rank).items())
              if phase == 0]
    half = len(losses) // 2
    head = sum(losses[:8]) / 8
    tail = sum(losses[half:]) / len(losses[half:])
    assert tail < head - 0.1, (head, tail)


def test_finished_run_is_a_noop(reference: Run, bucket: Bucket, tmp_path: Path) -> None:
    assert reference.returncode == 0, reference.log[-4000:]
    before = ckpt.list_checkpoints(reference.paths, None)

    def train(spec_path: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([os.path.join(os.path.dirname(sys.executable), "dynamics"), "stage", "train",
                               "--spec", spec_path], env={**os.environ, **bucket.env}, capture_output=True,
                              text=True, timeout=120)

    result = train(reference.spec_path)
    assert result.returncode == 0, result.stderr
    assert "already finished" in result.stderr
    # The same run name with other training settings: its marker was made for another spec.
    other = write_spec(str(tmp_path / "other.yaml"), spec_dict(reference.workdir, bucket.pattern, bucket.n_samples))
    result = train(other)
    assert result.returncode == 2 and "different spec" in result.stderr, result.stderr
    assert ckpt.list_checkpoints(reference.paths, None) == before


def test_killed_run_resumes_with_the_same_samples(reference: Run, bucket: Bucket, tmp_path: Path) -> None:
    assert reference.returncode == 0, reference.log[-4000:]
    _, spec_path, keylog = _prepare(bucket, tmp_path, "killed")
    proc = torchrun(spec_path, 2, {**bucket.env, ENV_KEYLOG: keylog}, log_path=str(tmp_path / "k1.log"),
                    start_new_session=True)
    killed_at = _kill_after(proc, keylog, phase=0, step=10)
    assert killed_at[0] == 0 and 10 <= killed_at[1] < PHASE1_STEPS, killed_at  # mid-phase
    assert proc.returncode == -signal.SIGKILL

    rc, text = _run(bucket, spec_path, keylog, str(tmp_path / "k2.log"))
    assert rc == 0, text[-4000:]
    resumed_at = re.search(r"resuming from \S+ \(phase res32, step (\d+)/24\)", text)
    assert resumed_at, text[-4000:]
    assert int(resumed_at.group(1)) % 5, "expected a mid-epoch resume (5 steps per epoch)"
    for rank in (0, 1):
        resumed, uninterrupted = read_keylog(keylog, rank), read_keylog(reference.keylog, rank)
        assert keys_in_order(resumed) == keys_in_order(uninterrupted)
        assert max(resumed) == max(uninterrupted) == (1, PHASE2_STEPS)
        for step, rec in uninterrupted.items():
            assert resumed[step]["loss"] == pytest.approx(rec["loss"], abs=1e-4)
    # Every checkpoint both runs kept is byte-identical, rng_state included (issue 21 item 7: the data
    # loader drew its base seed from the restored default generator, a draw the uninterrupted run had
    # made at the epoch's start).
    killed_paths = RunPaths.for_run(f"{bucket.uri}/killed", RUN)
    ours = {(r.phase, r.step): r.uri for r in ckpt.list_checkpoints(killed_paths, None)}
    theirs = {(r.phase, r.step): r.uri for r in ckpt.list_checkpoints(reference.paths, None)}
    common = sorted(ours.keys() & theirs.keys())
    assert (0, PHASE1_STEPS) in common and (1, PHASE2_STEPS) in common, (ours, theirs)
    for key in common:
        if storage.read_bytes(ours[key]) != storage.read_bytes(theirs[key]):
            mine, ref = ckpt.load(ours[key], None), ckpt.load(theirs[key], None)
            differ = [k for k in ref if _differs(mine.get(k), ref[k])]
            pytest.fail(f"checkpoint {key} differs from the uninterrupted run's in {differ}")


def _differs(a: object, b: object) -> bool:
    """Whether two checkpoint values differ (tensors compared whole: their repr elides)."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.dtype != b.dtype or a.shape != b.shape or not torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() != b.keys() or any(_differs(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) != len(b) or any(_differs(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is not type(b) or a != b


def _kill_after(proc: subprocess.Popen[bytes], keylog: str, *, phase: int, step: int) -> tuple[int, int]:
    """SIGKILL torchrun and its trainers once rank 0 logged ``(phase, step)``."""
    path = Path(keylog) / "rank0.jsonl"
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists():
            seen = read_keylog(keylog, 0)
            if seen and max(seen) >= (phase, step):
                kill_tree(proc)
                return max(read_keylog(keylog, 0))
        time.sleep(0.02)
    pytest.fail(f"run ended or timed out before step {step}: rc={proc.poll()}")
