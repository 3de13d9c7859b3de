"""The Kubernetes resources dynamics uses, and the verbs and deletion policies it names."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Verb(StrEnum):
    """API verbs as RBAC names them."""

    GET = "get"
    LIST = "list"
    CREATE = "create"
    PATCH = "patch"
    DELETE = "delete"


class Propagation(StrEnum):
    """``DeleteOptions.propagationPolicy``."""

    BACKGROUND = "Background"
    FOREGROUND = "Foreground"
    ORPHAN = "Orphan"


@dataclass(frozen=True)
class Resource:
    """A REST resource: where it lives and what kubectl calls it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    subresource: str | None = None

    @property
    def api_version(self) -> str:
        """``v1`` or ``group/version``."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def rbac_resource(self) -> str:
        """``pods`` or ``pods/log``: the resource string in RBAC rules."""
        return f"{self.plural}/{self.subresource}" if self.subresource else self.plural

    @property
    def display(self) -> str:
        """``jobs.batch``: how kubectl names the resource."""
        return f"{self.rbac_resource}.{self.group}" if self.group else self.rbac_resource

    def path(self, namespace: str | None, name: str | None = None) -> str:
        """The URL path of the collection, or of one object (and its subresource)."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
            if self.subresource:
                base += f"/{self.subresource}"
        return base


CONFIG_MAPS = Resource("", "v1", "configmaps", "ConfigMap")
SERVICES = Resource("", "v1", "services", "Service")
PODS = Resource("", "v1", "pods", "Pod")
POD_LOGS = Resource("", "v1", "pods", "Pod", subresource="log")
EVENTS = Resource("", "v1", "events", "Event")
SECRETS = Resource("", "v1", "secrets", "Secret")
NODES = Resource("", "v1", "nodes", "Node", namespaced=False)
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
JOBS = Resource("batch", "v1", "jobs", "Job")
PYTORCHJOBS = Resource("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob")
NETWORK_POLICIES = Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy")
POD_DISRUPTION_BUDGETS = Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")
ACCESS_REVIEWS = Resource(
    "authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", namespaced=False
)
BY_KIND: dict[str, Resource] = {r.kind: r for r in (CONFIG_MAPS, SERVICES, PODS, EVENTS, JOBS, PYTORCHJOBS,
                                                     NETWORK_POLICIES, POD_DISRUPTION_BUDGETS)}
# What a run consists of besides its ConfigMap: listed by label to observe (and count) the run. The
# NetworkPolicies (submission) and the trainers' PodDisruptionBudget (train stage) are run objects too.
RUN_RESOURCES: tuple[Resource, ...] = (JOBS, PYTORCHJOBS, SERVICES, NETWORK_POLICIES, POD_DISRUPTION_BUDGETS)
