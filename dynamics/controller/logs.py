"""``dynamics logs NAME [--stage S] [--follow]``: the run's pod logs, each line prefixed by its pod.

Without ``--follow``: every pod's log so far. With it, the run is followed as it goes, which
``kubectl logs -l ... -f`` cannot do (it resolves the selector once, and a container that has not
started answers 400 "is waiting to start", which ends the whole command):

- the run's pods are listed every :data:`FOLLOW_POLL_S` seconds; each new pod is followed, so later
  stages, retried indexes and restarted trainers are picked up as they appear;
- a pod that is not running yet (unscheduled: the API answers 204 with no log; ContainerCreating,
  image pull: 400 "waiting to start") is waited for, its waiting reason printed once per change;
- a stream that ends while its pod still runs (a dropped connection) is reopened, skipping the lines
  already printed; a restarted container's new log (a new container ID) is printed from its start;
- it ends when no new pod can come and every followed pod has ended: the run is finished (Succeeded
  or Failed), or deleted (cancelled); with ``--stage`` also when that stage has finished. Pods that
  never started by then are not waited for. Without read access to the run's ConfigMap it ends when
  every pod it follows has ended, as before.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TextIO

from dynamics import constants as C
from dynamics.controller.kube import Kube, KubeApiError, Obj
from dynamics.controller.resources import PODS
from dynamics.controller.runs import read_run, run_selector
from dynamics.controller.state import RunStatus
from dynamics.errors import KubeError

_ORDER = {s.value: i for i, s in enumerate(C.PIPELINE)}
FOLLOW_POLL_S = 2.0
TERMINAL_POD_PHASES = ("Succeeded", "Failed")


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


def _not_started(err: KubeApiError) -> str:
    """'waiting to start: ContainerCreating' from the kubelet's 400 (the pod name is already the prefix)."""
    message = err.message.splitlines()[0]
    return message.split(" is ", 1)[1] if " is " in message else message


def _pod_lines(kube: Kube, pod: Obj) -> list[str]:
    try:
        return kube.log(pod["metadata"]["name"], container=_container(pod)).splitlines()
    except KubeApiError as err:
        if err.status in (400, 404):  # not started yet, or already gone
            return [f"({_not_started(err)})"]
        raise


def show_logs(kube: Kube, run: str, out: TextIO, *, stage: str | None = None, follow: bool = False,
              poll_s: float = FOLLOW_POLL_S) -> int:
    """Print the logs of the run's pods; with ``follow``, follow the run's pods as they come and go
    until the run (or ``stage``) has finished and its last pod has ended (see the module docstring)."""
    if follow:
        return RunFollower(kube, run, out, stage=stage, poll_s=poll_s).follow()
    pods = run_pods(kube, run, stage)
    if not pods:
        print(_no_pods(kube, run, stage), file=out)
        return 1
    for pod in pods:
        for line in _prefixed(pod, _pod_lines(kube, pod)):
            print(line, file=out)
    return 0


def _no_pods(kube: Kube, run: str, stage: str | None) -> str:
    which = f" in stage {stage}" if stage else ""
    return f"no pods for run {run}{which} in namespace {kube.namespace} (yet)"


# --- following ---


def follow_over(exists: bool | None, status: RunStatus | None, stage: str | None) -> bool | None:
    """Whether no new pod of the run (of ``stage``) can appear any more: the run's ConfigMap is gone
    (cancelled), the run finished, or the stage did. None when the ConfigMap could not be read. Pure."""
    if exists is None:
        return None
    if not exists:
        return True
    if status is None:
        return False
    if status.phase.terminal:
        return True
    state = next((s for s in status.stages if s.stage.value == stage), None) if stage else None
    return state is not None and state.phase.terminal


def pod_started(pod: Obj) -> bool:
    """Whether the pod's container ever ran (so it has a log, or will end on its own). Pure."""
    status = pod.get("status") or {}
    if status.get("phase") in TERMINAL_POD_PHASES:
        return True
    return any("running" in (c.get("state") or {}) or "terminated" in (c.get("state") or {})
               or "terminated" in (c.get("lastState") or {}) for c in status.get("containerStatuses") or [])


def unscheduled(pod: Obj) -> str:
    """'not scheduled yet: 0/3 nodes are available: ...' (the scheduler's PodScheduled message). Pure."""
    conditions = (pod.get("status") or {}).get("conditions") or []
    why = next((c.get("message") for c in conditions if c.get("type") == "PodScheduled" and c.get("message")), None)
    return "not scheduled yet" + (f": {why}" if why else "")


