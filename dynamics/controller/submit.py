"""``dynamics-submit spec.yaml``: create the run ConfigMap and the controller Job, nothing else.

The controller creates each stage's objects when the stage starts; submit only hands the run over.
With ``--replace`` an existing run of the same name is deleted first (and waited for); with
``--wait`` submit follows the run's recorded status until it ends.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from dynamics.controller.kube import Kube, KubeApiError, connect
from dynamics.controller.report import describe_changes
from dynamics.controller.resources import CONFIG_MAPS
from dynamics.controller.run import Poll
from dynamics.controller.runs import delete_run, leftover_controller, read_run, with_owner
from dynamics.controller.state import Obj, Phase, RunStatus, object_ref
from dynamics.errors import KubeError
from dynamics.render import render_submission
from dynamics.render.logcmd import follow_command, log_command
from dynamics.spec.model import RunSpec


def _create_config_map(kube: Kube, spec: RunSpec, config_map: Obj, *, replace: bool, out: TextIO) -> Obj:
    try:
        return kube.create(config_map)
    except KubeApiError as err:
        if err.status == 404:
            raise KubeError(
                f'namespace "{kube.namespace}" does not exist', hint="create it, or set namespace: in the spec / -n"
            ) from err
        if err.status != 409:
            raise
        if not replace:
            raise KubeError(
                f"run {spec.name} already exists in namespace {kube.namespace}: use --replace or pick another name",
                hint=f"`dynamics status {spec.name} -n {kube.namespace}` shows the existing run",
            ) from err
    print(f"replacing run {spec.name}: deleting the existing run and waiting for its objects to go", file=out)
    delete_run(kube, spec.name)
    return kube.create(config_map)


def _leftover_error(kube: Kube, spec: RunSpec, ref: str) -> KubeError:
    return KubeError(
        f"{ref} is left over from an earlier run {spec.name} in namespace {kube.namespace} (a run installed "
        "with Helm has a controller Job that Helm owns, not the run)",
        hint=f"`dynamics cancel {spec.name} -n {kube.namespace}` or `helm uninstall` of that release removes it; "
        f"or delete it: kubectl delete -n {kube.namespace} {ref}")


def _create_owned(kube: Kube, spec: RunSpec, objects: list[Obj], config_map: Obj) -> None:
    """The submission's objects after the ConfigMap (NetworkPolicies, the controller Job), owned by
    it; if one cannot be created, delete the ConfigMap just created (and so, by garbage collection,
    the others), so that no run without a controller is left behind to block the name."""
    for obj in objects:
        try:
            kube.create(with_owner(obj, config_map))
        except KubeError as err:
            kube.delete(CONFIG_MAPS, config_map["metadata"]["name"])
            if isinstance(err, KubeApiError) and err.status == 409:
                raise _leftover_error(kube, spec, object_ref(obj)) from err
            raise


def next_steps(spec: RunSpec, namespace: str) -> str:
    """What to run next, printed after a submission."""
    return (
        f"  follow the logs:  {follow_command(spec, namespace)}\n"
        f"  or with kubectl:  {log_command(spec, namespace)}\n"
        f"  see the stages:   dynamics status {spec.name} -n {namespace}"
    )


def submit(
    spec: RunSpec,
    *,
    replace: bool = False,
    wait: bool = False,
    context: str | None = None,
    kube: Kube | None = None,
    poll: Poll | None = None,
    out: TextIO | None = None,
) -> int:
    """Submit the run (ConfigMap, then its NetworkPolicies if any and the controller Job, owned by it); with
    ``wait``, follow it to the end."""
    out = out or sys.stdout
    kube = kube or connect(context=context, namespace=spec.namespace)
    if kube.namespace != spec.namespace:
        kube = kube.in_namespace(spec.namespace)
    config_map, *owned = render_submission(spec)
    if not replace and (leftover := leftover_controller(kube, spec.name)) is not None:
        raise _leftover_error(kube, spec, object_ref(leftover))
    created = _create_config_map(kube, spec, config_map, replace=replace, out=out)
    _create_owned(kube, spec, owned, created)
    print(f"submitted run {spec.name} to namespace {kube.namespace} at {kube.endpoint.describe()}", file=out)
    print(next_steps(spec, kube.namespace), file=out, flush=True)
    if not wait:
        return 0
    return wait_for_run(kube, spec.name, poll=poll or Poll(), out=out)


def wait_for_run(kube: Kube, run: str, *, poll: Poll, out: TextIO, sleep: Callable[[float], None] = time.sleep) -> int:
    """Print the run's progress (from ``status.json``) until it ends: 0 succeeded, 1 failed or cancelled."""
    last: RunStatus | None = None
    wait = poll.min_s
    while True:
        record = read_run(kube, run)
        if record is None:
            print(f"run {run} was deleted (cancelled)", file=out, flush=True)
            return 1
        current = record.recorded
        if current is not None and current != last:
            for line in describe_changes(last, current):
                print(line, file=out, flush=True)
            last = current
            if current.phase.terminal:
                return 0 if current.phase is Phase.SUCCEEDED else 1
            wait = poll.min_s
        sleep(wait)
        wait = poll.next(wait, changed=False)
