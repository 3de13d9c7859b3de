"""Controller-test harness: a double, a connected ``Kube``, kubectl, a small run spec, and a cluster player.

Plays the Job controller and the training operator for a dynamics run: ``play_stage`` starts a
stage's pods (with logs) and then marks its workload Succeeded or Failed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from botocore.exceptions import ClientError

from dynamics import constants as C
from dynamics.constants import Stage
from dynamics.controller.kube import Kube, connect
from dynamics.controller.resources import CONFIG_MAPS
from dynamics.controller.run import Controller, Poll
from dynamics.controller.state import RunStatus
from dynamics.spec import names
from dynamics.spec.loader import validate
from dynamics.spec.model import Launcher, RunSpec
from dynamics.storage import objects as storage

from .kubectl import Kubectl
from .server import KubeDouble

NS = "team"
RUN = "demo"
FAST_POLL = Poll(min_s=0.02, max_s=0.1)

SPEC: dict[str, Any] = {
    "apiVersion": "dynamics.io/v1alpha1",
    "kind": "DynamicsRun",
    "name": RUN,
    "namespace": NS,
    "storage": {"workdir": "s3://bucket/runs", "credentialsSecret": "s3-creds"},
    "data": {"shards": "s3://bucket/data/{00000..00039}.tar", "approxSamples": 400000},
    "embed": {"shardsPerPart": 20, "parallelism": 2},
    "cluster": {"k": 100, "trainSamples": 10000},
    "train": {
        "nodes": 2,
        "gpusPerNode": 4,
        "workers": 2,
        "phases": [{"name": "p112", "resolution": 112, "samples": 1_000_000, "batchPerGpu": 100, "lr": 1e-3}],
    },
    "eval": {"datasets": [{"name": "inet", "shards": "s3://bucket/eval/{0..1}.tar", "classnames": "imagenet"}]},
}


def ensure_work_bucket() -> None:
    """Create the test spec's bucket on the S3 endpoint the environment names (the tests' moto
    server), so that the controller's write of the resolved spec is quick and stays local."""
    bucket, _ = storage.split_s3(SPEC["storage"]["workdir"])
    client = storage.s3_client()
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError:
        client.create_bucket(Bucket=bucket)


def make_spec(**overrides: Any) -> RunSpec:
    """The test spec; ``overrides`` replace top-level sections (``train={...}`` merges into train)."""
    data = yaml.safe_load(yaml.safe_dump(SPEC))
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    return validate(data, "test spec")


@dataclass
class Harness:
    """Everything a controller test needs, around one started double."""

    double: KubeDouble
    kubeconfig: Path
    kubectl: Kubectl
    threads: list[tuple[threading.Event, threading.Thread]] = field(default_factory=list)

    def kube(self, namespace: str = NS) -> Kube:
        """A fresh connection, as a new controller process would make."""
        return connect(kubeconfig=str(self.kubeconfig), namespace=namespace)

    def _is_pytorchjob(self, spec: RunSpec, stage: Stage) -> bool:
        return stage is Stage.TRAIN and spec.train.launcher is Launcher.PYTORCHJOB

    def start_stage(self, spec: RunSpec, stage: Stage, *, log: str | None = None) -> None:
        """Create the stage's pods (Running, each logging ``log``, by default ``<stage>: working``)
        and mark it active."""
        cluster, name = self.double.cluster, names.stage_job(spec.name, stage)
        log = log if log is not None else f"{stage.value}: working\n"
        if self._is_pytorchjob(spec, stage):
            cluster.start_pytorchjob(NS, name, log=log)
        else:
            cluster.start_job(NS, name, log=log)

    def finish_stage(self, spec: RunSpec, stage: Stage, *, succeed: bool = True, **failure: Any) -> None:
        """Mark the stage's workload Succeeded, or Failed (``failed_indexes=``, ``message=``, and the
        failed containers' ``exit_code=`` and ``reason=``)."""
        cluster, name = self.double.cluster, names.stage_job(spec.name, stage)
        ended = {"exit_code": failure.get("exit_code"), "reason": failure.get("reason")}
        if self._is_pytorchjob(spec, stage):
            cluster.finish_pytorchjob(NS, name, succeeded=succeed, message=failure.get("message"), **ended)
        elif succeed:
            cluster.succeed_job(NS, name)
        else:
            cluster.fail_job(NS, name, failed_indexes=failure.get("failed_indexes"), **ended)

    def play_stage(
        self, spec: RunSpec, stage: Stage, *, succeed: bool = True, log: str | None = None, **failure: Any
    ) -> None:
        """Start the stage's pods (logging ``log``), then finish its workload."""
        self.start_stage(spec, stage, log=log)
        self.finish_stage(spec, stage, succeed=succeed, **failure)

    def start_controller(self, run: str = RUN) -> tuple[threading.Event, dict[str, int]]:
        """Run a controller loop in a thread; returns its stop event and a dict receiving ``exit``."""
        stop, result = threading.Event(), {}
        controller = Controller(self.kube(), run, poll=FAST_POLL, stop=stop)
        thread = threading.Thread(target=lambda: result.update(exit=controller.loop()), daemon=True)
        thread.start()
        self.threads.append((stop, thread))
        return stop, result


@contextlib.contextmanager
def harness(tmp_path: Path, **double_args: Any) -> Iterator[Harness]:
    """Start a double (namespace ``team``) and yield the harness; stops everything afterwards."""
    with KubeDouble(**double_args) as double:
        kubeconfig = double.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
        h = Harness(double, kubeconfig, Kubectl(kubeconfig, tmp_path / "kube-cache"))
        try:
            yield h
        finally:
            for stop, thread in h.threads:
                stop.set()
                thread.join(timeout=5)


def recorded(kube: Kube, run: str) -> RunStatus:
    """The run status the controller recorded in the run ConfigMap (it must be there)."""
    cm = kube.get(CONFIG_MAPS, run)
    assert cm is not None
    status = RunStatus.loads(cm["data"].get(C.CONFIG_STATUS_KEY))
    assert status is not None
    return status


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)
