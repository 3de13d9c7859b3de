"""HTTP front end of the Kubernetes API test double (a stand-in for kube-apiserver in tests).

Serves ``/version``, legacy discovery, namespaced CRUD with label/field selectors, ``status`` and
``log`` subresources, watch streams, ``SelfSubjectAccessReview`` and an RBAC-like allow-list that is
enforced on every request. Real clients (the ``kubernetes`` Python package, ``kubectl``) talk to it
over loopback HTTP through a kubeconfig that :meth:`KubeDouble.write_kubeconfig` writes.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterable
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from .admission import Admission
from .cluster import Cluster
from .handler import Handler
from .policy import DEFAULT_USER, Access, Permission, Policy
from .resources import Registry
from .store import Store


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, double: KubeDouble) -> None:
        self.double = double
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Remember the connection (see :meth:`close_connections`), then serve it in a thread."""
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Forget the connection once it is closed."""
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Drop kept-alive client connections, so that a stopped double is really unreachable."""
        with self.connections_lock:
            for conn in list(self.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self.connections.clear()


class KubeDouble:
    """A loopback test double of kube-apiserver. Use as a context manager or call start()/stop()."""

    def __init__(
        self,
        *,
        kubeflow: bool = True,
        token: str | None = None,
        user: str = DEFAULT_USER,
        allow: Iterable[Permission] | None = None,
        gc_delay: float = 0.0,
        namespaces: Iterable[str] = ("default",),
        kubernetes_version: str = "1.35",
    ) -> None:
        self.kubernetes_version = kubernetes_version
        self.registry = Registry(kubeflow=kubeflow)
        self.store = Store(gc_delay=gc_delay, admission=Admission(kubernetes_version))
        self.cluster = Cluster(self.store)
        for namespace in namespaces:
            self.store.ensure_namespace(namespace)
        self.policy = Policy(user=user, token=token, allow=None if allow is None else set(allow))
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---
    def start(self) -> KubeDouble:
        """Listen on a random loopback port in a background thread."""
        self._server = _HTTPServer(self)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="kubedouble", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; open watches and log streams end."""
        self.store.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> KubeDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        if self._server is None:
            raise RuntimeError("KubeDouble is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- configuration a test may change at any time ---
    @property
    def kubeflow(self) -> bool:
        """Whether the kubeflow.org group (the PyTorchJob CRD) is installed."""
        return self.registry.kubeflow

    @kubeflow.setter
    def kubeflow(self, value: bool) -> None:
        self.registry.kubeflow = value

    def allow(self, permissions: Iterable[Permission] | None) -> None:
        """Replace the allow-list (None allows everything)."""
        self.policy.allow = None if permissions is None else set(permissions)

    @property
    def accesses(self) -> list[Access]:
        """Every authorized resource request so far, in order."""
        return list(self.policy.accesses)

    # --- clients ---
    def kubeconfig(self, *, namespace: str = "default", context: str = "kubedouble") -> dict[str, Any]:
        """A kubeconfig document pointing at this double (bearer token if one is required)."""
        user: dict[str, Any] = {"token": self.policy.token} if self.policy.token else {}
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": context, "user": user}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": context, "namespace": namespace}}],
            "current-context": context,
            "preferences": {},
        }

    def write_kubeconfig(self, path: str | Path, *, namespace: str = "default", context: str = "kubedouble") -> Path:
        """Write :meth:`kubeconfig` to ``path`` (for ``KUBECONFIG``), creating ``namespace`` if missing."""
        path = Path(path)
        self.store.ensure_namespace(namespace)
        path.write_text(yaml.safe_dump(self.kubeconfig(namespace=namespace, context=context)))
        return path
