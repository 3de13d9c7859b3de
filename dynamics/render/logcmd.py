"""The ``kubectl logs`` command printed after a submission: one that real kubectl accepts.

``kubectl logs -l SELECTOR -f`` follows every pod the selector matches at once, and refuses more
than ``--max-log-requests`` (default 5) streams: a run has many more pods (one per Indexed-Job index,
plus retries, plus the controller). The limit printed is the most pods the run's objects can
create, so the command works at any point of the run (finished pods' streams end at once). Pure.
"""

from __future__ import annotations

from dynamics import constants as C
from dynamics.render import render
from dynamics.render.pod import Obj
from dynamics.spec.model import RunSpec

DEFAULT_MAX_LOG_REQUESTS = 5  # kubectl's default


def _job_pods(job: Obj) -> int:
    spec = job["spec"]
    completions = int(spec.get("completions") or 1)
    if spec.get("completionMode") == "Indexed" and "backoffLimitPerIndex" in spec:
        return completions * (1 + int(spec["backoffLimitPerIndex"]))
    return completions + int(spec.get("backoffLimit") or 0)


def max_pods(spec: RunSpec) -> int:
    """The most pods the run's objects can create (each Job's completions and retries; a PyTorchJob's
    replicas, which restart in place, and its backoff limit)."""
    total = 0
    for obj in render(spec):
        if obj["kind"] == "Job":
            total += _job_pods(obj)
        elif obj["kind"] == "PyTorchJob":
            replicas = obj["spec"]["pytorchReplicaSpecs"].values()
            total += sum(int(r["replicas"]) for r in replicas) + int(obj["spec"]["runPolicy"].get("backoffLimit") or 0)
    return total


def log_command(spec: RunSpec, namespace: str) -> str:
    """``kubectl logs`` following every pod of the run, each line prefixed with its pod."""
    limit = max(DEFAULT_MAX_LOG_REQUESTS, max_pods(spec))
    return f"kubectl logs -n {namespace} -l {C.LABEL_RUN}={spec.name} -f --prefix --max-log-requests={limit}"
