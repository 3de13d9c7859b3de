"""Run-level reads and writes shared by the controller, submit and the CLI views.

A run is its ConfigMap (the resolved spec and ``status.json``) plus every object labelled
``dynamics.io/run=<run>``; every object the controller or submit creates is owned by the ConfigMap,
so deleting the ConfigMap deletes the run (garbage collection, in the background).
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

from dynamics import constants as C
from dynamics import names
from dynamics.controller.decide import Observed
from dynamics.controller.kube import Kube, KubeApiError, Obj
from dynamics.controller.resources import CONFIG_MAPS, RUN_RESOURCES
from dynamics.controller.state import Phase, RunStatus
from dynamics.errors import KubeError
from dynamics.spec import RunSpec
from dynamics.specio import load_spec_text

RUNS_SELECTOR = f"{C.LABEL_NAME}={C.APP_NAME},{C.LABEL_COMPONENT}={C.COMPONENT_RUN}"


def run_selector(run: str) -> str:
    """Label selector of every object of ``run`` (what ``kubectl -l`` takes)."""
    return f"{C.LABEL_RUN}={run}"


@dataclass(frozen=True)
class RunRecord:
    """A run as stored: its ConfigMap, the spec in it, and the recorded status (if any yet)."""

    config_map: Obj
    spec: RunSpec
    recorded: RunStatus | None

    @property
    def name(self) -> str:
        """The run name."""
        return self.spec.name


@functools.lru_cache(maxsize=16)
def _parse_spec(text: str, source: str) -> RunSpec:
    """The run's spec never changes after submission: parse it once per process (RunSpec is frozen)."""
    return load_spec_text(text, source)


def read_run(kube: Kube, run: str) -> RunRecord | None:
    """The run's record, or None when its ConfigMap does not exist (never submitted, or cancelled)."""
    cm = kube.get(CONFIG_MAPS, names.config_map(run))
    if cm is None:
        return None
    data = cm.get("data") or {}
    spec = _parse_spec(data.get(C.CONFIG_SPEC_KEY, ""), f"configmap/{cm['metadata']['name']} key {C.CONFIG_SPEC_KEY}")
    return RunRecord(cm, spec, RunStatus.loads(data.get(C.CONFIG_STATUS_KEY)))


def require_run(kube: Kube, run: str) -> RunRecord:
    """The run's record, or a KubeError saying it does not exist."""
    record = read_run(kube, run)
    if record is None:
        raise KubeError(
            f'run "{run}" not found in namespace "{kube.namespace}"',
            hint=f"`dynamics list -n {kube.namespace}` shows the runs there; pass -n for another namespace",
        )
    return record


def list_run_objects(kube: Kube, run: str) -> tuple[list[Obj], set[str]]:
    """Every Job, PyTorchJob and Service of the run, and the kinds the API does not serve."""
    objects: list[Obj] = []
    unserved: set[str] = set()
    for res in RUN_RESOURCES:
        try:
            objects += kube.list(res, run_selector(run))
        except KubeApiError as err:
            if err.status != 404:  # 404 on a collection: the resource type (a CRD) is not installed
                raise
            unserved.add(res.kind)
    return objects, unserved


def observe(kube: Kube, record: RunRecord) -> Observed:
    """What the controller's decision needs, read from the cluster."""
    objects, unserved = list_run_objects(kube, record.name)
    return Observed.of(objects, record.recorded, unserved)


def with_owner(obj: Obj, config_map: Obj) -> Obj:
    """A copy of ``obj`` owned by the run ConfigMap (so that deleting the ConfigMap deletes it)."""
    out = copy.deepcopy(obj)
    meta = config_map["metadata"]
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": meta["name"], "uid": meta["uid"]}
    out["metadata"]["ownerReferences"] = [ref]
    return out


def write_status(kube: Kube, record: RunRecord, status: RunStatus) -> bool:
    """Store ``status.json`` in the run ConfigMap unless unchanged; True if written."""
    text = status.dumps()
    if (record.config_map.get("data") or {}).get(C.CONFIG_STATUS_KEY) == text:
        return False
    kube.patch(CONFIG_MAPS, record.config_map["metadata"]["name"], {"data": {C.CONFIG_STATUS_KEY: text}})
    return True


def delete_run(
    kube: Kube,
    run: str,
    *,
    timeout_s: float = 300.0,
    interval_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Delete the run ConfigMap and wait until it and every object of the run are gone.

    Returns how many run objects (Jobs, PyTorchJobs, Services) existed when deletion started.
    """
    objects, _ = list_run_objects(kube, run)
    kube.delete(CONFIG_MAPS, names.config_map(run))
    deadline = time.monotonic() + timeout_s
    while kube.get(CONFIG_MAPS, names.config_map(run)) is not None or list_run_objects(kube, run)[0]:
        if time.monotonic() > deadline:
            raise KubeError(
                f'run "{run}" is still being deleted after {timeout_s:.0f}s',
                hint=f"check `kubectl get jobs,pytorchjobs -n {kube.namespace} -l {run_selector(run)}`; "
                "the garbage collector deletes them in the background",
            )
        sleep(interval_s)
    return len(objects)


def is_finished(status: RunStatus | None) -> bool:
    """Whether a recorded status is terminal."""
    return status is not None and status.phase in (Phase.SUCCEEDED, Phase.FAILED)
