"""open_clip_train parity options on the tiny model, in process: gradients, losses, retention, resumeFrom."""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import open_clip
import pytest
import torch

from dynamics.errors import DynamicsError
from dynamics.spec.loader import load_spec
from dynamics.stages.train import checkpoint as ckpt
from dynamics.stages.train.fsdp import shard_dir
from dynamics.stages.train.loop import compiled
from dynamics.stages.train.main import _explicit_start
from dynamics.stages.train.model import register_config
from dynamics.stages.train.step import Stepper, make_loss, siglip_init
from dynamics.storage.layout import RunPaths
from tests.stages.test_train_support import RUN, TINY_MODEL, spec_dict, write_spec

BATCH = 8


def _model(loss: str) -> torch.nn.Module:
    torch.manual_seed(0)
    extra = siglip_init() if loss == "siglip" else {}
    return open_clip.create_model(register_config(TINY_MODEL), force_image_size=32, force_context_length=16,
                                  output_dict=True, **extra)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, 3, 32, 32, generator=gen), torch.randint(1, 400, (BATCH, 16), generator=gen)


def grads(loss: str = "clip", *, accum: int = 1, checkpointing: bool = False,
          compiled: bool = False) -> tuple[float, dict[str, torch.Tensor], torch.nn.Module]:
    """One training step's loss and gradients on a fixed batch, and the module that ran the forward pass."""
    model = _model(loss)
    model.set_grad_checkpointing(checkpointing)
    forward = torch.compile(model) if compiled else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the step leaves the weights as they are
    stepper = Stepper(model, forward, optimizer, make_loss(loss, local_loss=True, gather_with_grad=True, rank=0,
                                                           world_size=1),
                      contextlib.nullcontext, accum_freq=accum)
    value = stepper(*_batch())
    return float(value), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, forward


def assert_close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], rel: float) -> None:
    """Same keys, each tensor within ``rel`` of the reference tensor's largest magnitude."""
    assert got.keys() == want.keys()
    for name, value in got.items():
        # float32 sums in another order: compare against the tensor's scale, not element by element
        scale = want[name].abs().max().item()
        assert (value - want[name]).abs().max().item() <= rel * scale + 1e-8, name


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_checkpointing_and_accumulation_give_the_same_gradients(loss: str) -> None:
    base_loss, base, _ = grads(loss)
    assert base and all(torch.isfinite(g).all() for g in base.values())
    assert base["logit_scale"].abs() > 0
    for kwargs in ({"checkpointing": True}, {"accum": 2}, {"accum": 4, "checkpointing": True}):
        value, got, _ = grads(loss, **kwargs)
        assert value == pytest.approx(base_loss, rel=1e-5), kwargs
        assert_close(got, base, rel=1e-5)


def test_siglip_model_has_its_bias() -> None:
    model = _model("siglip")
    assert float(model.logit_bias.detach()) == -10.0
    assert float(model.logit_scale.detach().exp()) == pytest.approx(10.0)


def _touch(paths: RunPaths, phase: int, name: str, step: int, *, sharded: bool = False) -> str:
    uri = f"{paths.checkpoints_dir()}/phase{phase:02d}-{name}-step{step:09d}.pt"
    Path(uri).parent.mkdir(parents=True, exist_ok=True)
    Path(uri).write_bytes(b"x")
    if sharded:
        Path(shard_dir(uri)).mkdir()
        for file in (".metadata", "__0_0.distcp", "__1_0.distcp"):
            (Path(shard_dir(uri)) / file).write_bytes(b"x")
    return uri


