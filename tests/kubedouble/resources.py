"""The resource types the Kubernetes API test double serves, and their discovery documents."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CRUD_VERBS: tuple[str, ...] = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)
READ_VERBS: tuple[str, ...] = ("get", "list", "watch")

GROUP_BATCH = "batch"
GROUP_KUBEFLOW = "kubeflow.org"
GROUP_AUTHORIZATION = "authorization.k8s.io"
GROUP_NETWORKING = "networking.k8s.io"
GROUP_POLICY = "policy"


@dataclass(frozen=True)
class ResourceType:
    """One REST resource (``jobs`` in ``batch/v1``), as discovery describes it."""

    group: str
    version: str
    plural: str
    kind: str
    singular: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    verbs: tuple[str, ...] = CRUD_VERBS
    tracks_generation: bool = True
    custom: bool = False

    @property
    def api_version(self) -> str:
        """``v1`` for the core group, ``group/version`` otherwise."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """Name used in Status messages: ``configmaps``, ``jobs.batch``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def has_status(self) -> bool:
        """Whether writes to the main resource ignore ``status`` (a ``status`` subresource exists)."""
        return "status" in self.subresources


CORE: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "configmaps", "ConfigMap", "configmap", short_names=("cm",), tracks_generation=False),
    ResourceType("", "v1", "secrets", "Secret", "secret", tracks_generation=False),
    ResourceType("", "v1", "services", "Service", "service", short_names=("svc",), subresources=("status",)),
    ResourceType("", "v1", "pods", "Pod", "pod", short_names=("po",), subresources=("status", "log")),
    ResourceType("", "v1", "events", "Event", "event", short_names=("ev",), tracks_generation=False),
    ResourceType(
        "",
        "v1",
        "serviceaccounts",
        "ServiceAccount",
        "serviceaccount",
        short_names=("sa",),
        tracks_generation=False,
    ),
    ResourceType(
        "",
        "v1",
        "namespaces",
        "Namespace",
        "namespace",
        namespaced=False,
        short_names=("ns",),
        subresources=("status",),
        tracks_generation=False,
    ),
    ResourceType(
        "",
        "v1",
        "nodes",
        "Node",
        "node",
        namespaced=False,
        short_names=("no",),
        subresources=("status",),
        tracks_generation=False,
    ),
)
CONFIG_MAPS = next(rt for rt in CORE if rt.plural == "configmaps")
SECRETS = next(rt for rt in CORE if rt.plural == "secrets")
EVENTS = next(rt for rt in CORE if rt.plural == "events")
PODS = next(rt for rt in CORE if rt.plural == "pods")
NODES = next(rt for rt in CORE if rt.plural == "nodes")
NAMESPACES = next(rt for rt in CORE if rt.plural == "namespaces")
BATCH: tuple[ResourceType, ...] = (ResourceType(GROUP_BATCH, "v1", "jobs", "Job", "job", subresources=("status",)),)
JOBS = BATCH[0]
KUBEFLOW: tuple[ResourceType, ...] = (
    ResourceType(
        GROUP_KUBEFLOW, "v1", "pytorchjobs", "PyTorchJob", "pytorchjob", subresources=("status",), custom=True
    ),
)
PYTORCHJOBS = KUBEFLOW[0]
# Run objects with no controller behind them in the double: stored and listed only.
NETWORKING: tuple[ResourceType, ...] = (
    ResourceType(GROUP_NETWORKING, "v1", "networkpolicies", "NetworkPolicy", "networkpolicy", short_names=("netpol",)),
)
POLICY: tuple[ResourceType, ...] = (
    ResourceType(GROUP_POLICY, "v1", "poddisruptionbudgets", "PodDisruptionBudget", "poddisruptionbudget",
                 short_names=("pdb",), subresources=("status",)),
)
SELF_SUBJECT_ACCESS_REVIEW = ResourceType(
    GROUP_AUTHORIZATION,
    "v1",
    "selfsubjectaccessreviews",
    "SelfSubjectAccessReview",
    "selfsubjectaccessreview",
    namespaced=False,
    verbs=("create",),
    tracks_generation=False,
)


class Registry:
    """The resource types one double serves; the kubeflow group can be left out."""

    def __init__(self, *, kubeflow: bool = True) -> None:
        self.kubeflow = kubeflow

    def types(self) -> list[ResourceType]:
        """Every stored resource type currently served."""
        return [*CORE, *BATCH, *NETWORKING, *POLICY, *(KUBEFLOW if self.kubeflow else ())]

    def groups(self) -> dict[str, list[ResourceType]]:
        """``group/version`` -> resource types, for the named groups (not the core group)."""
        out: dict[str, list[ResourceType]] = {
            f"{GROUP_BATCH}/v1": list(BATCH),
            f"{GROUP_NETWORKING}/v1": list(NETWORKING),
            f"{GROUP_POLICY}/v1": list(POLICY),
        }
        if self.kubeflow:
            out[f"{GROUP_KUBEFLOW}/v1"] = list(KUBEFLOW)
        out[f"{GROUP_AUTHORIZATION}/v1"] = [SELF_SUBJECT_ACCESS_REVIEW]
        return out

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        """The stored resource type at ``group/version/plural``, if served."""
        for rt in self.types():
            if (rt.group, rt.version, rt.plural) == (group, version, plural):
                return rt
        return None

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        """The resource type of objects with this ``apiVersion`` and ``kind``."""
        for rt in self.types():
            if (rt.api_version, rt.kind) == (api_version, kind):
                return rt
        return None


def _resource_entry(rt: ResourceType) -> list[dict[str, Any]]:
    entry: dict[str, Any] = {
        "name": rt.plural,
        "singularName": rt.singular,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": list(rt.verbs),
    }
    if rt.short_names:
        entry["shortNames"] = list(rt.short_names)
    if rt.custom:
        entry["categories"] = ["all", "kubeflow"]
    subs = []
    for sub in rt.subresources:
        verbs = ["get"] if sub == "log" else ["get", "patch", "update"]
        subs.append(
            {
                "name": f"{rt.plural}/{sub}",
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": "Pod" if sub == "log" else rt.kind,
                "verbs": verbs,
            }
        )
    return [entry, *subs]


def resource_list(group_version: str, types: list[ResourceType]) -> dict[str, Any]:
    """The ``APIResourceList`` served at ``/api/v1`` or ``/apis/<group>/<version>``."""
    resources = [entry for rt in types for entry in _resource_entry(rt)]
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


def api_group(group_version: str) -> dict[str, Any]:
    """The ``APIGroup`` document for one ``group/version``."""
    group, version = group_version.split("/")
    gv = {"groupVersion": group_version, "version": version}
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": [gv], "preferredVersion": gv}


def group_list(registry: Registry) -> dict[str, Any]:
    """The ``APIGroupList`` served at ``/apis``."""
    groups = [{k: v for k, v in api_group(gv).items() if k not in ("kind", "apiVersion")} for gv in registry.groups()]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
