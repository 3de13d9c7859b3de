"""``train.compile``: the trainer's torch.compile (inductor, CPU) trains as the eager trainer does.

One module-scoped pair of single-process runs of the real trainer (``dynamics stage train`` in
process, three steps of the tiny model) with ``compile`` off and on, and a third compiled run that
resumes from the compiled run's mid-phase checkpoint, plus one compiled step's gradients against
eager ones. Inductor (the trainer's backend) builds C++ kernels with the system compiler; its cache
lives in pytest's cache directory, so only the first run on a checkout (and CI) pays the build: about
two minutes on two shared cores, half a minute with the cache warm.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import pytest
import torch
from torch._dynamo.eval_frame import OptimizedModule
from torch._dynamo.utils import counters

from dynamics.spec.loader import load_spec
from dynamics.stages.train import checkpoint as ckpt
from dynamics.stages.train import loop
from dynamics.stages.train.logs import ENV_KEYLOG
from dynamics.stages.train.main import main
from dynamics.stages.train.model import register_config
from dynamics.stages.train.plan import plan_phases
from dynamics.stages.train.step import Stepper
from dynamics.storage.layout import RunPaths
from tests.stages.test_train_parity import assert_close, grads
from tests.stages.test_train_support import (
    RUN,
    TINY_MODEL,
    make_data,
    read_keylog,
    spec_dict,
    write_spec,
    write_tables,
)

pytestmark = [
    pytest.mark.slow,
    # Inductor's CPU kernels are C++ built by the system compiler (the trainer image installs g++).
    pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="needs a C++ compiler"),
]

STEPS, BATCH, LR = 3, 8, 5.0e-3
PHASE = {"name": "res32", "resolution": 32, "samples": STEPS * BATCH, "samplesPerEpoch": STEPS * BATCH,
         "batchPerGpu": BATCH, "lr": LR, "warmup": 1}


@dataclass(frozen=True)
class Run:
    """A finished in-process training run: losses and keys per step, dynamo's graphs and breaks, checkpoints."""

    paths: RunPaths
    spec_path: str
    losses: dict[int, float]
    keys: dict[int, list[str]]
    graphs: int
    breaks: int
    forwards: list[torch.nn.Module]

    def weights(self, step: int) -> dict[str, torch.Tensor]:
        """The ``state_dict`` of the checkpoint after ``step`` steps."""
        return ckpt.load(self.uri(step), None)["state_dict"]

    def uri(self, step: int) -> str:
        """The checkpoint after ``step`` steps."""
        plan = plan_phases(load_spec(self.spec_path), world_size=1)[0]
        return ckpt.checkpoint_uri(self.paths, plan, step)


@pytest.fixture(scope="module")
def inductor_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Inductor's compiled kernels in pytest's cache (kept between runs), not the user's /tmp cache."""
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    root = cache.mkdir("torchinductor") if cache is not None else tmp_path_factory.mktemp("torchinductor")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCHINDUCTOR_CACHE_DIR", str(root))
        yield


def _train(tmp: Path, pattern: str, n_samples: int, **train: Any) -> Run:
    workdir = tmp / "work"
    paths = RunPaths.for_run(str(workdir), RUN)
    write_tables(pattern, paths)
    spec = spec_dict(str(workdir), pattern, n_samples, procsPerNode=1, workers=0, checkpointEvery=2,
                     phases=[PHASE], **train)
    spec_path = write_spec(str(tmp / "spec.yaml"), spec)
    counters.clear()
    forwards: list[torch.nn.Module] = []

    def stepper(model: torch.nn.Module, wrapped: torch.nn.Module, *args: Any) -> Stepper:
        forwards.append(wrapped)
        return Stepper(model, wrapped, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV_KEYLOG, str(tmp / "keys"))
        mp.setattr(loop, "Stepper", stepper)
        assert main(["--spec", spec_path]) == 0
    log = read_keylog(str(tmp / "keys"), 0)
    return Run(paths=paths, spec_path=spec_path, losses={s: r["loss"] for (_, s), r in log.items()},
               keys={s: r["keys"] for (_, s), r in log.items()}, graphs=counters["stats"]["unique_graphs"],
               breaks=sum(counters["graph_break"].values()), forwards=forwards)


