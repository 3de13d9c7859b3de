"""The device of a stage whose pod requested GPUs: CUDA, or one clear error instead of a silent CPU run.

A pod that asked for ``nvidia.com/gpu`` but cannot use CUDA (the node's driver is older than the
image's CUDA needs, the device plugin mounted no device, a CPU-only torch build) would otherwise
embed or evaluate on the CPU, ~100x slower with the GPUs allocated. The spec's GPU count is what the
renderer requests for the pod (``embed.gpusPerPod``, ``eval.gpus``; train and k-means fail the same
way on ``train.gpusPerNode`` and ``cluster.gpus``), and ``--local`` runs the same commands: a CPU spec
(GPU count 0) runs on the CPU anywhere.

:func:`cuda_problem` is pure (it formats the facts); :func:`stage_device` gathers them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

from dynamics import constants as C
from dynamics.errors import DynamicsError

# Oldest driver branch per CUDA major (minor-version compatibility): NVIDIA's table 1 at
# https://docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html
# ("CUDA 13.x: >= 580", "12.x: >= 525", "11.x: >= 450"). The images' torch is built for CUDA 13.
MIN_DRIVER_FOR_CUDA = {int(C.IMAGE_CUDA): C.MIN_NVIDIA_DRIVER, 12: 525, 11: 450}
PROC_DRIVER_VERSION = Path("/proc/driver/nvidia/version")
NVIDIA_SMI_TIMEOUT_S = 10


@dataclass(frozen=True)
class CudaFacts:
    """What this process can tell about its GPUs: torch's CUDA build, the driver, CUDA's own error."""

    torch_cuda: str | None  # torch.version.cuda: None for a CPU-only build
    driver: str | None  # e.g. '570.124.06'; None when no NVIDIA driver is visible in the container
    init_error: str | None  # torch.cuda's initialisation error, verbatim


def min_driver(cuda: str | None) -> int | None:
    """The oldest driver branch a CUDA major version runs on (None when unknown). Pure."""
    if not cuda:
        return None
    major = cuda.split(".", 1)[0]
    return MIN_DRIVER_FOR_CUDA.get(int(major)) if major.isdigit() else None


def driver_branch(driver: str | None) -> int | None:
    """``'570.124.06'`` -> 570. Pure."""
    match = re.match(r"(\d+)", driver or "")
    return int(match.group(1)) if match else None


def cuda_problem(field: str, gpus: int, facts: CudaFacts) -> DynamicsError:
    """The one error a stage raises when ``field`` asked for ``gpus`` GPUs and CUDA is unusable. Pure."""
    need = min_driver(facts.torch_cuda)
    have = driver_branch(facts.driver)
    build = f"torch {torch.__version__} is built for CUDA {facts.torch_cuda}" if facts.torch_cuda \
        else f"torch {torch.__version__} is a CPU-only build"
    driver = f"NVIDIA driver {facts.driver}" if facts.driver else "no NVIDIA driver is visible in the container"
    why = f" ({facts.init_error})" if facts.init_error else ""
    message = f"{field} is {gpus} but CUDA is not usable in this pod{why}: {build}, {driver}"
    if need is not None and have is not None and have < need:
        message += f"; CUDA {facts.torch_cuda} needs driver {need} or newer"
        hint = (f"run on nodes whose NVIDIA driver is >= {need} (`dynamics doctor` lists each GPU node's "
                f"driver), e.g. with kubernetes.gpuPods.nodeSelector; or set {field}: 0 to run on CPU")
    elif not facts.torch_cuda:
        hint = f"use the project's image for this stage (torch with CUDA), or set {field}: 0 to run on CPU"
    else:
        hint = (f"check that the pod got its GPUs (NVIDIA device plugin / GPU operator on the node) and that "
                f"the node's driver is >= {need or '?'}; or set {field}: 0 to run on CPU")
    return DynamicsError(message, hint=hint)


def _driver_version() -> str | None:
    """The kernel driver's version: /proc (when the runtime exposes it), else nvidia-smi."""
    try:
        match = re.search(r"Kernel Module\s+(?:for\s+\S+\s+)?(\d+\.\d+(?:\.\d+)?)", PROC_DRIVER_VERSION.read_text())
    except OSError:
        match = None
    if match:
        return match.group(1)
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = out.strip().splitlines()[0].strip() if out.strip() else ""
    return first if re.fullmatch(r"\d+\.\d+(\.\d+)?", first) else None


def _init_error() -> str | None:
    """torch.cuda's own reason, e.g. 'The NVIDIA driver on your system is too old (found version 12080)'."""
    try:
        torch.cuda.init()
    except (RuntimeError, AssertionError) as err:  # AssertionError: "Torch not compiled with CUDA enabled"
        return " ".join(str(err).split())
    return None


def cuda_facts() -> CudaFacts:
    """The facts :func:`cuda_problem` formats, read from torch, /proc and nvidia-smi."""
    return CudaFacts(torch_cuda=torch.version.cuda, driver=_driver_version(), init_error=_init_error())


def stage_device(field: str, gpus: int) -> torch.device:
    """``cuda`` when ``field`` (the spec's GPU count of this stage's pod) asks for GPUs and CUDA works,
    ``cpu`` when it asks for none; otherwise a :class:`DynamicsError` naming the versions and the fix."""
    if gpus <= 0:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    raise cuda_problem(field, gpus, cuda_facts())
