"""Checkpoint bytes depend on content only (issue 21 item 7): a resumed run's payload holds an optimizer
state loaded from a checkpoint, an uninterrupted run's one built in memory; the files must be equal."""

from __future__ import annotations

import io

import torch

from dynamics.stages.train import checkpoint as ckpt
from dynamics.stages.train.data import loader_seed


def _trained() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.ones(4, 3)).sum().backward()
    opt.step()
    return model, opt


def _bytes(payload: dict, tmp: str) -> bytes:
    ckpt.save(tmp, payload, None)
    with open(tmp, "rb") as fh:
        return fh.read()


def test_a_restored_optimizer_state_saves_to_the_same_bytes(tmp_path) -> None:
    model, opt = _trained()
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    restored = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)  # what a resume holds
    payload = {"state_dict": model.state_dict(), "optimizer": opt.state_dict(), "step": 3, "phase_name": "p"}
    resumed = {**payload, "optimizer": restored}
    assert _bytes(payload, str(tmp_path / "a.pt")) == _bytes(resumed, str(tmp_path / "b.pt"))
    loaded = ckpt.load(str(tmp_path / "b.pt"), None)
    fresh = torch.nn.Linear(3, 2)
    fresh.load_state_dict(loaded["state_dict"])  # still an ordinary state_dict (with its _metadata)
    assert torch.equal(fresh.weight, model.weight)


def test_loader_seed_depends_on_seed_epoch_and_rank_only() -> None:
    from types import SimpleNamespace

    def spec(seed: int, epoch: int, rank: int) -> SimpleNamespace:
        return SimpleNamespace(stream=SimpleNamespace(seed=seed), sampler_epoch=epoch, rank=rank)

    base = loader_seed(spec(1, 2, 0))  # type: ignore[arg-type]
    assert loader_seed(spec(1, 2, 0)) == base  # type: ignore[arg-type]
    assert len({base, loader_seed(spec(2, 2, 0)), loader_seed(spec(1, 3, 0)),  # type: ignore[arg-type]
                loader_seed(spec(1, 2, 1))}) == 4  # type: ignore[arg-type]