@pytest.fixture(scope="module")
def runs(inductor_cache: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Eager, compiled, and compiled resumed from the compiled run's step-2 checkpoint."""
    train = make_data(str(tmp_path_factory.mktemp("data")), n_train=120, shard_size=40)
    pattern, n = train["pattern"], train["n_samples"]
    eager = _train(tmp_path_factory.mktemp("eager"), pattern, n, compile=False)
    compiled = _train(tmp_path_factory.mktemp("compiled"), pattern, n, compile=True)
    resumed = _train(tmp_path_factory.mktemp("resumed"), pattern, n, compile=True, resumeFrom=compiled.uri(2))
    return {"eager": eager, "compiled": compiled, "resumed": resumed}


def _model() -> torch.nn.Module:
    return open_clip.create_model(register_config(TINY_MODEL), force_image_size=32, force_context_length=16,
                                  output_dict=True)


def _start_weights(spec_path: str) -> dict[str, torch.Tensor]:
    """The phase's initial weights, drawn as the trainer draws them (spec seed)."""
    torch.manual_seed(load_spec(spec_path).train.seed)
    return _model().state_dict()


def _norm(tensors: dict[str, torch.Tensor]) -> float:
    return float(torch.cat([t.flatten() for t in tensors.values()]).norm())


def test_compile_option_compiles_and_trains_like_eager(runs: dict[str, Run]) -> None:
    eager, compiled = runs["eager"], runs["compiled"]
    # the option is what compiles: off, dynamo captures nothing
    assert eager.graphs == 0 and not isinstance(eager.forwards[0], OptimizedModule)
    assert compiled.graphs >= 1 and isinstance(compiled.forwards[0], OptimizedModule)
    assert compiled.breaks == 0  # the whole forward is one graph
    assert sorted(compiled.losses) == list(range(1, STEPS + 1))
    assert compiled.keys == eager.keys
    for step, loss in eager.losses.items():
        assert compiled.losses[step] == pytest.approx(loss, rel=1e-5), step
    # AdamW turns float noise in near-zero gradients (attention's key bias) into lr-sized steps, so the
    # weights are compared as a whole: the eager-compiled gap against how far training moved them.
    start = _start_weights(eager.spec_path)
    final_eager, final_compiled = eager.weights(STEPS), compiled.weights(STEPS)
    moved = _norm({k: final_eager[k] - v for k, v in start.items()})
    assert moved > 0
    assert _norm({k: final_compiled[k] - v for k, v in final_eager.items()}) <= 1e-2 * moved


def test_compiled_checkpoint_loads_into_open_clip_and_resumes(runs: dict[str, Run]) -> None:
    compiled, resumed = runs["compiled"], runs["resumed"]
    for step in (2, STEPS):
        weights = compiled.weights(step)
        assert not [k for k in weights if "_orig_mod" in k or k.startswith("module.")]
        model = _model()
        open_clip.load_checkpoint(model, compiled.uri(step))  # strict: every key, no prefix
        assert_close(model.state_dict(), weights, rel=0.0)
    assert isinstance(resumed.forwards[0], OptimizedModule)  # its graph is the compiled run's, reused
    assert sorted(resumed.losses) == [STEPS]  # resumed after step 2
    assert resumed.losses[STEPS] == pytest.approx(compiled.losses[STEPS], rel=1e-6)
    assert_close(resumed.weights(STEPS), compiled.weights(STEPS), rel=1e-6)


def test_compiled_step_gives_eager_gradients(inductor_cache: None) -> None:
    base_loss, base, _ = grads(compiled=False)
    value, got, forward = grads(compiled=True)
    assert isinstance(forward, OptimizedModule)
    assert value == pytest.approx(base_loss, rel=1e-6)
    assert base["logit_scale"].abs() > 0
    assert_close(got, base, rel=1e-5)
