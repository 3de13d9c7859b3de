"""What the trainer reports: progress lines (``kubectl logs``), TensorBoard events, a debug key log."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any

from dynamics.stages.train.plan import PhasePlan
from dynamics.storage import objects as storage
from dynamics.storage.objects import StorageConfig

log = logging.getLogger("dynamics.train")

# Debug aid for tests: when set to a directory, every rank appends one JSON line per step with the
# keys it trained on (rank<r>.jsonl), so a resumed run can be compared with an uninterrupted one.
ENV_KEYLOG = "DYNAMICS_TRAIN_KEYLOG"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


@dataclass
class Progress:
    """Throughput and timing over the steps since the last progress line (rank 0)."""

    plan: PhasePlan
    later: list[PhasePlan]
    window_start: float = field(default_factory=time.monotonic)
    steps: int = 0
    data_wait: float = 0.0
    skipped: Counter[str] = field(default_factory=Counter)
    sec_per_sample: float | None = None

    def add(self, data_wait: float, skipped: dict[str, int]) -> None:
        """Record one finished step and the time it spent waiting for its batch."""
        self.steps += 1
        self.data_wait += data_wait
        self.skipped.update(skipped)

    def line(self, step: int, loss: float, lr: float, logit_scale: float) -> tuple[str, dict[str, float]]:
        """The progress line after phase step ``step`` (1-based) and its numbers; resets the window."""
        elapsed = max(time.monotonic() - self.window_start, 1e-9)
        samples = self.steps * self.plan.global_batch
        rate = samples / elapsed
        self.sec_per_sample = elapsed / max(samples, 1)
        wait = self.data_wait / elapsed
        eta_phase = (self.plan.steps - step) * self.plan.global_batch * self.sec_per_sample
        # ViT cost grows with the token count, i.e. with the square of the resolution.
        eta_run = eta_phase + sum(
            p.samples * self.sec_per_sample * (p.resolution / self.plan.resolution) ** 2 for p in self.later)
        text = (
            f"phase {self.plan.index + 1} {self.plan.name} ({self.plan.resolution}px) "
            f"step {step}/{self.plan.steps} | {rate:,.0f} samples/s ({rate / self.plan.world_size:,.0f}/proc) "
            f"| loss {loss:.4f} | lr {lr:.3e} | logit_scale {logit_scale:.2f} | data wait {wait:.0%} "
            f"| eta phase {_duration(eta_phase)}, run ~{_duration(eta_run)}"
        )
        if self.skipped:
            text += " | skipped " + ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items()))
        numbers = {"loss": loss, "lr": lr, "logit_scale": logit_scale, "samples_per_s": rate,
                   "samples_per_s_per_proc": rate / self.plan.world_size, "data_wait": wait}
        self.window_start, self.steps, self.data_wait = time.monotonic(), 0, 0.0
        return text, numbers


class TensorBoard:
    """TensorBoard scalars of rank 0, written locally and copied to the work directory.

    For an S3 work directory the event files go to a local temporary directory and are uploaded
    (whole, atomically) by :meth:`sync`, which the trainer calls at checkpoints and at the end.
    """

    def __init__(self, target: str, cfg: StorageConfig | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.target, self.cfg = target, cfg
        self._tmp = tempfile.mkdtemp(prefix="dynamics-tb-") if storage.is_s3(target) else None
        self.local = self._tmp or target
        os.makedirs(self.local, exist_ok=True)
        self.writer = SummaryWriter(self.local)

    def scalars(self, tag: str, values: dict[str, float], global_step: int) -> None:
        """Write ``values`` as ``<tag>/<name>`` at ``global_step``."""
        for name, value in values.items():
            self.writer.add_scalar(f"{tag}/{name}", value, global_step)

    def sync(self) -> None:
        """Flush events and, for S3, upload every event file."""
        self.writer.flush()
        if self._tmp is None:
            return
        storage.upload_dir(self._tmp, self.target, self.cfg)

    def close(self) -> None:
        """Flush, upload, and remove the local copy."""
        self.sync()
        self.writer.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


class KeyLog:
    """Per-rank JSON lines of the keys trained at each step (only when ``DYNAMICS_TRAIN_KEYLOG``)."""

    def __init__(self, directory: str | None, rank: int) -> None:
        self._fh: IO[str] | None = None
        if directory:
            os.makedirs(directory, exist_ok=True)
            self._fh = open(os.path.join(directory, f"rank{rank}.jsonl"), "a", encoding="utf-8")  # noqa: SIM115

    @property
    def enabled(self) -> bool:
        """Whether keys are being logged."""
        return self._fh is not None

    def write(self, record: dict[str, Any]) -> None:
        """Append one record and flush it (a killed run keeps every finished line)."""
        if self._fh is not None:
            self._fh.write(json.dumps(record) + "\n")
            self._fh.flush()

    def close(self) -> None:
        """Close the file."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
