"""``dynamics logs NAME [--stage S] [--follow]``: the run's pod logs, each line prefixed by its pod."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TextIO

from dynamics import constants as C
from dynamics.controller.kube import Kube, KubeApiError, Obj
from dynamics.controller.resources import PODS
from dynamics.controller.runs import run_selector
from dynamics.errors import KubeError

_ORDER = {s.value: i for i, s in enumerate(C.PIPELINE)}
_DONE = object()


def run_pods(kube: Kube, run: str, stage: str | None = None) -> list[Obj]:
    """The run's pods (of one stage label), in pipeline order then by name; the controller's first."""
    selector = run_selector(run) + (f",{C.LABEL_STAGE}={stage}" if stage else "")
    pods = kube.list(PODS, selector)

    def order(pod: Obj) -> tuple[int, str]:
        label = (pod["metadata"].get("labels") or {}).get(C.LABEL_STAGE, "")
        return _ORDER.get(label, -1), pod["metadata"]["name"]

    return sorted(pods, key=order)


def _container(pod: Obj) -> str | None:
    containers = (pod.get("spec") or {}).get("containers") or []
    return containers[0].get("name") if containers else None


def _prefixed(pod: Obj, lines: Iterator[str] | list[str]) -> Iterator[str]:
    name = pod["metadata"]["name"]
    for line in lines:
        yield f"[{name}] {line}"


def _pod_lines(kube: Kube, pod: Obj) -> list[str]:
    try:
        return kube.log(pod["metadata"]["name"], container=_container(pod)).splitlines()
    except KubeApiError as err:
        if err.status in (400, 404):  # not started yet, or already gone
            return [f"({err.message.rsplit(': ', 1)[-1]})"]
        raise


def _follow(kube: Kube, pod: Obj, lines: queue.Queue[object]) -> None:
    try:
        for line in _prefixed(pod, kube.follow_log(pod["metadata"]["name"], container=_container(pod))):
            lines.put(line)
    except KubeError as err:
        lines.put(f"[{pod['metadata']['name']}] ({err.message.splitlines()[0]})")
    finally:
        lines.put(_DONE)


def show_logs(kube: Kube, run: str, out: TextIO, *, stage: str | None = None, follow: bool = False) -> int:
    """Print the logs of the run's pods; with ``follow``, stream them until every pod ends."""
    pods = run_pods(kube, run, stage)
    if not pods:
        which = f" in stage {stage}" if stage else ""
        print(f"no pods for run {run}{which} in namespace {kube.namespace} (yet)", file=out)
        return 1
    if not follow:
        for pod in pods:
            for line in _prefixed(pod, _pod_lines(kube, pod)):
                print(line, file=out)
        return 0
    lines: queue.Queue[object] = queue.Queue()
    for pod in pods:
        threading.Thread(target=_follow, args=(kube, pod, lines), daemon=True).start()
    remaining = len(pods)
    while remaining:
        item = lines.get()
        if item is _DONE:
            remaining -= 1
        else:
            print(item, file=out, flush=True)
    return 0
