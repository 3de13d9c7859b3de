"""The ``kubernetes.networkPolicy`` section of the run spec: what a default-deny namespace must let through."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from dynamics.spec.types import Model

Port = Annotated[int, Field(ge=1, le=65535)]
Cidr = Annotated[str, Field(pattern=r"^[0-9a-fA-F.:]+/[0-9]{1,3}$")]


class PeerCidr(Model):
    """Destinations allowed by CIDR (``ipBlock``), on the given ports."""

    cidr: Cidr = Field(description="e.g. 10.0.0.0/8 or 52.216.0.0/15.")
    ports: list[Port] = Field(min_length=1, description="TCP ports.")


class NetworkPolicy(Model):
    """NetworkPolicies the run needs in a namespace whose policies deny by default.

    Rendered per run: every pod may resolve DNS (kube-system kube-dns, UDP/TCP 53) and reach S3 and the
    other HTTPS endpoints (egress); trainer pods of the run reach each other on every port (NCCL,
    rendezvous); the controller (and the helm test Pod) reach the API server."""

    enabled: bool = Field(False, description="Render the run's NetworkPolicies (created with the run, owned "
                          "by its ConfigMap).")
    egress_ports: list[Port] = Field([443, 80], description="TCP ports every pod of the run may reach anywhere "
                                    "(S3, Hugging Face, W&B); add your S3 endpoint's port, e.g. 9000 for MinIO.")
    egress_cidrs: list[PeerCidr] = Field(default_factory=list, description="Instead of egressPorts to "
                                         "anywhere: only these CIDRs and ports (e.g. the S3 VPC endpoint's).")
    api_server_ports: list[Port] = Field([443, 6443], description="TCP ports of the API server as pods reach "
                                        "it after the Service's DNAT (the endpoint's port, often 6443; 443 on "
                                        "EKS and GKE).")
    api_server_cidrs: list[Cidr] = Field(default_factory=list, description="Limit the controller's API egress "
                                        "to these CIDRs: the API server's endpoint IPs (`kubectl get "
                                        "endpointslices -l kubernetes.io/service-name=kubernetes`), not the "
                                        "Service's ClusterIP.")
    dns_namespace: str = Field("kube-system", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63,
                               description="Namespace of the cluster DNS pods.")
    dns_pod_labels: dict[str, str] = Field({"k8s-app": "kube-dns"}, description="Labels of the cluster DNS "
                                           "pods (CoreDNS keeps k8s-app: kube-dns).")
