"""FSDP2 vs DDP, sharded resume, export, resumeFrom and in-training eval: ``torchrun`` with 2 gloo processes.

Work directories live in a moto S3 server, so sharded checkpoints go through the staging and upload
path. Five short launches on the tiny model (two phases: 20 steps at 32 px, 4 at 48 px):

- ``ddp``: the reference (every mid-phase checkpoint kept: ``keepLast`` 10);
- ``fsdp``: the same run sharded (``keepLast`` 1);
- ``killed`` + its restart: FSDP, SIGKILLed mid-phase, resumed from its sharded checkpoint;
- ``from``: DDP in a fresh work directory with ``resumeFrom`` = the reference's step-12 checkpoint,
  with ``accumFreq: 2`` and ``gradCheckpointing`` (same gradients, so the same losses within float noise).
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import pytest
import torch

from dynamics import constants as C
from dynamics.demo import generate_demo_data
from dynamics.stages.train import checkpoint as ckpt
from dynamics.stages.train.export import export_checkpoint
from dynamics.stages.train.fsdp import shard_dir
from dynamics.stages.train.ineval import metrics_uri
from dynamics.stages.train.logs import ENV_KEYLOG
from dynamics.stages.train.model import register_config
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths
from tests.s3server import MotoServer
from tests.stages.test_train_support import (
    RUN,
    TINY_MODEL,
    keys_in_order,
    kill_tree,
    read_keylog,
    spec_dict,
    torchrun,
    write_spec,
    write_tables,
)

pytestmark = pytest.mark.slow

STEPS = (20, 4)
TIMEOUT_S = 240


@dataclass(frozen=True)
class Data:
    uri: str
    env: dict[str, str]
    pattern: str
    n_samples: int
    eval: dict[str, Any]


@dataclass(frozen=True)
class Launch:
    workdir: str
    keylog: str
    log: str
    returncode: int

    @property
    def paths(self) -> RunPaths:
        return RunPaths.for_run(self.workdir, RUN)

    def losses(self, rank: int = 0) -> dict[tuple[int, int], float]:
        return {k: r["loss"] for k, r in read_keylog(self.keylog, rank).items()}


@pytest.fixture(scope="module")
def data(s3_server: MotoServer) -> Iterator[Data]:
    env = {"AWS_ENDPOINT_URL": s3_server.endpoint_url, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            mp.delenv(name, raising=False)
        storage.clear_client_cache()
        bucket = f"fsdp-{uuid.uuid4().hex[:12]}"
        storage.s3_client().create_bucket(Bucket=bucket)
        manifest = generate_demo_data(f"s3://{bucket}/data", seed=0, n_concepts=12, n_train=600,
                                      n_eval_per_class=1, shard_size=50, image_size=64)
        train = manifest["train"]
        yield Data(f"s3://{bucket}", env, train["pattern"], train["n_samples"], manifest["eval"])
    storage.clear_client_cache()


def _spec(data: Data, tmp: Path, label: str, **train: Any) -> tuple[str, str]:
    workdir = f"{data.uri}/{label}"
    write_tables(data.pattern, RunPaths.for_run(workdir, RUN))
    doc = spec_dict(workdir, data.pattern, data.n_samples, workers=1, checkpointEvery=3, evalEvery=10,
                    **train)
    doc["train"]["phases"][0].update(samples=STEPS[0] * 16, samplesPerEpoch=80, lr=1.0e-3)
    doc["train"]["phases"][1].update(samples=STEPS[1] * 16, samplesPerEpoch=32, lr=5.0e-4)
    doc["eval"] = {"datasets": [{"name": "demo", "shards": data.eval["pattern"],
                                 "classnames": data.eval["classnames"], "templates": ["a photo of {c}."]}],
                   "batchSize": 16, "gpus": 0}
    return workdir, write_spec(str(tmp / f"{label}.yaml"), doc)


def _launch(data: Data, tmp: Path, label: str, *, kill_at: int | None = None, **train: Any) -> Launch:
    workdir, spec_path = _spec(data, tmp, label, **train)
    keylog, log_path = str(tmp / f"{label}-keys"), str(tmp / f"{label}.log")
    proc = torchrun(spec_path, 2, {**data.env, ENV_KEYLOG: keylog}, log_path=log_path, start_new_session=True)
    if kill_at is not None:
        _kill_after(proc, keylog, kill_at)
    try:
        proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
    return Launch(workdir, keylog, Path(log_path).read_text(errors="replace"), proc.returncode)


def _kill_after(proc: subprocess.Popen[bytes], keylog: str, step: int) -> None:
    path = Path(keylog) / "rank0.jsonl"
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and max(read_keylog(keylog, 0), default=(0, 0)) >= (0, step):
            kill_tree(proc)
            return
        time.sleep(0.02)
    pytest.fail(f"run ended before step {step}: rc={proc.poll()}")


@pytest.fixture(scope="module")
def runs(data: Data, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Launch]:
    tmp = tmp_path_factory.mktemp("fsdp")
    out = {"ddp": _launch(data, tmp, "ddp", keepLast=10),
           "fsdp": _launch(data, tmp, "fsdp", strategy="fsdp", keepLast=1)}
    first = _launch(data, tmp, "killed", kill_at=8, strategy="fsdp", keepLast=1)
    assert first.returncode != 0
    out["killed"] = _launch(data, tmp, "killed", strategy="fsdp", keepLast=1)
    start = ckpt.checkpoint_uri(out["ddp"].paths, PlanRef(0, "res32"), 12)
    # also under real DDP + gather_with_grad: accumulation and checkpointing keep the loss curve
    out["from"] = _launch(data, tmp, "from", resumeFrom=start, accumFreq=2, gradCheckpointing=True)
    return out


class PlanRef:
    """The two fields of a PhasePlan that ``checkpoint_uri`` reads."""

    def __init__(self, index: int, name: str) -> None:
        self.index, self.name = index, name


def _ok(run: Launch) -> None:
    assert run.returncode == 0, run.log[-4000:]


def test_fsdp_follows_the_ddp_loss_curve(runs: dict[str, Launch]) -> None:
    ddp, fsdp = runs["ddp"], runs["fsdp"]
    _ok(ddp)
    _ok(fsdp)
    for rank in (0, 1):
        assert keys_in_order(read_keylog(fsdp.keylog, rank)) == keys_in_order(read_keylog(ddp.keylog, rank))
        want, got = ddp.losses(rank), fsdp.losses(rank)
        assert sorted(got) == sorted(want) and len(want) == sum(STEPS)
        for step, loss in want.items():
            assert got[step] == pytest.approx(loss, abs=1e-4), step
    assert ddp.losses()[(0, STEPS[0])] < ddp.losses()[(0, 1)] - 0.05  # it trained


def test_sharded_checkpoints_kept_as_configured(runs: dict[str, Launch]) -> None:
    fsdp = runs["fsdp"]
    _ok(fsdp)
    refs = ckpt.list_checkpoints(fsdp.paths, None)
    assert [(r.phase, r.step) for r in refs] == [(0, STEPS[0]), (1, 3), (1, STEPS[1])]
    mid = ckpt.load(refs[1].uri, None)
    assert mid["sharded"] and not mid["state_dict"]
    names = {u.rsplit("/", 1)[1] for u in storage.list_uris(shard_dir(refs[1].uri))}
    assert {".metadata", "__0_0.distcp", "__1_0.distcp"} <= names
    every = storage.list_uris(fsdp.paths.checkpoints_dir())
    kept = [u for u in every if not u.endswith(C.OPEN_CLIP_CONFIG)]  # the model config lives beside them
    assert all(u.startswith(shard_dir(refs[1].uri)) or u.endswith(".pt") for u in kept), every
    assert not ckpt.load(refs[0].uri, None)["sharded"]


def test_killed_fsdp_run_resumes_exactly(runs: dict[str, Launch]) -> None:
    killed, fsdp = runs["killed"], runs["fsdp"]
    _ok(killed)
    resumed_at = re.search(r"resuming from \S+ \(phase res32, step (\d+)/20\)", killed.log)
    assert resumed_at and int(resumed_at.group(1)) >= 6, killed.log[-3000:]
    for rank in (0, 1):
        assert keys_in_order(read_keylog(killed.keylog, rank)) == keys_in_order(read_keylog(fsdp.keylog, rank))
        want, got = fsdp.losses(rank), killed.losses(rank)
        for step, loss in want.items():
            assert got[step] == pytest.approx(loss, abs=1e-5), step


def _fresh(resolution: int) -> torch.nn.Module:
    return open_clip.create_model(register_config(TINY_MODEL), force_image_size=resolution,
                                  force_context_length=16)


def test_export_consolidates_shards_into_an_open_clip_checkpoint(runs: dict[str, Launch], tmp_path: Path) -> None:
    fsdp = runs["fsdp"]
    _ok(fsdp)
    refs = ckpt.list_checkpoints(fsdp.paths, None)
    out = tmp_path / "export.pt"
    export_checkpoint(refs[1].uri, str(out), None)  # what `dynamics export-checkpoint URI -o FILE` runs
    model = _fresh(48)
    incompatible = open_clip.load_checkpoint(model, str(out))
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    final = _fresh(48)
    local = tmp_path / "final.pt"
    storage.download_file(refs[2].uri, str(local))
    open_clip.load_checkpoint(final, str(local))  # a phase's final FSDP checkpoint is a plain one
    moved = [n for n, p in model.state_dict().items() if not torch.equal(p, final.state_dict()[n])]
    assert moved  # step 3 vs step 4 weights: the export holds the trained step-3 weights, not a copy
    gap = max((p - final.state_dict()[n]).abs().max().item() for n, p in model.state_dict().items())
    assert gap < 0.05


def test_resume_from_starts_at_that_step(runs: dict[str, Launch]) -> None:
    started, ddp = runs["from"], runs["ddp"]
    _ok(started)
    assert re.search(r"resuming from s3://\S+/ddp/\S+step000000012\.pt \(phase res32, step 12/20\)",
                     started.log), started.log[-3000:]
    for rank in (0, 1):
        got, want = started.losses(rank), ddp.losses(rank)
        assert min(got) == (0, 13) and max(got) == (1, STEPS[1])
        for step, loss in got.items():
            assert loss == pytest.approx(want[step], abs=1e-5), step


def test_in_training_eval_writes_metrics(runs: dict[str, Launch]) -> None:
    for label in ("ddp", "fsdp"):
        run = runs[label]
        _ok(run)
        records = storage.read_json(metrics_uri(run.paths))
        assert [(r["phase"], r["step"]) for r in records] == [(0, 10), (0, 20), (1, 4)]
        for r in records:
            assert 0.0 <= r["metrics"]["demo/top1"] <= r["metrics"]["demo/top5"] <= 1.0
        assert "eval at phase res32 step 10: demo/top1" in run.log
    ddp, fsdp = (storage.read_json(metrics_uri(runs[k].paths)) for k in ("ddp", "fsdp"))
    assert [r["metrics"]["demo/top5"] for r in ddp] == pytest.approx([r["metrics"]["demo/top5"] for r in fsdp],
                                                                      abs=0.2)
