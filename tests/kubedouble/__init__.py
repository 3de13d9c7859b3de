"""A loopback TEST DOUBLE of kube-apiserver for the dynamics test suite (DESIGN.md §4).

No kube-apiserver can run on the development machines, so tests start :class:`KubeDouble` on
127.0.0.1 and point the real ``kubernetes`` Python client and the real ``kubectl`` at it through a
kubeconfig. It is deliberately small: it stores objects and answers the API the way kube-apiserver
does (discovery, CRUD, selectors, status subresources, watch, logs, RBAC-style 403s, owner-reference
garbage collection) but runs no controllers; tests play the cluster through ``double.cluster``.
"""

from .cluster import Cluster
from .policy import Access, Permission
from .server import KubeDouble

__all__ = ["Access", "Cluster", "KubeDouble", "Permission"]