@pytest.mark.parametrize("keep_last", [0, 1, 3])
def test_retention_keeps_the_last_n_and_every_phase_final(tmp_path: Path, keep_last: int) -> None:
    paths = RunPaths.for_run(str(tmp_path), RUN)
    plans: Any = [SimpleNamespace(index=0, steps=12), SimpleNamespace(index=1, steps=6)]
    for step in (3, 6, 9, 12):
        _touch(paths, 0, "a", step, sharded=step != 12)
    for step in (2, 4):
        _touch(paths, 1, "b", step, sharded=True)
    ckpt.prune(paths, None, plans, keep_last)
    left = [(r.phase, r.step) for r in ckpt.list_checkpoints(paths, None)]
    middle = [(0, 3), (0, 6), (0, 9), (1, 2), (1, 4)]
    kept = middle[len(middle) - keep_last:] if keep_last else []
    assert left == sorted([(0, 12), *kept])
    for phase, name, step in [(0, "a", 3), (0, "a", 6), (0, "a", 9), (1, "b", 2), (1, "b", 4)]:
        shards = Path(shard_dir(f"{paths.checkpoints_dir()}/phase{phase:02d}-{name}-step{step:09d}.pt"))
        assert shards.is_dir() == ((phase, step) in kept)
        assert not shards.is_dir() or len(list(shards.iterdir())) == 3


def test_resume_from_must_exist(tmp_path: Path) -> None:
    spec_doc = spec_dict(str(tmp_path / "work"), str(tmp_path / "{0..1}.tar"), 100,
                         resumeFrom=str(tmp_path / "missing.pt"))
    spec = load_spec(write_spec(str(tmp_path / "s.yaml"), spec_doc))
    run: Any = SimpleNamespace(spec=spec, storage=None)
    with pytest.raises(DynamicsError, match=r"resumeFrom .* does not exist"):
        _explicit_start(run)
    spec_doc["train"]["resumeFrom"] = "latest"
    run.spec = load_spec(write_spec(str(tmp_path / "s.yaml"), spec_doc))
    assert _explicit_start(run) is None


def test_spec_rejects_accumulation_that_does_not_divide_the_batch(tmp_path: Path) -> None:
    from dynamics.errors import SpecError

    spec_doc = spec_dict(str(tmp_path / "work"), str(tmp_path / "{0..1}.tar"), 100, accumFreq=3)
    with pytest.raises(SpecError, match="accumFreq"):
        load_spec(write_spec(str(tmp_path / "s.yaml"), spec_doc))
    spec_doc["train"].update(accumFreq=1, evalEvery=5)
    with pytest.raises(SpecError, match="evalEvery"):
        load_spec(write_spec(str(tmp_path / "s.yaml"), spec_doc))
    spec_doc["train"].update(evalEvery=None, strategy="fsdp", precision="amp")
    with pytest.raises(SpecError, match="amp_bf16"):
        load_spec(write_spec(str(tmp_path / "s.yaml"), spec_doc))


def test_wandb_offline_writes_the_run_locally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    from dynamics.stages.train.wandb_report import WandbReport, wandb_dir

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    spec_doc = spec_dict(str(tmp_path / "work"), str(tmp_path / "{0..1}.tar"), 100,
                         wandb={"project": "dynamics-test", "mode": "online"})  # WANDB_MODE wins
    spec = load_spec(write_spec(str(tmp_path / "s.yaml"), spec_doc))
    paths = RunPaths.for_run(spec.storage.workdir, RUN)
    report = WandbReport(spec, paths, None)
    report.scalars("train", {"loss": 1.5}, 3)
    report.close()
    runs = list(Path(wandb_dir(paths)).rglob("offline-run-*"))
    assert runs and any(p.suffix == ".wandb" for p in runs[0].rglob("*")), runs


@pytest.mark.parametrize(("distributed", "checkpointing"), [(False, True), (True, False), (True, True)])
def test_compile_turns_the_ddp_optimizer_off_only_with_checkpointing(distributed: bool, checkpointing: bool) -> None:
    model = torch.nn.Linear(2, 2)
    with torch._dynamo.config.patch(optimize_ddp=True):  # restored afterwards
        out = compiled(model, distributed=distributed, checkpointing=checkpointing)
        assert isinstance(out, torch._dynamo.eval_frame.OptimizedModule) and out._orig_mod is model
        assert torch._dynamo.config.optimize_ddp is not (distributed and checkpointing)
