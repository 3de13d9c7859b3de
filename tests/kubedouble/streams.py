"""Streaming responses of the Kubernetes API test double: watch event streams and followed pod logs.

Both use HTTP/1.1 chunked transfer encoding, as kube-apiserver does, and end when the double stops.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from . import apierrors
from .resources import PODS, ResourceType
from .store import EventType, Obj, Store

Predicate = Callable[[Obj], bool]
# kubelet v1.35 pkg/kubelet/kubelet_pods.go validateContainerLogStatus: the two image-pull reasons it
# words itself (images.ErrImagePull / ErrImagePullBackOff); any other waiting reason is quoted as is.
IMAGE_PULL_WORDS = {"ErrImagePull": "image can't be pulled", "ImagePullBackOff": "trying and failing to pull image"}
DEFAULT_WATCH_TIMEOUT_S = 1800.0
TERMINAL_POD_PHASES = ("Succeeded", "Failed")


class StreamsMixin:
    """Watch and log streaming for :class:`~kubedouble.handler.Handler` (an ``http.server`` handler)."""

    # Provided by the handler class this is mixed into (BaseHTTPRequestHandler and Handler).
    store: Store
    wfile: Any
    send_response: Callable[..., None]
    send_header: Callable[[str, str], None]
    end_headers: Callable[[], None]
    _send_text: Callable[[int, str], None]

    def _start_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _watch(self, rt: ResourceType, ns: str | None, query: dict[str, str], matches: Predicate) -> None:
        """Stream watch events (JSON lines) until ``timeoutSeconds`` or the double stops."""
        timeout = float(query.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT_S)
        deadline = time.monotonic() + timeout
        rv_param = query.get("resourceVersion") or "0"
        initial = query.get("sendInitialEvents") == "true"
        self._start_stream("application/json")
        if rv_param == "0" or initial:
            items, rv = self.store.list(rt, ns, matches)
            for item in items:
                self._event(EventType.ADDED, item)
            if initial:
                self._bookmark(rt, rv)
        else:
            rv = int(rv_param)
        while not self.store.closed and time.monotonic() < deadline:
            seen = self.store.resource_version
            for ev in self.store.events_after(rv, rt, ns):
                rv = ev.rv
                kind = self._visible_type(ev.type, matches(ev.obj), ev.previous is not None and matches(ev.previous))
                if kind is not None:
                    self._event(kind, ev.obj)
            self.store.wait_for_change(seen, timeout=min(1.0, max(0.0, deadline - time.monotonic())))
        self._end_stream()

    @staticmethod
    def _visible_type(kind: EventType, now: bool, before: bool) -> EventType | None:
        """How a change looks through a selector: objects entering it are ADDED, leaving it DELETED."""
        if kind is EventType.MODIFIED:
            if now and before:
                return EventType.MODIFIED
            if now or before:
                return EventType.ADDED if now else EventType.DELETED
            return None
        return kind if now else None

    def _event(self, kind: EventType | str, obj: Obj) -> None:
        self._chunk(json.dumps({"type": str(kind), "object": obj}).encode() + b"\n")

    def _bookmark(self, rt: ResourceType, rv: int) -> None:
        meta = {"resourceVersion": str(rv), "annotations": {"k8s.io/initial-events-end": "true"}}
        self._event("BOOKMARK", {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta})

    def _no_content(self) -> None:
        self.send_response(204)
        self.end_headers()

    def _pod_log(self, namespace: str | None, name: str, query: dict[str, str]) -> None:
        """``pods/log`` as kube-apiserver and the kubelet answer it (see :func:`log_refusal`)."""
        pod = self.store.get(PODS, namespace, name)
        container = self._log_container(pod, query.get("container"))
        if not (pod.get("spec") or {}).get("nodeName") and not (pod.get("status") or {}).get("containerStatuses"):
            # kube-apiserver v1.35 pkg/registry/core/pod/strategy.go LogLocation: a pod with no node yet
            # has "an empty location", which apiserver/pkg/endpoints/handlers/responsewriters/writers.go
            # StreamObject answers 204 No Content (kubectl prints nothing; a follow ends at once). The
            # double assigns no nodes: a pod without container statuses stands for an unscheduled one.
            self._no_content()
            return
        refusal = log_refusal(pod, container)
        if refusal is not None:
            raise apierrors.bad_request(refusal)
        full = self.store.log(namespace or "", name, container)
        text = self._tail(full, query.get("tailLines"))
        if query.get("follow") != "true":
            self._send_text(200, text)
            return
        self._follow(namespace, name, container, text, len(full))

    @staticmethod
    def _tail(text: str, tail: str | None) -> str:
        """The last ``tailLines`` lines (kubectl sends tailLines=10 with -l unless --tail is given)."""
        if tail is None or int(tail) < 0:
            return text
        lines = text.splitlines(keepends=True)
        return "".join(lines[-int(tail) :]) if int(tail) else ""

    def _follow(self, namespace: str | None, name: str, container: str, first: str, sent: int) -> None:
        """Stream the log as it grows until the pod ends or goes (the kubelet ends it when the container exits)."""
        self._start_stream("text/plain")
        self._chunk(first.encode())
        instance = _container_id(self.store.get(PODS, namespace, name), container)
        while not self.store.closed:
            with self.store.cond:
                self.store.cond.wait(timeout=0.2)
            text = self.store.log(namespace or "", name, container)
            self._chunk(text[sent:].encode())
            sent = len(text)
            try:
                pod = self.store.get(PODS, namespace, name)
            except apierrors.StatusError:
                break
            # The kubelet streams one container instance's log file: a restart (new ID) ends the stream.
            if pod.get("status", {}).get("phase") in TERMINAL_POD_PHASES or _container_id(pod, container) != instance:
                break
        self._end_stream()

    @staticmethod
    def _log_container(pod: Obj, wanted: str | None) -> str:
        name = pod["metadata"]["name"]
        containers = [c.get("name", "") for c in pod.get("spec", {}).get("containers", [])]
        if wanted is None:
            default = (pod["metadata"].get("annotations") or {}).get("kubectl.kubernetes.io/default-container")
            if default or len(containers) == 1:
                return default or containers[0]
            raise apierrors.bad_request(
                f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]"
            )
        if wanted not in containers:
            raise apierrors.bad_request(f"container {wanted} is not valid for pod {name}")
        return wanted


def log_refusal(pod: Obj, container: str) -> str | None:
    """The kubelet's refusal to serve ``container``'s log, or None when it has one to serve.

    kubelet v1.35 pkg/kubelet/kubelet_pods.go validateContainerLogStatus, whose error
    pkg/kubelet/server/server.go getContainerLogs writes with status 400; kube-apiserver passes it on
    (apiserver/pkg/registry/generic/rest/response_checker.go: 400 -> BadRequest with the body as message),
    so clients see ``Error from server (BadRequest): container "X" in pod "Y" is waiting to start: ...``.
    """
    name = pod["metadata"]["name"]
    statuses = {s.get("name"): s for s in (pod.get("status") or {}).get("containerStatuses") or []}
    status = statuses.get(container)
    if status is None:
        return f'container "{container}" in pod "{name}" is not available'
    state, last = status.get("state") or {}, status.get("lastState") or {}
    if "running" in state or "terminated" in state or "terminated" in last:
        return None  # a restarting container's previous log is served while it waits
    if "waiting" in state:
        reason = state["waiting"].get("reason", "")
        return f'container "{container}" in pod "{name}" is waiting to start: {IMAGE_PULL_WORDS.get(reason, reason)}'
    return f'container "{container}" in pod "{name}" is waiting to start - no logs yet'


def _container_id(pod: Obj, container: str) -> str | None:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return next((c.get("containerID") for c in statuses if c.get("name") == container), None)
