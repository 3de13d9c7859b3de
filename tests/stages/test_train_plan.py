"""Step/epoch arithmetic, checkpoint bookkeeping and model helpers of the train stage (fast, no torchrun)."""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import torch

from dynamics.errors import DynamicsError
from dynamics.spec.loader import load_spec
from dynamics.spec.model import RunSpec
from dynamics.stages.train import checkpoint as ckpt
from dynamics.stages.train.model import create_model, load_weights, param_groups, register_config
from dynamics.stages.train.plan import PASS_STRIDE, plan_phases, sampler_epoch_of_pass, worker_quota
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths
from tests.stages.test_train_support import RUN, TINY_MODEL, spec_dict

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "datacomp-dfn-vitb16.yaml"


def test_reference_recipe_plan() -> None:
    spec = load_spec(str(EXAMPLE))
    p1, p2 = plan_phases(spec, world_size=8)
    assert (p1.global_batch, p2.global_batch) == (28_000, 8_000)
    assert p1.steps == 45_715 and p1.samples >= 1_280_000_000  # rounded up to whole global batches
    assert p1.epochs == 6 and p1.steps_per_epoch == 7_620
    assert p2.steps == 16_000 and p2.epochs == 1
    assert p2.first_sampler_epoch == 6  # phase 2 draws new subsets
    assert p1.epoch_steps(5) == range(38_100, 45_715)
    assert p1.sampler_epoch(p1.epoch_of(45_714)) == 5


@pytest.mark.parametrize("workers", [1, 2, 3, 6])
@pytest.mark.parametrize("steps", [range(0, 10), range(7, 8), range(3, 3), range(5, 29)])
def test_worker_quotas_cover_every_step(workers: int, steps: range) -> None:
    quotas = [worker_quota(steps, workers, w) for w in range(workers)]
    assert sum(quotas) == len(steps)
    assert quotas == [sum(1 for s in steps if s % workers == w) for w in range(workers)]


def test_pass_epochs_never_collide_with_plain_epochs() -> None:
    assert sampler_epoch_of_pass(3, 0) == 3
    assert sampler_epoch_of_pass(3, 1) == 3 + PASS_STRIDE


def _tiny_spec(workdir: str = "/unused") -> RunSpec:
    return RunSpec.model_validate(spec_dict(workdir, "x/{0..3}.tar", 600))


def _refs(paths: RunPaths, phases: list[tuple[int, str, int]]) -> list[str]:
    plans = plan_phases(_tiny_spec(), world_size=2)
    uris = []
    for index, _name, step in phases:
        uri = ckpt.checkpoint_uri(paths, plans[index], step)
        ckpt.save(uri, {"format": ckpt.FORMAT, "phase": index, "step": step}, None)
        uris.append(uri)
    return uris


def test_latest_checkpoint_skips_unreadable_files(tmp_path: Path) -> None:
    paths = RunPaths.for_run(str(tmp_path), RUN)
    assert ckpt.load_latest(paths, None) is None
    uris = _refs(paths, [(0, "res32", 12), (0, "res32", 4), (1, "res48", 3)])
    assert [r.uri for r in ckpt.list_checkpoints(paths, None)] == [uris[1], uris[0], uris[2]]
    ref, payload = ckpt.load_latest(paths, None)
    assert (ref.phase, ref.step, payload["step"]) == (1, 3, 3)
    storage.write_bytes(uris[2], b"not a zip archive")  # e.g. a copy truncated by a tool
    ref, _ = ckpt.load_latest(paths, None)
    assert (ref.phase, ref.step) == (0, 12)


def test_prune_keeps_phase_finals_and_the_newest(tmp_path: Path) -> None:
    paths = RunPaths.for_run(str(tmp_path), RUN)
    plans = plan_phases(_tiny_spec(), world_size=2)
    assert (plans[0].steps, plans[1].steps) == (12, 6)
    _refs(paths, [(0, "res32", s) for s in (4, 8, 12)] + [(1, "res48", s) for s in (2, 4)])
    ckpt.prune(paths, None, plans)
    left = [(r.phase, r.step) for r in ckpt.list_checkpoints(paths, None)]
    assert ckpt.KEEP_LAST == 2
    assert left == [(0, 12), (1, 2), (1, 4)]


def test_inline_config_and_resized_weights() -> None:
    spec = _tiny_spec()
    small = create_model(spec.train, 32, torch.device("cpu"))
    large = create_model(spec.train, 48, torch.device("cpu"))
    assert small.visual.positional_embedding.shape[0] == 17 and large.visual.positional_embedding.shape[0] == 37
    load_weights(large, small.state_dict())  # phase 2 starts from phase 1's weights
    assert torch.equal(large.visual.conv1.weight, small.visual.conv1.weight)
    assert register_config(TINY_MODEL) == register_config(dict(TINY_MODEL))  # registered once
    with pytest.raises(DynamicsError, match="missing"):
        load_weights(large, {"visual.conv1.weight": small.visual.conv1.weight})
    no_decay, decay = param_groups(small, 0.2)
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.2
    assert any(p is small.logit_scale for p in no_decay["params"])
    assert any(p is small.visual.conv1.weight for p in decay["params"])
    assert open_clip.get_model_config(register_config(TINY_MODEL))["embed_dim"] == 32



def test_missing_sampling_tables_fail_with_a_fix(tmp_path: Path) -> None:
    from dynamics.stages.train.main import main
    from tests.stages.test_train_support import write_spec

    spec_path = write_spec(str(tmp_path / "spec.yaml"), spec_dict(str(tmp_path / "work"), "x/{0..3}.tar", 600))
    with pytest.raises(DynamicsError, match="scale stage"):
        main(["--spec", spec_path])
