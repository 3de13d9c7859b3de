"""Weights & Biases reporting beside TensorBoard (rank 0 only, ``train.wandb``).

The W&B run id is the DynamiCS run name, so a resumed trainer continues the same W&B run. In
``offline`` mode (or with ``WANDB_MODE=offline``) nothing touches the network: the run is written
under ``<run>/train/wandb/`` (for an S3 work directory: staged locally, uploaded at each sync) for a
later ``wandb sync``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from dynamics.errors import DynamicsError
from dynamics.spec.model import RunSpec
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths
from dynamics.storage.objects import StorageConfig


def wandb_dir(paths: RunPaths) -> str:
    """Where the run's W&B files go (local path or s3:// prefix)."""
    return paths.checkpoints_dir().rsplit("/", 1)[0] + "/wandb"


class WandbReport:
    """A W&B run that receives the same scalars as TensorBoard."""

    def __init__(self, spec: RunSpec, paths: RunPaths, cfg: StorageConfig | None) -> None:
        try:
            import wandb
        except ImportError as exc:
            raise DynamicsError("train.wandb is set but the wandb package is not installed",
                                hint="pip install 'dynamics[wandb]', or remove train.wandb") from exc
        settings = spec.train.wandb
        assert settings is not None
        self.target, self.cfg = wandb_dir(paths), cfg
        self._tmp = tempfile.mkdtemp(prefix="dynamics-wandb-") if storage.is_s3(self.target) else None
        local = self._tmp or storage.local_path(self.target)
        os.makedirs(local, exist_ok=True)
        self.local = local
        mode = os.environ.get("WANDB_MODE", settings.mode)
        self.run = wandb.init(project=settings.project, entity=settings.entity, mode=mode, dir=local,
                              name=spec.name, id=spec.name, resume="allow",
                              config=spec.model_dump(mode="json", by_alias=True))

    def scalars(self, tag: str, values: dict[str, float], global_step: int) -> None:
        """Log ``values`` as ``<tag>/<name>`` at ``global_step``."""
        self.run.log({f"{tag}/{k}": v for k, v in values.items()}, step=global_step)

    def sync(self) -> None:
        """For an S3 work directory, upload the W&B files written so far."""
        if self._tmp is None:
            return
        storage.upload_dir(self._tmp, self.target, self.cfg)

    def close(self) -> None:
        """Finish the W&B run, upload, and remove the local copy."""
        self.run.finish()
        self.sync()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


def open_report(spec: RunSpec, paths: RunPaths, cfg: StorageConfig | None) -> Any:
    """A :class:`WandbReport` when the spec asks for W&B, else None."""
    return WandbReport(spec, paths, cfg) if spec.train.wandb is not None else None
