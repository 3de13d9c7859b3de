"""Issue 20 item 9: embed and eval pods that asked for GPUs fail fast, naming the versions and the fix,
instead of running ~100x slower on the CPU; a CPU spec (``--local``) still runs on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from specs import make_spec, write_spec

from dynamics.cli import app as cli
from dynamics.stages import gpu
from dynamics.stages.gpu import CudaFacts, cuda_problem, driver_branch, min_driver, stage_device

OLD_DRIVER = CudaFacts(torch_cuda="13.0", driver="570.124.06",
                       init_error="The NVIDIA driver on your system is too old (found version 12080).")


def test_versions() -> None:
    assert min_driver("13.0") == 580 and min_driver("12.8") == 525 and min_driver(None) is None
    assert driver_branch("570.124.06") == 570 and driver_branch("580.65") == 580 and driver_branch(None) is None


def test_old_driver_names_both_versions_and_the_fix() -> None:
    err = cuda_problem("embed.gpusPerPod", 1, OLD_DRIVER)
    assert err.message == (
        "embed.gpusPerPod is 1 but CUDA is not usable in this pod (The NVIDIA driver on your system is too old "
        f"(found version 12080).): torch {torch.__version__} is built for CUDA 13.0, NVIDIA driver 570.124.06; "
        "CUDA 13.0 needs driver 580 or newer"
    )
    assert err.hint is not None and "NVIDIA driver is >= 580" in err.hint and "`dynamics doctor`" in err.hint
    assert "embed.gpusPerPod: 0" in err.hint


def test_no_driver_and_cpu_build_say_so() -> None:
    no_device = cuda_problem("eval.gpus", 2, CudaFacts("13.0", None, "No CUDA GPUs are available"))
    assert "no NVIDIA driver is visible in the container" in no_device.message
    assert no_device.hint is not None and "device plugin" in no_device.hint
    cpu_build = cuda_problem("eval.gpus", 1, CudaFacts(None, None, "Torch not compiled with CUDA enabled"))
    assert "CPU-only build" in cpu_build.message and "eval.gpus: 0" in (cpu_build.hint or "")


def test_a_cpu_spec_runs_on_the_cpu_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert stage_device("embed.gpusPerPod", 0) == torch.device("cpu")


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pod whose node's driver is too old for the image's CUDA (as on this CPU machine, made certain)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gpu, "cuda_facts", lambda: OLD_DRIVER)


@pytest.mark.usefixtures("no_cuda")
@pytest.mark.parametrize(("stage", "sections", "field"), [
    ("embed", {"embed": {"backend": "dinov2", "gpusPerPod": 1}}, "embed.gpusPerPod is 1"),
    ("eval", {"eval": {"datasets": [{"name": "demo", "shards": "eval/{0..1}.tar", "classnames": ["a", "b"]}],
                       "gpus": 1}}, "eval.gpus is 1"),
])
def test_stage_asking_for_gpus_fails_fast_without_cuda(
    stage: str, sections: dict, field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: embed loaded its model and ran on the CPU; eval went on to its inputs (and then the CPU)."""
    spec = make_spec(str(tmp_path / "runs"), str(tmp_path / "data/{0..3}.tar"), **sections)
    path = write_spec(tmp_path / "spec.yaml", spec)
    argv = ["stage", stage, "--spec", str(path), *(["--index", "0"] if stage == "embed" else [])]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"error: {field} but CUDA is not usable in this pod" in err
    assert "NVIDIA driver 570.124.06; CUDA 13.0 needs driver 580 or newer" in err
    assert "fix: run on nodes whose NVIDIA driver is >= 580" in err


@pytest.mark.usefixtures("no_cuda")
def test_train_says_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """Train failed fast already, but without the versions ('no CUDA device is visible')."""
    from dynamics.errors import DynamicsError
    from dynamics.stages.train.main import init_distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(DynamicsError) as info:
        init_distributed(4)
    assert info.value.message.startswith("train.gpusPerNode is 4 but CUDA is not usable in this pod")
    assert "CUDA 13.0 needs driver 580 or newer" in info.value.message
