"""Object names of a run, in one place: the renderer, the controller and the spec checks agree."""

from __future__ import annotations

from dynamics import constants as C
from dynamics.constants import Stage


def config_map(run: str) -> str:
    """The run ConfigMap (resolved spec + status); deleting it deletes the whole run."""
    return run


def controller_job(run: str) -> str:
    """The controller Job."""
    return f"{run}-{C.SUFFIX_CONTROLLER}"


def stage_job(run: str, stage: Stage) -> str:
    """The Job (or PyTorchJob) of ``stage``."""
    return f"{run}-{stage.value}"


def train_service(run: str) -> str:
    """Headless Service for the indexed-job launcher's c10d rendezvous."""
    return f"{run}-{C.SUFFIX_TRAIN_SERVICE}"


def pod_name_suffixes(run: str, embed_parts: int, assign_parts: int, train_nodes: int) -> list[str]:
    """The longest pod-name tails each object adds to the run name (for the 63-character limit)."""
    rand = "-xxxxx"  # the Job controller's random suffix
    tails = [
        f"-{C.SUFFIX_CONTROLLER}{rand}",
        f"-{Stage.EMBED.value}-{max(embed_parts - 1, 0)}{rand}",
        f"-{Stage.CLUSTER_FIT.value}{rand}",
        f"-{Stage.ASSIGN.value}-{max(assign_parts - 1, 0)}{rand}",
        f"-{Stage.SCALE.value}{rand}",
        f"-{Stage.TRAIN.value}-worker-{max(train_nodes - 2, 0)}",
        f"-{Stage.TRAIN.value}-{max(train_nodes - 1, 0)}{rand}",
        f"-{Stage.EVAL.value}{rand}",
    ]
    return tails
