"""What the Kubeflow training operator v1.9 and the Job controller add to the pods they create.

Operator v1.9 gives every Worker pod of a PyTorchJob with a Master an ``init-pytorch`` init container
that waits for the master's DNS name (``alpine``, no securityContext, requests != limits), unless
the operator is configured with another template (``--pytorch-init-container-template-file``).
When admission refuses a pod, the creating controller records a Warning Event on its workload
(``FailedCreate`` from the Job controller, ``FailedCreatePod`` from the operator: see ``events.py``)
and retries later; the workload itself stays as it was.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from .store import Obj

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


def refused(err: Any) -> bool:
    """Whether a pod create failed the way admission refuses it (403), not for a test bug."""
    return getattr(err, "code", None) == 403
