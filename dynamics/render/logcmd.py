"""The follow commands printed after a submission: ``dynamics logs -f``, and a ``kubectl logs`` that works.

``dynamics logs RUN -f`` is the one that follows a run: it picks up each stage's pods as they are
created and waits for pods that have not started (dynamics/controller/logs.py).

``kubectl logs -l SELECTOR -f`` (checked against kubectl v1.35's staging/src/k8s.io/kubectl/pkg/cmd/logs/
logs.go) resolves the selector once, so it never sees pods created later, and:

- refuses more than ``--max-log-requests`` (default 5) streams: a run has many more pods (one per
  Indexed-Job index, plus retries, plus the controller). The limit printed is the most pods the run's
  objects can create, so the command works at any point of the run (finished pods' streams end at once);
- ends, exit 1, as soon as one matched pod's container "is waiting to start" (Pending, ContainerCreating,
  image pull: the kubelet's 400), unless ``--ignore-errors``, with which that pod's error is printed as a
  line and the other pods are followed to their end;
- shows only the last 10 lines of each pod with a selector, unless ``--tail`` is given (``--tail=-1``: all).

``--pod-running-timeout`` does not help here: kubectl only uses it to wait for the first pod of a
TYPE/NAME argument (a Job), never with ``-l``. Pure.
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
    """``kubectl logs`` following every pod of the run that exists when it starts, each line prefixed with
    its pod; a pod still waiting to start prints an error line instead of ending the command."""
    limit = max(DEFAULT_MAX_LOG_REQUESTS, max_pods(spec))
    return (f"kubectl logs -n {namespace} -l {C.LABEL_RUN}={spec.name} -f --prefix --max-log-requests={limit} "
            "--ignore-errors")


def follow_command(spec: RunSpec, namespace: str) -> str:
    """``dynamics logs -f``: follows every stage's pods as they come and go, until the run has finished."""
    return f"dynamics logs {spec.name} -n {namespace} -f"
