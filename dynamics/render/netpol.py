"""NetworkPolicies of a run, for namespaces whose policies deny by default (``kubernetes.networkPolicy``).

Policies are additive: each one below allows one kind of traffic, and a pod selected by any policy of a
type (Ingress/Egress) gets only what some policy allows. They are submission objects (created with the
run ConfigMap and owned by it, before the controller starts) because the controller itself needs the
API server allowed before it can create anything.

- ``<run>-egress``: every pod of the run resolves DNS (the cluster DNS pods, UDP/TCP 53) and reaches
  S3 and other HTTPS endpoints (Hugging Face, W&B) on ``egressPorts`` (anywhere) or ``egressCidrs``.
- ``<run>-trainers``: trainer pods of the run accept from and send to each other on every port (NCCL
  picks ephemeral ports; c10d rendezvous on 29500). Only this policy selects them for Ingress.
- ``<run>-api``: the controller (and the chart's ``helm test`` Pod) reach the API server. Policies
  match the *endpoint* (after the ``kubernetes`` Service's DNAT): its IPs and port (often 6443), not
  the ClusterIP and 443; some CNIs (Cilium) do not match the API server by ``ipBlock`` at all.
"""

from __future__ import annotations

from dynamics import constants as C
from dynamics.render.pod import Obj, metadata
from dynamics.render.train import trainer_selector
from dynamics.spec.model import RunSpec

API_VERSION = "networking.k8s.io/v1"
DNS_PORT = 53
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set on every namespace since Kubernetes 1.22
COMPONENT_NETWORK = "network"
# Pods that talk to the API server: the controller, and the chart's `helm test` Pod (component "test").
API_CLIENT_COMPONENTS = (C.COMPONENT_CONTROLLER, "test")
# Each policy's name suffix -> (the traffic directions it opens, what for): `dynamics doctor` names the
# ones a default-deny namespace makes necessary.
POLICIES: dict[str, tuple[frozenset[str], str]] = {
    "egress": (frozenset({"Egress"}), "DNS and S3 from every pod"),
    "trainers": (frozenset({"Ingress", "Egress"}), "NCCL and rendezvous between trainer pods"),
    "api": (frozenset({"Egress"}), "the controller to the API server"),
}


def _policy(spec: RunSpec, suffix: str, selector: Obj, types: list[str], rules: Obj) -> Obj:
    return {
        "apiVersion": API_VERSION,
        "kind": "NetworkPolicy",
        "metadata": metadata(spec, f"{spec.name}-{suffix}", COMPONENT_NETWORK),
        "spec": {"podSelector": selector, "policyTypes": types, **rules},
    }


def _tcp(ports: list[int]) -> list[Obj]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def _egress_rules(spec: RunSpec) -> list[Obj]:
    np = spec.kubernetes.network_policy
    dns = {"to": [{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: np.dns_namespace}},
                   "podSelector": {"matchLabels": dict(np.dns_pod_labels)}}],
           "ports": [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}]}
    if np.egress_cidrs:
        external = [{"to": [{"ipBlock": {"cidr": c.cidr}}], "ports": _tcp(c.ports)} for c in np.egress_cidrs]
    else:  # no `to`: any destination, in or out of the cluster (an in-cluster MinIO too)
        external = [{"ports": _tcp(np.egress_ports)}]
    return [dns, *external]


def network_policies(spec: RunSpec) -> list[Obj]:
    """The run's NetworkPolicies; none unless ``kubernetes.networkPolicy.enabled``."""
    np = spec.kubernetes.network_policy
    if not np.enabled:
        return []
    run = {"matchLabels": {C.LABEL_RUN: spec.name}}
    trainers = {"matchLabels": trainer_selector(spec)}
    api_clients = {"matchLabels": {C.LABEL_RUN: spec.name},
                   "matchExpressions": [{"key": C.LABEL_COMPONENT, "operator": "In",
                                         "values": list(API_CLIENT_COMPONENTS)}]}
    api_rule: Obj = {"ports": _tcp(np.api_server_ports)}
    if np.api_server_cidrs:
        api_rule = {"to": [{"ipBlock": {"cidr": c}} for c in np.api_server_cidrs], **api_rule}
    peers = [{"podSelector": trainers}]
    return [
        _policy(spec, "egress", run, ["Egress"], {"egress": _egress_rules(spec)}),
        _policy(spec, "trainers", trainers, ["Ingress", "Egress"],
                {"ingress": [{"from": peers}], "egress": [{"to": peers}]}),
        _policy(spec, "api", api_clients, ["Egress"], {"egress": [api_rule]}),
    ]
