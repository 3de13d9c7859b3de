"""What kube-apiserver checks before it stores an object, for the Kubernetes API test double.

* **Schema**: built-in kinds against the official OpenAPI schema of the minor the double plays
  (``KubeDouble(kubernetes_version="1.29")``), strict like ``fieldValidation=Strict``: an unknown
  field is a 400 ``strict decoding error``, a missing required field or a wrong value a 422 ``Invalid``.
  Custom resources against their CRD's ``openAPIV3Schema`` (the PyTorchJob CRD read in place).
* **Immutable fields**: a Job's template, selector, completion mode, pod failure policy and
  per-index backoff; an ``immutable: true`` ConfigMap's data (and the flag itself).
* **Pod Security admission**: pods created in a namespace labelled
  ``pod-security.kubernetes.io/enforce: restricted`` must meet the *restricted* standard, else 403 with
  the ``violates PodSecurity "restricted:latest"`` message (workload templates are not checked, as in
  Kubernetes: it is the pod the Job controller or the operator creates that is refused).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jsonschema
import kubernetes_validate

from tests import k8s

from . import apierrors
from .resources import GROUP_BATCH, GROUP_KUBEFLOW, ResourceType

Obj = dict[str, Any]

ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
RESTRICTED = "restricted"
IMMUTABLE_JOB_FIELDS = ("template", "selector", "completionMode", "podFailurePolicy", "backoffLimitPerIndex")
# Volume types the restricted (and baseline) standard allows.
ALLOWED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}


def _path(err: jsonschema.ValidationError) -> str:
    out = ""
    for part in err.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _schema_error(rt: ResourceType, name: str, err: jsonschema.ValidationError) -> apierrors.StatusError:
    """The API server's answer to a schema violation (field paths as kube-apiserver writes them)."""
    where = _path(err)
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        fields = ", ".join(f'unknown field "{where + "." if where else ""}{f}"' for f in extra)
        return apierrors.bad_request(f"strict decoding error: {fields}")
    if err.validator == "required":
        missing = str(err.message).split("'")[1]
        return apierrors.invalid(rt, name, f"{where + '.' if where else ''}{missing}: Required value")
    return apierrors.invalid(rt, name, f"{where}: Invalid value: {err.instance!r}: {err.message}")


@dataclass(frozen=True)
class Admission:
    """Admission checks for one double; ``minor`` is the Kubernetes minor whose schemas apply."""

    minor: str = "1.35"

    def validate(self, rt: ResourceType, obj: Obj) -> None:
        """Schema check of a create or update (status is the server's, so it is not checked)."""
        body = {k: v for k, v in obj.items() if k != "status"}
        name = str((obj.get("metadata") or {}).get("name", ""))
        try:
            if rt.group == GROUP_KUBEFLOW:
                if k8s.CRD_PATH.exists():  # CRD schemas are read in place; absent in some checkouts
                    jsonschema.validate(body, k8s.pytorchjob_schema(), cls=jsonschema.Draft7Validator)
            elif not rt.custom:
                k8s.validate_builtin(body, self.minor)
        except kubernetes_validate.ValidationError as err:
            cause = err.__cause__  # k8s.validate_builtin chains the jsonschema error
            assert isinstance(cause, jsonschema.ValidationError)
            raise _schema_error(rt, name, cause) from err
        except jsonschema.ValidationError as err:
            raise _schema_error(rt, name, err) from err

    def on_update(self, rt: ResourceType, old: Obj, new: Obj) -> None:
        """Reject changes of immutable fields (422 ``field is immutable``), then validate."""
        name = old["metadata"]["name"]
        if (rt.group, rt.plural) == (GROUP_BATCH, "jobs"):
            for field in IMMUTABLE_JOB_FIELDS:
                before, after = old.get("spec", {}).get(field), new.get("spec", {}).get(field)
                if before != after:
                    raise apierrors.invalid(rt, name, f"spec.{field}: Invalid value: {after!r}: field is immutable")
        if rt.plural == "configmaps" and not rt.group and old.get("immutable"):
            for field in ("data", "binaryData", "immutable"):
                if old.get(field) != new.get(field):
                    raise apierrors.invalid(
                        rt, name, f"{field}: Forbidden: field is immutable when `immutable` is set"
                    )
        self.validate(rt, new)

    def pod_security(self, rt: ResourceType, pod: Obj, namespace: Obj | None) -> None:
        """Pod Security admission of a pod create in ``namespace`` (403 when the pod violates it)."""
        labels = ((namespace or {}).get("metadata") or {}).get("labels") or {}
        if rt.plural != "pods" or rt.group or labels.get(ENFORCE_LABEL) != RESTRICTED:
            return
        problems = restricted_violations(pod.get("spec") or {})
        if problems:
            name = pod["metadata"]["name"]
            message = f'pods "{name}" is forbidden: violates PodSecurity "restricted:latest": ' + ", ".join(problems)
            raise apierrors.StatusError(403, apierrors.Reason.FORBIDDEN, message, {"name": name, "kind": "pods"})


def _containers(spec: Obj) -> list[Obj]:
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def _unset(spec: Obj, ctr: Obj, field: str) -> Any:
    """A security field of the container, falling back to the pod's."""
    sc = ctr.get("securityContext") or {}
    return sc[field] if field in sc else (spec.get("securityContext") or {}).get(field)


def _names(ctrs: list[Obj]) -> str:
    quoted = ", ".join(f'"{c["name"]}"' for c in ctrs)
    return f"{'container' if len(ctrs) == 1 else 'containers'} {quoted}"


def restricted_violations(spec: Obj) -> list[str]:
    """The *restricted* Pod Security Standard checks a pod spec fails, in the upstream wording."""
    out = [f"host namespaces ({f}=true)" for f in ("hostNetwork", "hostPID", "hostIPC") if spec.get(f)]
    bad_vols = [v["name"] for v in spec.get("volumes") or [] if not (set(v) - {"name"}) <= ALLOWED_VOLUMES]
    if bad_vols:
        out.append(f"restricted volume types (volumes {', '.join(bad_vols)})")
    ctrs = _containers(spec)
    checks = (
        ("allowPrivilegeEscalation != false", "securityContext.allowPrivilegeEscalation=false",
         lambda c: (c.get("securityContext") or {}).get("allowPrivilegeEscalation") is False),
        ("unrestricted capabilities", 'securityContext.capabilities.drop=["ALL"]',
         lambda c: "ALL" in ((c.get("securityContext") or {}).get("capabilities") or {}).get("drop", [])),
        ("runAsNonRoot != true", "securityContext.runAsNonRoot=true",
         lambda c: _unset(spec, c, "runAsNonRoot") is True),
        ("runAsUser=0", "securityContext.runAsUser to a non-zero value",
         lambda c: _unset(spec, c, "runAsUser") != 0),
        ("seccompProfile", 'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"',
         lambda c: ((_unset(spec, c, "seccompProfile") or {}).get("type")) in ("RuntimeDefault", "Localhost")),
        ("privileged", "securityContext.privileged=false",
         lambda c: not (c.get("securityContext") or {}).get("privileged")),
    )
    for title, fix, ok in checks:
        failing = [c for c in ctrs if not ok(c)]
        if failing:
            out.append(f"{title} ({_names(failing)} must set {fix})")
    return out
