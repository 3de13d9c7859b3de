"""What every stage command shares: its arguments, the resolved spec, storage, and logging."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass

from dynamics import constants as C
from dynamics.constants import Stage
from dynamics.errors import DynamicsError
from dynamics.spec.fingerprint import fingerprints, run_paths
from dynamics.spec.loader import load_spec
from dynamics.spec.model import RunSpec
from dynamics.stages.commands import stage_parser
from dynamics.storage.layout import RunPaths
from dynamics.storage.objects import StorageConfig

__all__ = ["StageContext", "context_from_args", "setup_logging", "stage_parser", "storage_config"]

log = logging.getLogger("dynamics")


@dataclass(frozen=True)
class StageContext:
    """Everything a stage needs: the spec, where artifacts go, how to reach S3, its index."""

    spec: RunSpec
    paths: RunPaths
    index: int | None

    @property
    def storage(self) -> StorageConfig:
        """Storage settings from the spec (endpoint/region/retries); credentials come from env."""
        return storage_config(self.spec)


def storage_config(spec: RunSpec) -> StorageConfig:
    """How to reach the spec's S3 (endpoint, region, retries); credentials come from the environment."""
    s = spec.storage
    return StorageConfig(endpoint_url=s.endpoint, region=s.region, retry_mode=s.retry_mode,
                         max_attempts=s.max_attempts)


def check_pinned_fingerprint(spec: RunSpec, stage: Stage) -> None:
    """Refuse to run when the spec this pod reads is not the one its stage was created for."""
    pinned = os.environ.get(C.ENV_STAGE_FINGERPRINT)
    if pinned and pinned != fingerprints(spec)[stage]:
        raise DynamicsError(
            f"the run's spec changed after the {stage.value} stage was created: this pod reads a spec whose "
            f"{stage.value} fingerprint differs from the one its Job was made for, so it would compute "
            "something else than the rest of the stage",
            hint="a run's spec cannot change while it runs: restore it, or resubmit with --replace")


def context_from_args(args: argparse.Namespace) -> StageContext:
    """Load the spec and resolve the index (flag, then JOB_COMPLETION_INDEX)."""
    spec = load_spec(args.spec)
    check_pinned_fingerprint(spec, args.stage)
    index = getattr(args, "index", None)
    if index is None and hasattr(args, "index"):
        raw = os.environ.get(C.ENV_JOB_INDEX)
        if raw is None:
            raise DynamicsError(f"no index: pass --index or set {C.ENV_JOB_INDEX}",
                                hint="Indexed Jobs set it; locally use --index N")
        try:
            index = int(raw)
        except ValueError as exc:
            raise DynamicsError(f"{C.ENV_JOB_INDEX}={raw!r} is not an integer") from exc
    return StageContext(spec=spec, paths=run_paths(spec), index=index)


def setup_logging(level: int = logging.INFO) -> None:
    """Plain timestamped lines on stderr: what `kubectl logs` shows."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                           "%Y-%m-%dT%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level)
    # Third-party chatter (faiss's CPU-feature probing, matplotlib's font cache) is not progress.
    for noisy in ("faiss.loader", "matplotlib", "PIL", "botocore", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
