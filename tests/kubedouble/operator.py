"""What the Kubeflow training operator v1.9 and the Job controller add to the pods they create.

Operator v1.9 gives every Worker pod of a PyTorchJob with a Master an ``init-pytorch`` init container
that waits for the master's DNS name (``alpine``, no securityContext, requests != limits), unless
the operator is configured with another template (``--pytorch-init-container-template-file``).
When admission refuses a pod, the creating controller records a ``FailedCreate`` Warning Event on
its workload and retries later; the workload itself stays as it was.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

import yaml

from .store import Obj, now_rfc3339

INIT_CONTAINER_NAME = "init-pytorch"
MAX_TRIES = 100


def v19_init_container(master_addr: str, image: str = "alpine:3.10") -> Obj:
    """The init container operator v1.9 renders from its built-in template."""
    return {
        "name": INIT_CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "resources": {"limits": {"cpu": "100m", "memory": "20Mi"}, "requests": {"cpu": "50m", "memory": "10Mi"}},
        "command": [
            "sh", "-c",
            f"err=1;for i in $(seq {MAX_TRIES}); do if nslookup {master_addr}; then err=0 && break; fi;"
            "echo waiting for master; sleep 2; done; exit $err",
        ],
    }


def render_template(text: str, master_addr: str, image: str = "alpine:3.10") -> list[Obj]:
    """An operator init-container template file (Go template, a YAML list) filled in like the operator does."""
    for key, value in (("InitContainerImage", image), ("MasterAddr", master_addr), ("MaxTries", str(MAX_TRIES))):
        text = text.replace("{{." + key + "}}", value)
    return list(yaml.safe_load(text))


def with_init_container(spec: Obj, template: str | None, master_addr: str) -> Obj:
    """A Worker pod spec as the operator creates it: the init containers (``template`` or v1.9's) first."""
    out = copy.deepcopy(spec)
    init = render_template(template, master_addr) if template is not None else [v19_init_container(master_addr)]
    out["initContainers"] = [*init, *(out.get("initContainers") or [])]
    return out


def failed_create_event(owner: Obj, message: str) -> Obj:
    """The Warning Event a controller records when the API refuses a pod it creates."""
    meta = owner["metadata"]
    now = now_rfc3339()
    return {
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta["uid"]},
        "reason": "FailedCreate",
        "message": f"Error creating: {message}",
        "type": "Warning",
        "source": {"component": "job-controller" if owner["kind"] == "Job" else "pytorchjob-controller"},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def refused(err: Any) -> bool:
    """Whether a pod create failed the way admission refuses it (403), not for a test bug."""
    return getattr(err, "code", None) == 403
