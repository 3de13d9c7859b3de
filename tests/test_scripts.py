"""scripts/setup.sh's torch flavours (checked with --dry-run: nothing is downloaded) and quickstart.sh's options."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _setup(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "DYNAMICS_TORCH"}
    environ.update(env, PYTHON=sys.executable)
    return subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh"), *args], capture_output=True, text=True,
                          env=environ, timeout=60)


def _pins() -> dict[str, str]:
    lines = (ROOT / "requirements" / "lock.txt").read_text().splitlines()
    return {n: line.split("==")[1] for line in lines for n in ("torch", "torchvision") if line.startswith(f"{n}==")}


@pytest.mark.parametrize("how", [("--cpu",), ("DYNAMICS_TORCH=cpu",)])
def test_cpu_flavour_installs_torch_from_the_cpu_index(how: tuple[str, ...]) -> None:
    args = [a for a in how if a.startswith("--")]
    env = dict(a.split("=", 1) for a in how if "=" in a)
    proc = _setup("--dry-run", *args, **env)
    assert proc.returncode == 0, proc.stderr
    pins = _pins()
    torch_line = next(line for line in proc.stdout.splitlines() if CPU_INDEX in line)
    assert f"torch=={pins['torch']}+cpu" in torch_line and f"torchvision=={pins['torchvision']}+cpu" in torch_line
    assert "-c requirements/lock.txt" in torch_line  # torch's own dependencies stay pinned
    lines = proc.stdout.splitlines()
    assert lines.index(torch_line) < next(i for i, line in enumerate(lines) if "-e .\\[dev\\]" in line)


def test_default_flavour_is_unchanged_and_bad_options_are_refused() -> None:
    proc = _setup("--dry-run")
    assert proc.returncode == 0 and CPU_INDEX not in proc.stdout and "-e .\\[dev\\]" in proc.stdout
    assert _setup("--gpu").returncode == 2
    bad = _setup("--dry-run", DYNAMICS_TORCH="rocm")
    assert bad.returncode == 2 and "DYNAMICS_TORCH" in bad.stderr


def test_quickstart_passes_options_after_the_spec_to_submit(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "quickstart.sh", tmp_path / "scripts")
    (tmp_path / "scripts" / "setup.sh").write_text("exit 0\n")  # installed already
    (tmp_path / "demo-data").mkdir()
    (tmp_path / "demo-data" / "manifest.json").write_text("{}")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "dynamics-submit").write_text('#!/bin/sh\necho "submit: $*"\n')
    (bin_dir / "dynamics-submit").chmod(0o755)
    out = subprocess.run(["bash", str(tmp_path / "scripts" / "quickstart.sh"), "my.yaml", "--replace", "--set",
                          "name=b"], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "submit: my.yaml --local --replace --set name=b" in out
    out = subprocess.run(["bash", str(tmp_path / "scripts" / "quickstart.sh")], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "submit: examples/quickstart.yaml --local" in out