def log_source(pod: Obj, container: str | None) -> str | None:
    """The ID of the container instance whose log the kubelet serves now: the current one once it runs,
    the last terminated one while a restarting container waits (CrashLoopBackOff). A new ID is a new log. Pure."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    status = next((c for c in statuses if c.get("name") == container), None) or {}
    state, last = status.get("state") or {}, status.get("lastState") or {}
    if "running" in state or "terminated" in state:
        return status.get("containerID") or (state.get("terminated") or {}).get("containerID")
    return (last.get("terminated") or {}).get("containerID")


@dataclass
class _Shared:
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    run_over: threading.Event = field(default_factory=threading.Event)


@dataclass
class PodFollower:
    """Follows one pod: waits for it to start, streams its log, reopens a dropped stream, ends with it."""

    kube: Kube
    pod: Obj
    shared: _Shared
    poll_s: float
    printed: int = 0  # lines of the current container's log already printed
    said: str | None = None  # the last waiting/error note printed (each is printed once)

    @property
    def name(self) -> str:
        """The pod's name."""
        return str(self.pod["metadata"]["name"])

    def _put(self, line: str) -> None:
        self.shared.lines.put(f"[{self.name}] {line}")

    def _note(self, text: str) -> None:
        if text != self.said:
            self._put(f"({text})")
            self.said = text

    def print_lines(self, lines: Iterator[str] | list[str]) -> None:
        """Print the lines past those already printed (a reopened stream starts from the beginning)."""
        for count, line in enumerate(lines, 1):
            if count > self.printed:
                self._put(line)
                self.printed = count

    def _read_once(self) -> bool:
        """Open the follow stream and print it to its end; False when the pod is gone."""
        try:
            self.print_lines(self.kube.follow_log(self.name, container=_container(self.pod)))
        except KubeApiError as err:
            if err.status == 404:
                return False
            if err.status != 400:
                raise
            self._note(_not_started(err))
        return True

    def run(self) -> None:
        """Follow until the pod ends or goes, or the run is over and the pod never started."""
        uid, container = self.pod["metadata"].get("uid"), _container(self.pod)
        source = log_source(self.pod, container)
        while True:
            try:
                if not self._read_once():
                    return
            except KubeError as err:  # forbidden, or unreachable for a moment: say so once, go on
                self._note(err.message.splitlines()[0])
            try:
                pod = self.kube.get(PODS, self.name)
            except KubeError as err:
                self._note(err.message.splitlines()[0])
                time.sleep(self.poll_s)
                continue
            if pod is None or pod["metadata"].get("uid") != uid:
                return
            if (pod.get("status") or {}).get("phase") in TERMINAL_POD_PHASES:
                try:
                    self.print_lines(_pod_lines(self.kube, pod))  # what a dropped stream missed
                except KubeError as err:
                    self._note(err.message.splitlines()[0])
                return
            if log_source(pod, container) != source:  # a restarted container: its log starts afresh
                self.printed = 0 if source is not None else self.printed
                source = log_source(pod, container)
            if not pod_started(pod):
                if self.shared.run_over.is_set():
                    return
                if not (pod.get("status") or {}).get("containerStatuses"):  # the API answered 204: no node yet
                    self._note(unscheduled(pod))
            time.sleep(self.poll_s)


class RunFollower:
    """``dynamics logs RUN -f``: one :class:`PodFollower` per pod of the run, lines printed as they come."""

    def __init__(self, kube: Kube, run: str, out: TextIO, *, stage: str | None, poll_s: float) -> None:
        self.kube, self.run, self.out, self.stage, self.poll_s = kube, run, out, stage, poll_s
        self.shared = _Shared()
        self.followed: dict[str, threading.Thread | None] = {}  # by pod uid; None: printed, already ended

    def _over(self) -> tuple[bool | None, bool | None]:
        """(whether the run's ConfigMap exists, :func:`follow_over`); (None, None) when it cannot be read."""
        try:
            record = read_run(self.kube, self.run)
        except KubeApiError as err:
            if err.status != 403:
                raise
            return None, None
        exists = record is not None
        return exists, follow_over(exists, record.recorded if record else None, self.stage)

    def _start(self, pods: list[Obj]) -> None:
        """Follow each pod not followed yet; a pod that has already ended is printed here, with no thread."""
        for pod in pods:
            uid = pod["metadata"].get("uid") or pod["metadata"]["name"]
            if uid in self.followed:
                continue
            follower = PodFollower(self.kube, pod, self.shared, self.poll_s)
            if (pod.get("status") or {}).get("phase") in TERMINAL_POD_PHASES:
                follower.print_lines(_pod_lines(self.kube, pod))
                self.followed[uid] = None
                continue
            thread = threading.Thread(target=follower.run, daemon=True, name=f"logs-{follower.name}")
            thread.start()
            self.followed[uid] = thread

    def _print(self, wait_s: float) -> None:
        """Print queued lines for ``wait_s`` seconds (only those already queued when 0)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                line = self.shared.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return
            print(line, file=self.out, flush=True)

    def follow(self) -> int:
        """Follow until the run is over and every followed pod has ended; 1 when there is no such run."""
        while True:
            exists, over = self._over()  # before listing: every pod created before the run ended is listed
            pods = run_pods(self.kube, self.run, self.stage)
            if exists is False and not pods and not self.followed:
                print(f"no run {self.run} in namespace {self.kube.namespace}, and no pods of it", file=self.out)
                return 1
            self._start(pods)
            if over:
                self.shared.run_over.set()
            ended = not any(t is not None and t.is_alive() for t in self.followed.values())
            # Unknown (ConfigMap unreadable): as kubectl does, end when the pods followed so far have.
            if ended and (over or (over is None and self.followed)):
                self._print(0)
                return 0
            self._print(self.poll_s)
